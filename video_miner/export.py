"""Stage 5: labels and export. Builds the whole dataset from the registry's done videos into a
staging folder and swaps it in, so the dataset and manifest only ever hold finished videos."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from .config import MinerConfig
from .context import priority_key
from .dedup import KEPT, NO, UNKNOWN, YES, select_distinct
from .fsutil import atomic_write_json, link_or_copy, replace_dir
from .registry import Decision, FrameRow, Registry

ELIGIBILITY = {Decision.CANDIDATE: YES, Decision.NEGATIVE: NO, Decision.DEFERRED: UNKNOWN}
#: What the manifest says of how each frame's source was decoded and shown.
MEDIA_FIELDS = ("track", "codec", "pixel_format", "decoded_size", "display_size", "sample_aspect_ratio", "rotation",
                "mirrored", "hdr", "bpp")

Labeller = Callable[[list[Path]], list[list[dict[str, Any]]]]
#: Beside the manifest: the settings hash the dataset was mined with (what ``repair`` restores).
PROVENANCE = "video-miner.json"


@dataclass
class ExportSummary:
    frames: int
    kept: int
    duplicates: int
    filtered: int
    #: Deferred frames the export had to detect (no kept frame covered them).
    detected_at_export: int


def frame_key(row: FrameRow) -> str:
    return f"{row.video_id}@{row.timestamp:.3f}"


def _split(video_id: str, val_fraction: float) -> str:
    """By video, so near-identical neighbouring frames never straddle train and val."""
    bucket = int(hashlib.sha256(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def build_dataset(registry: Registry, config: MinerConfig, output: Path, labeller: Labeller | None = None,
                  detect: Labeller | None = None, detect_batch: int = 8) -> ExportSummary:
    """``detect`` runs the filter's detector on frames whose detection was deferred and that no
    kept frame covers (see :func:`video_miner.dedup.select_distinct`), ``detect_batch`` at a time;
    answers go to the registry."""
    rows = registry.done_frames()
    videos = {v["video_id"]: v for v in registry.videos()}
    # Every frame the prefilters passed takes part: a near-duplicate of a kept frame is reported as
    # its duplicate whether or not the detector saw it, so the manifest never depends on which
    # detections were skipped.
    pool = [r for r in rows if r.decision != Decision.FILTERED]
    order = {vid: v["ord"] for vid, v in videos.items()}
    priority = sorted(range(len(pool)), key=lambda i: priority_key(pool[i].pixels, pool[i].bpp, pool[i].sharpness,
                                                                   order[pool[i].video_id], pool[i].video_id,
                                                                   pool[i].timestamp))
    eligible = np.array([ELIGIBILITY[Decision(r.decision)] for r in pool], dtype=np.int8)
    hashes = np.array([r.phash for r in pool], dtype=np.uint64)

    detected: list[int] = []

    def resolve(nodes: list[int]) -> list[bool]:
        detected.extend(nodes)
        if detect is None:
            raise RuntimeError("frames with deferred detections need a detector to export")
        found = detect([output / pool[i].file for i in nodes])
        for i, dets in zip(nodes, found, strict=True):
            pool[i] = replace(pool[i], detections=dets, decision=Decision.CANDIDATE if dets else Decision.NEGATIVE,
                              reason=None if dets else config.filter.no_class_reason())
        registry.update_frames([pool[i] for i in nodes])
        return [bool(d) for d in found]

    threshold = config.dedup.threshold if config.dedup.enabled else -1
    dup_of = select_distinct(hashes, np.array(priority, dtype=np.int64), threshold, eligible, resolve,
                             batch=detect_batch)
    kept = [pool[i] for i in np.flatnonzero(dup_of == KEPT).tolist()]
    duplicate_of = {frame_key(pool[i]): frame_key(pool[d]) for i, d in enumerate(dup_of.tolist()) if d >= 0}
    reasons = {frame_key(r): r.reason for r in pool}

    detections = {frame_key(r): r.detections for r in kept}
    if labeller is not None and kept:
        for r, dets in zip(kept, labeller([output / r.file for r in kept]), strict=True):
            detections[frame_key(r)] = dets

    staging = output / "dataset.staging"
    shutil.rmtree(staging, ignore_errors=True)
    splits: dict[str, list[FrameRow]] = {"train": [], "val": []}
    for r in kept:
        splits[_split(r.video_id, config.export.val_fraction)].append(r)
    if not splits["val"] or not splits["train"]:
        # Too few videos to hold some out: Ultralytics still needs a val set, so it reuses train.
        splits = {"train": kept, "val": []}
    try:
        image_paths = _write_yolo(staging, output, splits, detections, config)
        if "coco" in config.export.formats:
            _write_coco(staging, splits, detections, config.filter.classes, image_paths)
        _write_manifest(staging, rows, videos, duplicate_of, image_paths, detections, reasons, config.export.manifest)
        atomic_write_json(staging / PROVENANCE, {"config_hash": config.result_hash(), "classes": config.filter.classes})
        replace_dir(staging, output / "dataset")
    except BaseException:
        # Disk full, a kill: the previous dataset stays as it was.
        shutil.rmtree(staging, ignore_errors=True)
        raise

    per_video: dict[str, tuple[int, int]] = {}
    kept_count = Counter(r.video_id for r in kept)
    dup_count = Counter(key.rsplit("@", 1)[0] for key in duplicate_of)
    for vid in {r.video_id for r in rows} | set(videos):
        per_video[vid] = (kept_count[vid], dup_count[vid])
    registry.set_dedup_counts(per_video)
    return ExportSummary(
        frames=len(rows), kept=len(kept), duplicates=len(duplicate_of), filtered=len(rows) - len(kept) - len(duplicate_of),
        detected_at_export=len(detected),
    )


def _write_yolo(staging: Path, output: Path, splits: dict[str, list[FrameRow]], detections: dict[str, list[dict[str, Any]]],
                config: MinerConfig) -> dict[str, str]:
    """Images (hard links) and labels per split, and data.yaml; returns each kept frame's image path."""
    image_paths: dict[str, str] = {}
    for split, members in splits.items():
        (staging / "images" / split).mkdir(parents=True, exist_ok=True)
        (staging / "labels" / split).mkdir(parents=True, exist_ok=True)
        for r in members:
            name = Path(r.file).name
            link_or_copy(output / r.file, staging / "images" / split / name)
            lines = [f"{d['class_index']} " + " ".join(f"{v:.6f}" for v in d["xywhn"]) for d in detections[frame_key(r)]]
            (staging / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            image_paths[frame_key(r)] = f"images/{split}/{name}"
    data = {
        "train": "images/train",
        "val": "images/val" if splits["val"] else "images/train",
        "nc": len(config.filter.classes),
        "names": dict(enumerate(config.filter.classes)),
    }
    (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return image_paths


def _write_coco(staging: Path, splits: dict[str, list[FrameRow]], detections: dict[str, list[dict[str, Any]]],
                classes: list[str], image_paths: dict[str, str]) -> None:
    (staging / "annotations").mkdir(exist_ok=True)
    for split, members in splits.items():
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, r in enumerate(members, start=1):
            path = image_paths[frame_key(r)]
            with Image.open(staging / path) as im:
                w, h = im.size
            images.append({"id": image_id, "file_name": path, "width": w, "height": h})
            for d in detections[frame_key(r)]:
                xc, yc, bw, bh = d["xywhn"]
                box = [round((xc - bw / 2) * w, 2), round((yc - bh / 2) * h, 2), round(bw * w, 2), round(bh * h, 2)]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": d["class_index"] + 1,
                                    "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0, "score": d["conf"]})
        coco = {"images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
        (staging / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def _write_manifest(staging: Path, rows: list[FrameRow], videos: dict[str, dict[str, Any]], duplicate_of: dict[str, str],
                    image_paths: dict[str, str], detections: dict[str, list[dict[str, Any]]], reasons: dict[str, str | None],
                    fmt: str) -> None:
    records = []
    media = {vid: {k: m.get(k) for k in MEDIA_FIELDS} for vid, v in videos.items()
             for m in [json.loads(v["media_json"]) if v.get("media_json") else {}]}
    for r in rows:
        key = frame_key(r)
        video = videos[r.video_id]
        if key in image_paths:
            decision, reason = "kept", None
        elif key in duplicate_of:
            decision, reason = "duplicate", f"duplicate of {duplicate_of[key]}"
        else:
            decision, reason = "filtered", reasons.get(key, r.reason)
        records.append({
            "frame": key,
            "video_id": r.video_id,
            "source": video["input"],
            "source_meta": json.loads(video["source_json"]) if video["source_json"] else {},
            "timestamp": r.timestamp,
            "frame_index": r.frame_index,
            "image": image_paths.get(key),
            "phash": f"{r.phash:016x}",
            "blur": r.blur,
            "sharpness": r.sharpness,
            # How the source was decoded and shown (the same for all of a video's frames).
            **media.get(r.video_id, {}),
            # Only kept frames: a duplicate's detection may have been skipped.
            "detections": detections.get(key, []),
            "decision": decision,
            "duplicate_of": duplicate_of.get(key),
            "reason": reason,
        })
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for rec in records:
            rec["source_meta"] = json.dumps(rec["source_meta"])
            rec["detections"] = json.dumps(rec["detections"])
        pq.write_table(pa.Table.from_pylist(records), staging / "manifest.parquet")
    else:
        with (staging / "manifest.jsonl").open("w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")


def read_manifest(dataset: Path) -> list[dict[str, Any]]:
    """A dataset's manifest rows (jsonl or parquet), detections and source_meta as objects."""
    jsonl, parquet = dataset / "manifest.jsonl", dataset / "manifest.parquet"
    if jsonl.exists():
        return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    if parquet.exists():
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(parquet).to_pylist()
        for r in rows:
            r["detections"] = json.loads(r["detections"] or "[]")
            r["source_meta"] = json.loads(r["source_meta"] or "{}")
        return rows
    return []
