"""The dataset's manifest: one row per frame that was sampled, with its source, measures, how its
video was decoded, its detections and what became of it (kept, duplicate of which frame, or
filtered and why). JSON Lines, or Parquet with ``export.manifest: parquet``. ``repair`` rebuilds
a registry from it, the gallery draws it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..records import Detection, FrameRow, MediaInfo, detections_from_json, detections_json
from .files import check_target, iter_lines, read_bytes, writing

#: Beside the manifest: the settings hash the dataset was mined with (what ``repair`` restores).
PROVENANCE = "video-miner.json"
#: The embeddings of the frames the detector saw (``{"frame", "embedding"}`` lines, base64), so a
#: registry rebuilt from the dataset (``repair``) compares frames by content as the lost one did.
EMBEDDINGS = "embeddings.jsonl"
JSONL, PARQUET = "manifest.jsonl", "manifest.parquet"
MEDIA_FIELDS = tuple(f.name for f in fields(MediaInfo))


@dataclass(frozen=True)
class ManifestRecord:
    frame: str
    video_id: str
    source: str
    source_meta: dict[str, Any]
    timestamp: float
    frame_index: int
    #: Where the kept frame's image is in the dataset (None for the others).
    image: str | None
    phash: int
    blur: float
    sharpness: float
    media: MediaInfo
    #: Only kept frames': a duplicate's detection may have been skipped.
    detections: list[Detection]
    decision: str
    duplicate_of: str | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame, "video_id": self.video_id, "source": self.source, "source_meta": self.source_meta,
            "timestamp": self.timestamp, "frame_index": self.frame_index, "image": self.image,
            "phash": f"{self.phash:016x}", "blur": self.blur, "sharpness": self.sharpness,
            # How the source was decoded and shown (the same for all of a video's frames).
            **self.media.manifest_fields(),
            "detections": detections_json(self.detections), "decision": self.decision,
            "duplicate_of": self.duplicate_of, "reason": self.reason, **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestRecord:
        known = {f.name for f in fields(cls)} | set(MEDIA_FIELDS)
        return cls(
            frame=str(data["frame"]), video_id=str(data["video_id"]), source=str(data["source"]),
            source_meta=dict(data.get("source_meta") or {}), timestamp=float(data["timestamp"]),
            frame_index=int(data["frame_index"]), image=data.get("image"), phash=int(data["phash"], 16),
            blur=float(data["blur"]), sharpness=float(data.get("sharpness") or 0.0),
            media=MediaInfo.from_json({k: data.get(k) for k in MEDIA_FIELDS if data.get(k) is not None}),
            detections=detections_from_json(data.get("detections")), decision=str(data["decision"]),
            duplicate_of=data.get("duplicate_of"), reason=data.get("reason"),
            extra={k: v for k, v in data.items() if k not in known})


#: Longest manifest line read back: a frame with Ultralytics' most boxes (300), each with OCR text.
MAX_MANIFEST_LINE = 4 << 20
#: A Parquet manifest larger than this is not one video-miner wrote (10M frames take far less).
MAX_PARQUET_BYTES = 16 << 30


def write_manifest(folder: Path, records: list[ManifestRecord], fmt: str) -> None:
    """Into ``folder`` (the export's staging folder, the root of these writes)."""
    rows = [r.as_json() for r in records]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            row["source_meta"] = json.dumps(row["source_meta"])
            row["detections"] = json.dumps(row["detections"])
        # Every row's keys: pyarrow takes the columns from the first row alone, and would drop
        # what only later rows say (a duplicate's similarity, a frame's shot).
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with writing(folder / PARQUET, folder, binary=True) as fh:
            pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows]), fh)
    else:
        with writing(folder / JSONL, folder) as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


def read_manifest(dataset: Path) -> list[ManifestRecord]:
    """A dataset's manifest rows (jsonl or parquet)."""
    jsonl, parquet = dataset / JSONL, dataset / PARQUET
    if check_target(jsonl):
        return [ManifestRecord.from_json(json.loads(line)) for line in iter_lines(jsonl, MAX_MANIFEST_LINE)
                if line.strip()]
    if check_target(parquet):
        import io

        import pyarrow.parquet as pq

        # a column some rows do not have reads as None there: not a value of theirs
        table = pq.read_table(io.BytesIO(read_bytes(parquet, MAX_PARQUET_BYTES)))
        rows: list[dict[str, Any]] = [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
        for r in rows:
            r["detections"] = json.loads(r.get("detections") or "[]")
            r["source_meta"] = json.loads(r.get("source_meta") or "{}")
        return [ManifestRecord.from_json(r) for r in rows]
    return []


def write_embeddings(dataset: Path, rows: Iterable[FrameRow]) -> None:
    with writing(dataset / EMBEDDINGS, dataset) as fh:
        for row in rows:
            if row.embedding:
                fh.write(json.dumps({"frame": row.key, "embedding": base64.b64encode(row.embedding).decode()}) + "\n")


#: Longest line read back: 300 boxes (Ultralytics' most per image) of 384 float16s, in base64, with room.
MAX_EMBEDDING_LINE = 1 << 20


def read_embeddings(dataset: Path) -> dict[str, bytes]:
    """Frame key -> embedding; unreadable or overlong lines are skipped (the file is anyone's to edit:
    the dedup checks each embedding against its frame's boxes)."""
    path = dataset / EMBEDDINGS
    out: dict[str, bytes] = {}
    if not check_target(path):
        return out
    for line in iter_lines(path, MAX_EMBEDDING_LINE):
        try:
            item = json.loads(line)
            out[str(item["frame"])] = base64.b64decode(item["embedding"], validate=True)
        except (ValueError, KeyError, TypeError):
            continue
    return out
