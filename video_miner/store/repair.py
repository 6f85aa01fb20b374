"""``video-miner repair``: rebuild a damaged (or lost) registry from what is on disk.

The damaged file is moved aside, never deleted. A video is done again only where the files prove
it: its frames in the dataset's manifest (every extracted frame has a row there, with its measures
and decision). A video with a committed extraction or filter result (``frames.json``,
``filter.json``) or a finished download resumes from that state; anything else is unfinished and
runs again. The next run of the same command then exports the same dataset as before the damage:
the kept frames are candidates again, their duplicates are covered by them whatever they showed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..records import Decision, FrameRow, State, VideoUpdate
from .files import is_inside, read_json
from .layout import INDEX, RESULT, OutputLayout, frame_name
from .manifest import PROVENANCE, ManifestRecord, read_embeddings, read_manifest
from .naming import is_safe_name
from .registry import Registry

#: Relative input order of the restored videos (the next run's inputs set the real one again).
ORDER_STEP = 1_000_000


@dataclass
class RepairReport:
    moved_to: Path | None
    done: int = 0
    resumable: dict[str, int] = field(default_factory=dict)
    config_hash: str | None = None
    #: Rows of the manifest (or folders of work/) left out because they lead out of the output folder.
    refused: list[str] = field(default_factory=list)


def _kind(source: str) -> str:
    if source.startswith(("http://", "https://")):
        return "url"
    return "remote" if "://" in source and not source.startswith("file://") else "local"


def _decision(row: ManifestRecord, candidate_file: bool) -> Decision:
    if row.decision == "kept":
        return Decision.CANDIDATE
    if row.decision == "duplicate":
        # Covered by a kept frame whatever it showed; deferred if its file is still there to detect.
        return Decision.DEFERRED if candidate_file else Decision.NEGATIVE
    if row.decision == "left_out":  # it showed the classes: a larger budget or cap may keep it
        return Decision.CANDIDATE if candidate_file else Decision.NEGATIVE
    reason = row.reason or ""
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
        done = _restore_done(registry, output, _trusted(output, read_manifest(dataset), report.refused),
                             read_embeddings(dataset))
        report.done = len(done)
        report.resumable = _restore_unfinished(registry, output, done, report.refused)
    finally:
        registry.close()
    return report


def _trusted(output: Path, rows: list[ManifestRecord], refused: list[str]) -> list[ManifestRecord]:
    """The manifest's rows whose video id is a name of ours and whose image lies in the dataset: a
    manifest is a file anyone could have edited, and these name what repair links and reads."""
    images = (output / "dataset" / "images").resolve()
    kept = []
    for k, row in enumerate(rows, start=1):
        if not is_safe_name(row.video_id):
            refused.append(f"manifest row {k} ({row.frame}): video id {row.video_id!r} is not a name video-miner gives")
        elif row.image is not None and not is_inside(output / "dataset" / row.image, images):
            refused.append(f"manifest row {k} ({row.frame}): its image {row.image!r} leads out of the dataset")
        else:
            kept.append(row)
    return kept


def _restore_done(registry: Registry, output: Path, rows: list[ManifestRecord], embeddings: dict[str, bytes]
                  ) -> set[str]:
    by_video: dict[str, list[ManifestRecord]] = {}
    for r in rows:  # the manifest lists videos in their input order
        by_video.setdefault(r.video_id, []).append(r)
    layout = OutputLayout(output)
    for k, (video_id, frames) in enumerate(by_video.items()):
        first = frames[0]
        registry.upsert_video(video_id, input=first.source, normalized=first.source, kind=_kind(first.source),
                              order=k * ORDER_STEP)
        registry.update(video_id, VideoUpdate(State.FILTERED, source_meta=first.source_meta, media=first.media,
                                              n_extracted=len(frames)))
        registry.complete_video(video_id, [_restored_frame(layout, video_id, r, embeddings.get(r.frame))
                                           for r in frames])
    return set(by_video)


def _restored_frame(layout: OutputLayout, video_id: str, r: ManifestRecord, embedding: bytes | None) -> FrameRow:
    name = Path(r.image).name if r.image else frame_name(video_id, r.timestamp)
    candidate = layout.candidates_dir / video_id / name
    decision = _decision(r, candidate.exists())
    if candidate.exists():
        file = layout.relative(candidate)
    elif r.image:
        file = f"dataset/{r.image}"
    else:
        file = name
    width, height = r.media.display_size or [0, 0]
    shot = r.extra.get("shot")
    return FrameRow(video_id, r.frame_index, r.timestamp, file, r.phash, r.blur,
                    r.detections if decision == Decision.CANDIDATE else [], decision,
                    None if decision in (Decision.CANDIDATE, Decision.DEFERRED) else r.reason,
                    width * height, r.media.bpp or 0.0, r.sharpness,
                    embedding=embedding if decision == Decision.CANDIDATE else None,
                    shot=shot if isinstance(shot, int) and not isinstance(shot, bool) and shot >= 0 else None)


def _restore_unfinished(registry: Registry, output: Path, done: set[str], refused: list[str]) -> dict[str, int]:
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
            if video_dir.is_symlink() or not is_safe_name(video_id):
                refused.append(f"{video_dir}: not a folder video-miner made (a link, or an odd name): left alone")
                continue
            found = state
            path = None
            if state is None:
                found = State.FILTERED if (video_dir / RESULT).exists() else State.EXTRACTED if (video_dir / INDEX).exists() \
                    else None
            else:
                whole = [p for p in video_dir.iterdir()
                         if p.is_file() and not p.is_symlink() and not p.name.endswith(".part")]
                path = str(whole[0]) if whole else None
                found = State.DOWNLOADED if path else None
            if found is None:
                continue
            seen.add(video_id)
            # The input is unknown until the next run names it again (its id is the same).
            registry.upsert_video(video_id, input=video_id, normalized=video_id, kind="local", order=10**12)
            registry.update(video_id, VideoUpdate(found, path=path))
            counts[found.value] = counts.get(found.value, 0) + 1
    return counts
