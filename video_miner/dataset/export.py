"""The export: the whole dataset built from the registry's done videos into a staging folder and
swapped in, so the dataset and manifest only ever hold finished videos."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import MinerConfig
from ..errors import UnsafePath
from ..records import Detection, FrameRow, VideoRow
from ..redact import Redactor
from ..store.files import make_dirs, read_json, remove_tree, replace_dir, write_json
from ..store.manifest import PROVENANCE, ManifestRecord, write_embeddings, write_manifest
from ..store.registry import Registry
from .select import Labeller, Selection, select_frames
from .writers import Labels, Splits, write_coco, write_yolo

log = logging.getLogger(__name__)
#: The budget's picks, in order, so a rerun keeps them (``dataset/selection.json``).
SELECTION = "selection.json"
#: A selection file larger than this (10M picks) is not one this program wrote.
MAX_SELECTION_BYTES = 1 << 29


@dataclass
class ExportSummary:
    frames: int
    kept: int
    duplicates: int
    filtered: int
    #: Deferred frames the export had to detect (no kept frame covered them).
    detected_at_export: int
    #: Of the duplicates, those found by content rather than pHash.
    same_content: int = 0
    #: Frames dedup kept that the budget left out (counted in ``filtered``).
    over_budget: int = 0
    #: Frames dedup kept past ``extract.per_shot`` in their shot (counted in ``filtered``).
    over_shot: int = 0


def split_of(video_id: str, val_fraction: float) -> str:
    """By video, so near-identical neighbouring frames never straddle train and val."""
    bucket = int(hashlib.sha256(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def _splits(kept: list[FrameRow], val_fraction: float) -> Splits:
    splits: Splits = {"train": [], "val": []}
    for r in kept:
        splits[split_of(r.video_id, val_fraction)].append(r)
    if not splits["val"] or not splits["train"]:
        # Too few videos to hold some out: Ultralytics still needs a val set, so it reuses train.
        splits = {"train": kept, "val": []}
    return splits


def build_dataset(registry: Registry, config: MinerConfig, output: Path, labeller: Labeller | None = None,
                  detect: Labeller | None = None, detect_batch: int = 8) -> ExportSummary:
    """The dataset from everything done so far. ``labeller``: a second model that labels the kept
    frames; ``detect``: the filter's detector, for the deferred frames the dedup still needs."""
    rows = [r for r in registry.done_frames() if _stays_inside(r)]
    videos = {v.video_id: v for v in registry.videos()}
    chosen = select_frames(registry, rows, {vid: v.order for vid, v in videos.items()}, config, output, detect,
                           detect_batch, earlier_picks(output / "dataset"))
    labels: Labels = {r.key: r.detections for r in chosen.kept}
    if labeller is not None and chosen.kept:
        for r, dets in zip(chosen.kept, labeller([output / r.file for r in chosen.kept]), strict=True):
            labels[r.key] = dets
    staging = output / "dataset.staging"
    remove_tree(staging)
    make_dirs(staging, output)
    splits = _splits(chosen.kept, config.export.val_fraction)
    try:
        image_paths = write_yolo(staging, output, splits, labels, config.dataset_classes)
        if "coco" in config.export.formats:
            write_coco(staging, splits, labels, config.dataset_classes, image_paths)
        redactor = Redactor.with_extra(config.secret_params)
        write_manifest(staging, _manifest(rows, videos, chosen, image_paths, labels, redactor, config.extract.per_shot),
                   config.export.manifest)
        write_json(staging / PROVENANCE, {"config_hash": config.result_hash(), "classes": config.dataset_classes},
                   staging)
        write_embeddings(staging, chosen.pool)
        if chosen.budget is not None:
            write_json(staging / SELECTION, {"budget": config.select.budget, "picks": chosen.budget.picks,
                                             "radius": chosen.budget.radius}, staging)
        replace_dir(staging, output / "dataset")
    except BaseException:
        # Disk full, a kill: the previous dataset stays as it was.
        remove_tree(staging)
        raise
    kept_count = Counter(r.video_id for r in chosen.kept)
    dup_count = Counter(key.rsplit("@", 1)[0] for key in chosen.duplicate_of)
    registry.set_dedup_counts({vid: (kept_count[vid], dup_count[vid]) for vid in {r.video_id for r in rows} | set(videos)})
    duplicates = len(chosen.duplicate_of)
    return ExportSummary(frames=len(rows), kept=len(chosen.kept), duplicates=duplicates,
                         filtered=len(rows) - len(chosen.kept) - duplicates, detected_at_export=chosen.detected,
                         same_content=len(chosen.same_content),
                         over_budget=len(chosen.budget.left_out) if chosen.budget else 0,
                         over_shot=len(chosen.over_shot))


def earlier_picks(dataset: Path) -> list[str]:
    """The frames the last export's budget picked, in pick order (none if it had no budget, or its
    file is unreadable: the budget then picks afresh)."""
    path = dataset / SELECTION
    try:
        picks = read_json(path, MAX_SELECTION_BYTES).get("picks") if path.exists() else []
    except (OSError, ValueError, AttributeError, UnsafePath):
        log.warning("%s is unreadable: the budget picks afresh", path)
        return []
    return [p for p in picks if isinstance(p, str)] if isinstance(picks, list) else []


def _stays_inside(row: FrameRow) -> bool:
    """A registry row whose file is named by a path out of the output folder (an edited registry)
    is left out, said once."""
    path = PurePosixPath(row.file)
    if path.is_absolute() or ".." in path.parts:
        log.warning("%s: the registry names its file %s, out of the output folder: left out of the dataset",
                    row.key, row.file)
        return False
    return True


def _manifest(rows: list[FrameRow], videos: dict[str, VideoRow], chosen: Selection, image_paths: dict[str, str],
              labels: dict[str, list[Detection]], redactor: Redactor, per_shot: int | None) -> list[ManifestRecord]:
    """Inputs are named with their secrets masked (the registry keeps them whole)."""
    reasons = {r.key: r.reason for r in chosen.pool}
    left_out = chosen.budget.left_out if chosen.budget else set()
    records = []
    for r in rows:
        key, video = r.key, videos[r.video_id]
        extra: dict[str, Any] = {}
        if key in image_paths:
            decision, reason = "kept", None
        elif key in chosen.same_content:
            same = chosen.same_content[key]
            decision, reason = "duplicate", f"same content as {same.of}"
            extra = {"duplicate_by": "content", "similarity": {"picture": same.picture, "objects": same.objects}}
            if same.via is not None:
                reason += f" (through {same.via})"
                extra["through"] = same.via
        elif key in chosen.duplicate_of:
            decision, reason = "duplicate", f"duplicate of {chosen.duplicate_of[key]}"
        elif key in chosen.over_shot:
            decision, reason = "filtered", f"shot {r.shot} has its extract.per_shot ({per_shot}) frames"
        elif key in left_out:
            decision, reason = "filtered", f"left out by select.budget ({len(image_paths)} frames chosen)"
        else:
            decision, reason = "filtered", reasons.get(key, r.reason)
        if r.shot is not None:
            extra["shot"] = r.shot
        records.append(ManifestRecord(
            frame=key, video_id=r.video_id, source=redactor.url(video.input), source_meta=_meta(video, redactor),
            timestamp=r.timestamp,
            frame_index=r.frame_index, image=image_paths.get(key), phash=r.phash, blur=r.blur, sharpness=r.sharpness,
            media=r.media_of(video.media), detections=labels.get(key, []), decision=decision,
            duplicate_of=chosen.duplicate_of.get(key), reason=reason, extra=extra))
    return records


def _meta(video: VideoRow, redactor: Redactor) -> dict[str, Any]:
    meta = video.source_meta
    url = meta.get("webpage_url")
    if isinstance(url, str) and redactor.url(url) != url:
        return {**meta, "webpage_url": redactor.url(url)}
    return meta
