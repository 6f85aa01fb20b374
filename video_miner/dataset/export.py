"""The export: the whole dataset built from the registry's done videos into a staging folder and
swapped in, so the dataset and manifest only ever hold finished videos."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import MinerConfig
from ..errors import UnsafePath
from ..records import Decision, Detection, FrameRow, Review, VideoRow, detections_json
from ..redact import Redactor
from ..store.files import make_dirs, read_json, remove_tree, replace_dir, write_json
from ..store.manifest import PROVENANCE, ManifestRecord, read_manifest, write_embeddings, write_manifest
from ..store.registry import Registry
from .handover import handed_keys
from .moved import geometry, map_boxes, pictures_agree, same_boxes
from .previous import model_digest, needing
from .review import changes, indexed, reviewed_classes
from .select import Selection, Unsettled, replaced, select_frames
from .settle import Labeller, detect_rows, settle
from .writers import Labels, Splits, write_coco, write_yolo

log = logging.getLogger(__name__)
#: The budget's picks, in order, so a rerun keeps them (``dataset/selection.json``).
SELECTION = "selection.json"
#: A selection file larger than this (10M picks) is not one this program wrote.
MAX_SELECTION_BYTES = 1 << 29


@dataclass
class ExportSummary:
    """What the export did: every frame is kept, a duplicate, left out or filtered (they add up)."""

    frames: int
    kept: int
    duplicates: int
    filtered: int
    #: Deferred frames the export had to detect (no kept frame covered them).
    detected_at_export: int
    #: Of the duplicates, those found by content rather than pHash.
    same_content: int = 0
    #: Frames dedup kept that the budget left out (counted in ``left_out``).
    over_budget: int = 0
    #: Frames dedup kept past ``extract.per_shot`` in their shot (counted in ``left_out``).
    over_shot: int = 0
    #: Frames ``select.per_track`` left out for a better view of their track (counted in ``left_out``).
    over_track: int = 0
    #: Tracks in the pool (tracks on), and boxes marked hard along them.
    tracks: int = 0
    hard: int = 0
    #: The boxes marked hard, per class (most first).
    hard_by_class: dict[str, int] = field(default_factory=dict)
    #: Frames where the round before's model disagrees with this one (``select.previous_model``).
    disagree: int = 0

    @property
    def left_out(self) -> int:
        """Frames that showed the classes, no duplicate of a kept one, left out by a cap."""
        return self.over_budget + self.over_shot + self.over_track


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
                  detect: Labeller | None = None, detect_batch: int = 8, previous: Labeller | None = None
                  ) -> ExportSummary:
    """The dataset from everything done so far. ``labeller``: a second model that labels the kept
    frames; ``detect``: the filter's detector, for the deferred frames the choice still needs;
    ``previous``: the round before's model (``select.previous_model``), for the frames showing the
    classes it has not seen (both detected and recorded first: choosing itself reads and writes
    nothing)."""
    rows, videos, reviews, pinned = _records(registry, output)
    classes = reviewed_classes(config.dataset_classes, reviews)
    order = {vid: v.order for vid, v in videos.items()}
    live = live_segments(videos)
    detected = settle(rows, order, config, output, detect, detect_batch, pinned)
    if detected:
        registry.update_frames(detected)
        rows = replaced(rows, detected)
    chosen = None
    for _ in range(2):
        earlier = _previous_boxes(registry, rows, config, output, previous, detect_batch)
        try:
            chosen = select_frames(rows, order, config, earlier_picks(output / "dataset"), pinned, earlier, live)
            break
        except Unsettled as exc:
            # Copies in time need every frame of theirs detected (:mod:`.select`); these do not
            # change what the pHash walk and the content pass found, so the second choice settles.
            needed = set(exc.keys)
            more = [r for r in rows if r.key in needed]
            now = [found for start in range(0, len(more), detect_batch)
                   for found in detect_rows(more[start:start + detect_batch], config, output, detect)]
            registry.update_frames(now)
            rows = replaced(rows, now)
    if chosen is None:
        raise RuntimeError("the choice was still unsettled after its deferred frames were detected")
    reviews = reviews | moved_reviews(chosen, reviews, output)
    labels = _labels(chosen, output, labeller, reviews, classes)
    staging = output / "dataset.staging"
    remove_tree(staging)
    make_dirs(staging, output)
    try:
        _write(staging, output, config, rows, videos, chosen, labels, classes, reviews)
        replace_dir(staging, output / "dataset")
    except BaseException:
        # Disk full, a kill: the previous dataset stays as it was.
        remove_tree(staging)
        raise
    kept_count = Counter(r.video_id for r in chosen.kept)
    dup_count = Counter(key.rsplit("@", 1)[0] for key in chosen.duplicate_of)
    registry.set_dedup_counts({vid: (kept_count[vid], dup_count[vid]) for vid in {r.video_id for r in rows} | set(videos)})
    return _summary(rows, chosen, len(detected))


def _previous_boxes(registry: Registry, rows: list[FrameRow], config: MinerConfig, output: Path,
                    previous: Labeller | None, batch: int) -> dict[str, list[Detection]] | None:
    """The round before's model's boxes on every frame showing the classes (:mod:`.previous`): the
    recorded ones, and the missing ones detected (``batch`` at a time) and recorded."""
    if config.select.previous_model is None:
        return None
    digest = model_digest(Path(config.select.previous_model))
    stored = registry.previous_boxes(digest)
    todo = needing(rows, stored)
    if todo:
        if previous is None:
            raise RuntimeError("select.previous_model is set but no detector for it was given to the export")
        found: dict[str, list[Detection]] = {}
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            for row, boxes in zip(chunk, previous([output / r.file for r in chunk]), strict=True):
                found[row.key] = list(boxes)
        registry.add_previous_boxes(digest, found)
        stored |= found
    return stored


def _records(registry: Registry, output: Path
             ) -> tuple[list[FrameRow], dict[str, VideoRow], dict[str, Review], frozenset[str]]:
    """What the choice reads: the frames (a rejected one out, whatever the model found on it), the
    videos, the latest reviews, and the frames a person saw (reviewed, or handed over by an export),
    which stay their duplicates' representative."""
    reviews = registry.latest_reviews()
    rows = [_rejected(r, reviews[r.key]) if r.key in reviews and reviews[r.key].rejected else r
            for r in registry.done_frames() if _stays_inside(r)]
    videos = {v.video_id: v for v in registry.videos()}
    pinned = frozenset(k for k, r in reviews.items() if not r.rejected) | handed_keys(output)
    return rows, videos, reviews, pinned


@dataclass
class Plan:
    """What an export with other settings would change in the dataset, from what is mined."""

    #: Frames that would join the dataset: (frame, what it is now).
    joining: list[tuple[str, str]]
    #: Frames that would leave it: (frame, decision, why).
    leaving: list[tuple[str, str, str]]
    #: Deferred frames the choice needs detected first (the export would detect them): when not 0,
    #: the plan is left empty, the choice cannot be known without the detector.
    undetected: int = 0


def plan_export(registry: Registry, config: MinerConfig, output: Path) -> Plan:
    """The choice :func:`build_dataset` would make with ``config`` (the same records, the same pure
    :func:`~.select.select_frames`) against the dataset's manifest: nothing is detected or written."""
    rows, videos, _, pinned = _records(registry, output)
    order = {vid: v.order for vid, v in videos.items()}
    previous = None
    if config.select.previous_model is not None:
        previous = registry.previous_boxes(model_digest(Path(config.select.previous_model)))
        unseen = needing(rows, previous)
        if unseen:  # the previous model has not seen them: the export would detect them first
            return Plan([], [], len(unseen))
    try:
        chosen = select_frames(rows, order, config, earlier_picks(output / "dataset"), pinned, previous,
                               live_segments(videos))
    except Unsettled as exc:
        return Plan([], [], exc.count)
    now = {r.frame: r for r in read_manifest(output / "dataset")} if (output / "dataset" / PROVENANCE).exists() else {}
    kept_now = {k for k, r in now.items() if r.decision == "kept"}
    kept = {r.key: r.key for r in chosen.kept}
    by_key = {r.key: r for r in chosen.pool}
    joining = [(k, now[k].decision if k in now else "new") for k in sorted(set(kept) - kept_now)]
    leaving = []
    for key in sorted(kept_now - set(kept)):
        if key not in by_key:
            leaving.append((key, "filtered", "no longer passes the prefilters or the models"))
            continue
        decision, reason, _, _ = _decided(key, by_key[key], chosen, kept, config)
        leaving.append((key, decision, reason or "filtered"))
    return Plan(joining, leaving)


def moved_reviews(chosen: Selection, reviews: dict[str, Review], output: Path) -> dict[str, Review]:
    """Reviews of frames no longer kept, moved to the kept frame that now stands for each (a copy
    with clearly more pixels took its place), their boxes as they are where the model saw the same
    boxes on both, else mapped by the crop or mirror the model's boxes show (:mod:`.moved`); a
    review nothing places stays where it was."""
    rows = {r.key: r for r in chosen.pool}
    kept = {r.key for r in chosen.kept}
    moved: dict[str, Review] = {}
    for key, review in sorted(reviews.items()):
        if review.rejected or key in kept or key not in rows:
            continue
        stands, _ = chosen.stands_for(key)
        if stands is None or stands in reviews or stands in moved or stands not in rows:
            continue
        mine, theirs = rows[key], rows[stands]
        if same_boxes(mine.detections, theirs.detections):
            moved[stands] = review
            continue
        where = geometry(mine.detections, theirs.detections,
                         pictures_agree(output / mine.file, output / theirs.file))
        if where is not None:
            moved[stands] = replace(review, boxes=map_boxes(review.boxes, where))
    return moved


def _labels(chosen: Selection, output: Path, labeller: Labeller | None, reviews: dict[str, Review],
            classes: list[str]) -> Labels:
    """Each kept frame's boxes: the filter's, or the label model's; a review's wherever there is one."""
    labels: Labels = {r.key: r.detections for r in chosen.kept}
    if labeller is not None and chosen.kept:
        for r, dets in zip(chosen.kept, labeller([output / r.file for r in chosen.kept]), strict=True):
            labels[r.key] = dets
    for key in labels:  # reviewed labels win over any model's
        if key in reviews:
            labels[key] = indexed(reviews[key], classes)
    return labels


def _write(staging: Path, output: Path, config: MinerConfig, rows: list[FrameRow], videos: dict[str, VideoRow],
           chosen: Selection, labels: Labels, classes: list[str], reviews: dict[str, Review]) -> None:
    """The dataset's files, into ``staging``: images and labels, COCO, the manifest, provenance,
    embeddings and the budget's picks."""
    splits = _splits(chosen.kept, config.export.val_fraction)
    image_paths = write_yolo(staging, output, splits, labels, classes)
    if "coco" in config.export.formats:
        write_coco(staging, splits, labels, classes, image_paths)
    redactor = Redactor.with_extra(config.secret_params)
    write_manifest(staging, manifest_records(rows, videos, chosen, image_paths, labels, redactor, config, reviews),
                   config.export.manifest)
    write_json(staging / PROVENANCE, {"config_hash": config.result_hash(), "classes": classes}, staging)
    write_embeddings(staging, chosen.pool)
    if chosen.budget is not None:
        write_json(staging / SELECTION, {"budget": config.select.budget, "picks": chosen.budget.picks,
                                         "radius": chosen.budget.radius}, staging)


def _summary(rows: list[FrameRow], chosen: Selection, detected: int) -> ExportSummary:
    duplicates, left_out = len(chosen.duplicate_of), len(chosen.left_out)
    return ExportSummary(frames=len(rows), kept=len(chosen.kept), duplicates=duplicates,
                         filtered=len(rows) - len(chosen.kept) - duplicates - left_out,
                         detected_at_export=detected, same_content=len(chosen.same_content),
                         over_budget=len(chosen.budget.left_out) if chosen.budget else 0,
                         over_shot=len(chosen.over_shot), over_track=len(chosen.per_track),
                         tracks=len({(r.video_id, d.track) for r in chosen.pool for d in r.detections if d.track}),
                         hard=sum(d.hard is not None for r in chosen.pool for d in r.detections),
                         hard_by_class=dict(Counter(d.label for r in chosen.pool for d in r.detections
                                                    if d.hard is not None).most_common()),
                         disagree=len(chosen.disagree))


def live_segments(videos: dict[str, VideoRow]) -> frozenset[str]:
    """The videos that are live sources' segments (their tracks are still going on)."""
    return frozenset(vid for vid, v in videos.items() if v.kind == "live")


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


def _rejected(row: FrameRow, review: Review) -> FrameRow:
    by = f" by {review.who}" if review.who else ""
    return replace(row, decision=Decision.NEGATIVE, reason=f"rejected in review ({review.tool}{by})")


def manifest_records(rows: list[FrameRow], videos: dict[str, VideoRow], chosen: Selection,
                     image_paths: dict[str, str], labels: dict[str, list[Detection]], redactor: Redactor,
                     config: MinerConfig, reviews: dict[str, Review] | None = None) -> list[ManifestRecord]:
    """One row per sampled frame with its decision and the reason, in words: a duplicate names the
    kept frame that stands for it (its chain of duplicates followed) or says none does and why; a
    frame left out by the budget names the pick that covers it and how far it is. Rows keep the
    boxes the models found (a filtered frame's too: a missed detection can be audited). Inputs
    are named with their secrets masked (the registry keeps them whole)."""
    reasons = {r.key: r.reason for r in chosen.pool}
    budget = chosen.budget
    records = []
    for r in rows:
        key, video = r.key, videos[r.video_id]
        decision, reason, stands, extra = _decided(key, r, chosen, image_paths, config)
        if r.shot is not None:
            extra["shot"] = r.shot
        hard = [d.hard for d in r.detections if d.hard is not None]
        if hard:
            extra["hard"] = hard
        if key in chosen.disagree:
            extra["disagrees"] = chosen.disagree[key]
        review = (reviews or {}).get(key)
        if review is not None:  # its boxes are the reviewed ones; the registry keeps the model's
            extra["reviewed"] = {"revision": review.revision, "tool": review.tool, "who": review.who, "at": review.at,
                                 "rejected": review.rejected}
            if review.frame != key:  # moved here from the frame it was given to, now this one's duplicate
                extra["reviewed"]["from"] = review.frame
                given = (reviews or {}).get(review.frame)
                if given is not None and given.boxes != review.boxes:  # mapped onto a crop or a mirror
                    extra["reviewed"]["mapped"] = True
            if not review.rejected:  # the model's boxes beside the reviewed ones: what the review changed
                extra["reviewed"]["model"] = detections_json(r.detections)
                extra["reviewed"]["changes"] = changes(r.detections, review.boxes).as_json()
        if decision == "filtered":
            reason = reasons.get(key, r.reason)
        if budget is not None and key in budget.left_out:
            extra["covered_by"] = budget.left_out[key].pick
            extra["distance"] = budget.left_out[key].distance
        records.append(ManifestRecord(
            frame=key, video_id=r.video_id, source=redactor.url(video.input), source_meta=_meta(video, redactor),
            timestamp=r.timestamp, frame_index=r.frame_index, image=image_paths.get(key), phash=r.phash, blur=r.blur,
            sharpness=r.sharpness, media=r.media_of(video.media),
            detections=_boxes(key, r, chosen, labels, config.track.enabled),
            decision=decision, duplicate_of=stands, reason=reason, extra=extra))
    return records


def _boxes(key: str, row: FrameRow, chosen: Selection, labels: dict[str, list[Detection]], tracked: bool
           ) -> list[Detection]:
    """The boxes a row shows: the labels of a kept frame; what the models found on any other, but
    for a duplicate by pHash, whose detection may have been skipped (the manifest never depends on
    which were), unless tracks are on: then no frame's detection is skipped, and the tracks need them."""
    if key in labels:
        return labels[key]
    if key in chosen.duplicate_of and key not in chosen.same_content and not tracked:
        return []
    return row.detections


def _decided(key: str, row: FrameRow, chosen: Selection, image_paths: dict[str, str], config: MinerConfig
             ) -> tuple[str, str | None, str | None, dict[str, Any]]:
    """(decision, reason, the kept frame that stands for it, extra fields) of one frame."""
    extra: dict[str, Any] = {}
    if key in image_paths:
        return "kept", None, None, extra
    if key in chosen.per_track:
        view = chosen.per_track[key]
        stands, way = chosen.stands_for(key)
        reason = (f"left out by select.per_track ({config.select.per_track}): {view.pick} is a better view of "
                  f"track {view.track}")
        if way:  # its view is not kept itself
            reason += _chain(way, stands, chosen, config)
        return "left_out", reason, stands, {"covered_by": view.pick, "track": view.track}
    if key in chosen.duplicate_of:
        stands, way = chosen.stands_for(key)
        direct = chosen.duplicate_of[key]
        same = chosen.same_content.get(key)
        if same is not None:
            reason = f"same content as {same.of}"
            extra = {"duplicate_by": "content", "similarity": {"picture": same.picture, "objects": same.objects}}
            if same.speed is not None:
                reason += f" at the same moment: its video is a copy played at about {same.speed:g}x"
                extra["speed"] = same.speed
            if same.via is not None:
                reason += f" (through {same.via})"
                extra["through"] = same.via
        else:
            reason = f"duplicate of {direct} (pHash)"
        if way:  # what it duplicates is not kept itself
            reason += _chain(way, stands, chosen, config)
        return "duplicate", reason, stands, extra
    if key in chosen.over_shot:
        return "left_out", f"shot {row.shot} has its extract.per_shot ({config.extract.per_shot}) frames", None, extra
    if chosen.budget is not None and key in chosen.budget.left_out:
        cover = chosen.budget.left_out[key]
        return ("left_out", f"left out by select.budget ({len(chosen.budget.picks)} frames chosen): {cover.pick} "
                f"covers it at distance {cover.distance}", cover.pick, extra)
    return "filtered", None, None, extra


def _chain(way: list[str], stands: str | None, chosen: Selection, config: MinerConfig) -> str:
    """How a duplicate's duplicate ends: at the kept frame that stands for it, or at none."""
    last = way[-1]
    if stands is None:
        why = (f"{last} is over its shot's extract.per_shot ({config.extract.per_shot})" if last in chosen.over_shot
               else f"{last} is not kept")
        return f"; nothing kept stands for it: {why}"
    steps = " -> ".join(way)
    return f"; kept for it: {stands} (via {steps}, not kept)"


def _meta(video: VideoRow, redactor: Redactor) -> dict[str, Any]:
    meta = video.source_meta
    url = meta.get("webpage_url")
    if isinstance(url, str) and redactor.url(url) != url:
        return {**meta, "webpage_url": redactor.url(url)}
    return meta
