"""``video-miner repair``: rebuild a damaged (or lost) registry from what is on disk.

The damaged file is moved aside, never deleted. A video is done again only where the files prove
it: its frames in the dataset's manifest (every extracted frame has a row there, with its measures
and decision). A video with a committed extraction or filter result (``frames.json``,
``filter.json``) or a finished download resumes from that state; anything else is unfinished and
runs again. The next run of the same command then exports the same dataset as before the damage:
the kept frames are candidates again, their duplicates are covered by them whatever they showed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .export import MEDIA_FIELDS, PROVENANCE, read_manifest
from .fsutil import read_json
from .inputs import ORDER_STRIDE
from .registry import Decision, FrameRow, Registry, State
from .stages.extract import INDEX
from .stages.filter import RESULT


@dataclass
class RepairReport:
    moved_to: Path | None
    done: int = 0
    resumable: dict[str, int] = field(default_factory=dict)
    config_hash: str | None = None


def _kind(source: str) -> str:
    if source.startswith(("http://", "https://")):
        return "url"
    return "remote" if "://" in source and not source.startswith("file://") else "local"


def _decision(row: dict[str, Any], candidate_file: bool) -> str:
    if row["decision"] == "kept":
        return Decision.CANDIDATE
    if row["decision"] == "duplicate":
        # Covered by a kept frame whatever it showed; deferred if its file is still there to detect.
        return Decision.DEFERRED if candidate_file else Decision.NEGATIVE
    reason = row.get("reason") or ""
    return Decision.NEGATIVE if reason.startswith("no ") and " above conf " in reason else Decision.FILTERED


def _move_aside(db: Path) -> Path | None:
    if not db.exists():
        return None
    aside = db.parent / f"registry.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for suffix in ("", "-wal", "-shm"):
        part = db.with_name(db.name + suffix)
        if part.exists():
            os.replace(part, aside / part.name)
    return aside


def repair(output: Path) -> RepairReport:
    """Rebuild ``output``'s registry (the caller holds the output lock)."""
    db = output / "registry.sqlite"
    report = RepairReport(_move_aside(db))
    dataset = output / "dataset"
    registry = Registry(db)
    try:
        provenance = dataset / PROVENANCE
        if provenance.exists():
            report.config_hash = read_json(provenance).get("config_hash")
            if report.config_hash:
                registry.set_meta("config_hash", report.config_hash)
        done = _restore_done(registry, output, read_manifest(dataset))
        report.done = len(done)
        report.resumable = _restore_unfinished(registry, output, done)
    finally:
        registry.close()
    return report


def _restore_done(registry: Registry, output: Path, rows: list[dict[str, Any]]) -> set[str]:
    by_video: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # the manifest lists videos in their input order
        by_video.setdefault(r["video_id"], []).append(r)
    for k, (video_id, frames) in enumerate(by_video.items()):
        first = frames[0]
        # Relative input order is what breaks ties; the next run's inputs set the real one again.
        registry.upsert_video(video_id, input=first["source"], normalized=first["source"], kind=_kind(first["source"]),
                              order=k * ORDER_STRIDE)
        media = {f: first.get(f) for f in MEDIA_FIELDS if first.get(f) is not None}
        registry.set_state(video_id, State.FILTERED, source_json=json.dumps(first.get("source_meta") or {}),
                           media_json=json.dumps(media), n_extracted=len(frames))
        candidates = output / "work" / "candidates" / video_id
        restored = []
        for r in frames:
            name = Path(r["image"]).name if r.get("image") else f"{video_id}_{round(r['timestamp'] * 1000):09d}ms.jpg"
            candidate = candidates / name
            decision = _decision(r, candidate.exists())
            if candidate.exists():
                file = candidate.relative_to(output).as_posix()
            elif r.get("image"):
                file = f"dataset/{r['image']}"
            else:
                file = name
            size = r.get("display_size") or [0, 0]
            restored.append(FrameRow(video_id, r["frame_index"], r["timestamp"], file, int(r["phash"], 16), r["blur"],
                                     r["detections"] if decision == Decision.CANDIDATE else [], decision,
                                     None if decision in (Decision.CANDIDATE, Decision.DEFERRED) else r.get("reason"),
                                     size[0] * size[1], r.get("bpp") or 0.0, r.get("sharpness") or 0.0))
        registry.complete_video(video_id, restored)
    return set(by_video)


def _restore_unfinished(registry: Registry, output: Path, done: set[str]) -> dict[str, int]:
    """Videos with work on disk but not in the manifest: resume from their last committed state."""
    counts: dict[str, int] = {}
    work = output / "work"
    seen: set[str] = set()
    for folder, state in ((work / "frames", None), (work / "videos", State.DOWNLOADED)):
        if not folder.is_dir():
            continue
        for video_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            video_id = video_dir.name
            if video_id in done or video_id in seen:
                continue
            found = state
            path = None
            if state is None:
                found = State.FILTERED if (video_dir / RESULT).exists() else State.EXTRACTED if (video_dir / INDEX).exists() \
                    else None
            else:
                whole = [p for p in video_dir.iterdir() if p.is_file() and not p.name.endswith(".part")]
                path = str(whole[0]) if whole else None
                found = State.DOWNLOADED if path else None
            if found is None:
                continue
            seen.add(video_id)
            # The input is unknown until the next run names it again (its id is the same).
            registry.upsert_video(video_id, input=video_id, normalized=video_id, kind="local", order=10**12)
            registry.set_state(video_id, found, path=path)
            counts[found.value] = counts.get(found.value, 0) + 1
    return counts
