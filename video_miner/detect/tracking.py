"""Objects through time: a video's boxes joined into tracks, each box's worth as a view of its
object, and the frames where the model contradicts itself along a track (hard examples).

The tracker is Ultralytics' ByteTrack (IoU matching with a Kalman motion model; its ``lap``
solver is a dependency). It sees the frames the detector saw, in time order, and a frame the static
prefilter dropped as the frame it repeats; a blurred frame is skipped, not shown to it as empty (it
is not a frame without the person).
Ids are the tracker's own, renumbered 1, 2, ... by first appearance, so the same detections give
the same tracks in every run, worker and engine. A track seen on fewer than ``min_frames`` frames
is no track: its box keeps no id.

Hard marks, per box (``Detection.hard``): a frame the detector saw between two that found the
track gets the box the track says it missed (the mean of its neighbours' boxes, ``conf`` 0: the
model did not find it), marked ``missed between ...``, unless the model found it under the
threshold there (``DetectorSpec.weak_conf``): then that box, with its own confidence, marked
``conf 0.31 under the threshold between ...`` (the confidence crossed the threshold and back); a
box whose class differs from its track's class just before and after is marked ``car -> truck``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ..config import TrackConfig
from ..media.prefilter import STATIC
from ..media.quality import blur_effect
from ..records import Decision, Detection, FrameEmbedding, FrameRecord, box_iou, covered, is_cut

#: The tracker works in pixels of a notional picture this wide and high: IoU does not depend on
#: the scale, and the Kalman filter's noise is relative to the box height.
SCALE = 1000.0
#: A box under the threshold is the track's object where it overlaps the track's expected box this much.
WEAK_IOU = 0.5
#: Crops smaller than this many pixels a side are not judged for sharpness (too few edges).
MIN_CROP = 12


class _Boxes:
    """What ByteTrack reads of a frame's detections (``Boxes`` after ``.cpu().numpy()``)."""

    def __init__(self, xywh: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xywh, self.conf, self.cls = xywh, conf, cls

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: np.ndarray) -> _Boxes:
        return _Boxes(self.xywh[mask], self.conf[mask], self.cls[mask])

    @classmethod
    def of(cls, boxes: list[Detection]) -> _Boxes:
        xywh = np.asarray([d.xywhn for d in boxes], dtype=np.float32).reshape(-1, 4) * SCALE
        return cls(xywh, np.asarray([d.conf for d in boxes], dtype=np.float32),
                   np.asarray([d.class_index for d in boxes], dtype=np.float32))


@dataclass
class TrackSummary:
    """What tracking found in one video."""

    tracks: int = 0
    #: Hard marks by class, and how many frames were made candidates by a box a track says was missed.
    hard: Counter[str] | None = None
    recovered: int = 0

    @property
    def hard_marks(self) -> int:
        return sum(self.hard.values()) if self.hard else 0


def _tracker(cfg: TrackConfig, conf: float, reid: bool) -> object:
    # Imported here: the tracker pulls in lap and scipy, which a run without tracks never needs.
    from ultralytics.trackers.bot_sort import BOTSORT

    # BoT-SORT, its appearance cue fed the detector's own box embeddings ("auto": no ReID model
    # is loaded); without embeddings it is ByteTrack's IoU matching. No camera-motion step: it
    # needs the pictures in memory, and the tracker sees boxes only.
    args = SimpleNamespace(track_high_thresh=conf, track_low_thresh=min(0.1, conf), new_track_thresh=conf,
                           track_buffer=max(1, round(cfg.keep_lost_s * cfg.fps)), match_thresh=cfg.match,
                           fuse_score=True, gmc_method="none", proximity_thresh=0.5,
                           appearance_thresh=cfg.appearance, with_reid=reid, model="auto")
    return BOTSORT(args)


def _features(frames: list[FrameRecord]) -> list[np.ndarray | None] | None:
    """Each seen frame's box embeddings (None for a frame with no boxes), or None when some frame
    with boxes has none that fit them: appearance is then not used at all (a track with and one
    without features cannot be compared)."""
    out: list[np.ndarray | None] = []
    for frame in frames:
        if not frame.detections:
            out.append(None)
            continue
        if frame.embedding is None:
            return None
        boxes = FrameEmbedding.from_bytes(frame.embedding).boxes
        if boxes.shape[0] != len(frame.detections):
            return None
        out.append(boxes)
    return out


class Follower:
    """The tracker fed one frame at a time: which raw track each box of a frame the detector saw
    joins (the file pass feeds a whole video, the live pass each frame as it is decided)."""

    def __init__(self, cfg: TrackConfig, conf: float, reid: bool) -> None:
        self._tracker = _tracker(cfg, conf, reid)

    def repeat(self, boxes: list[Detection], feats: np.ndarray | None) -> None:
        """A frame that repeats one already seen (the static prefilter's): the tracks age with time."""
        self._tracker.update(_Boxes.of(boxes), None, feats)  # type: ignore[attr-defined]

    def see(self, boxes: list[Detection], feats: np.ndarray | None) -> dict[int, int]:
        """Box index -> raw track id, for the boxes of this frame a track holds."""
        tracker = self._tracker
        tracker.update(_Boxes.of(boxes), None, feats)  # type: ignore[attr-defined]
        # Unconfirmed new tracks too: a track confirmed on its second frame owns its first box.
        return {int(track.idx): int(track.track_id) for track in tracker.tracked_stracks  # type: ignore[attr-defined]
                if track.frame_id == tracker.frame_id}  # type: ignore[attr-defined]


def assign_tracks(frames: list[FrameRecord], cfg: TrackConfig, conf: float) -> dict[tuple[int, int], int]:
    """(frame position in ``frames``, box index) -> track id, for every box of a track."""
    feats = _features(frames) if cfg.appearance < 1 else None
    follower = Follower(cfg, conf, feats is not None)
    seen: dict[tuple[int, int], int] = {}
    last: int | None = None
    for pos, frame in enumerate(frames):
        if frame.decision == Decision.FILTERED and last is not None and (frame.reason or "").startswith(STATIC):
            # The same picture as the last frame the detector saw: the tracker sees it again, so a
            # track ages with time (an empty room for a minute ends it; someone standing still keeps it).
            follower.repeat(frames[last].detections, feats[last] if feats else None)
            continue
        if not _seen(frame):
            continue  # blurred or not seen: no evidence either way
        last = pos
        for box, raw in follower.see(frame.detections, feats[pos] if feats else None).items():
            seen[(pos, box)] = raw
    lengths = Counter(seen.values())
    first: dict[int, tuple[int, float]] = {}
    for (pos, box), raw in seen.items():
        if lengths[raw] >= cfg.min_frames:
            first.setdefault(raw, (pos, frames[pos].detections[box].xywhn[0]))
    ids = {place: raw for place, raw in seen.items() if raw in first}
    if feats is not None:
        _join_pieces(frames, ids, feats, cfg.appearance, cfg.keep_lost_s)
        _stitch(frames, ids, feats, cfg.appearance, cfg.keep_lost_s)
    starts: dict[int, tuple[int, float]] = {}
    for (pos, box), raw in sorted(ids.items()):
        starts.setdefault(raw, (pos, frames[pos].detections[box].xywhn[0]))
    renumber = {raw: n + 1 for n, raw in enumerate(sorted(starts, key=lambda r: starts[r]))}
    return {place: renumber[raw] for place, raw in ids.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-9)


def _join_pieces(frames: list[FrameRecord], ids: dict[tuple[int, int], int], feats: list[np.ndarray | None],
                 appearance: float, keep_lost_s: float) -> None:
    """Join a track that starts within ``keep_lost_s`` of another's end, nearby, of the same class
    and alike (cosine >= ``appearance``) to it: one object the tracker lost for a moment."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for place, raw in sorted(ids.items()):
        spans.setdefault(raw, []).append(place)
    for later in sorted(spans, key=lambda r: spans[r][0]):
        pos, box = spans[later][0]
        start, vector = frames[pos].detections[box], feats[pos]
        best: tuple[float, int] | None = None
        for earlier, places in spans.items():
            if earlier == later or not places:
                continue
            end_pos, end_box = places[-1]
            if end_pos >= pos or frames[pos].t - frames[end_pos].t > keep_lost_s:
                continue
            end, theirs = frames[end_pos].detections[end_box], feats[end_pos]
            if end.label != start.label or not _near(start, end) or vector is None or theirs is None:
                continue
            cosine = _cosine(vector[box], theirs[end_box])
            if cosine >= appearance and (best is None or cosine > best[0]):
                best = (cosine, earlier)
        if best is not None:
            spans[best[1]] = sorted(spans[best[1]] + spans[later])
            for place in spans[later]:
                ids[place] = best[1]
            spans[later] = []


def _near(a: Detection, b: Detection) -> bool:
    """Whether two boxes' centres are closer than the larger box's longer side."""
    reach = max(a.xywhn[2], a.xywhn[3], b.xywhn[2], b.xywhn[3])
    return float(np.hypot(a.xywhn[0] - b.xywhn[0], a.xywhn[1] - b.xywhn[1])) <= reach


def _stitch(frames: list[FrameRecord], ids: dict[tuple[int, int], int], feats: list[np.ndarray | None],
            appearance: float, keep_lost_s: float) -> None:
    """Give a box left without a track the track of the same class that it looks like (cosine of
    the box embeddings >= ``appearance``), seen nearby on the frame the detector saw just before or
    after it (within ``keep_lost_s``) and not on its own: an object entering or leaving moves and
    shrinks too fast between samples for the motion model, but still looks like itself."""
    seen = _seen_positions(frames)
    for rank, pos in enumerate(seen):
        vectors = feats[pos]
        for box, d in enumerate(frames[pos].detections):
            if (pos, box) in ids or vectors is None:
                continue
            taken = {ids[(pos, b)] for b in range(len(frames[pos].detections)) if (pos, b) in ids}
            best: tuple[float, int] | None = None
            for near in (seen[r] for r in (rank - 1, rank + 1) if 0 <= r < len(seen)):
                if feats[near] is not None and abs(frames[near].t - frames[pos].t) <= keep_lost_s:
                    found = _looks_like(d, vectors[box], frames[near], feats[near], near, ids, taken, appearance)
                    if found is not None and (best is None or found[0] > best[0]):
                        best = found
            if best is not None:
                ids[(pos, box)] = best[1]


def _looks_like(d: Detection, vector: np.ndarray, frame: FrameRecord, theirs: np.ndarray | None, pos: int,
                ids: dict[tuple[int, int], int], taken: set[int], appearance: float) -> tuple[float, int] | None:
    """(cosine, track) of the tracked box of ``frame`` (at ``pos``) of ``d``'s class, near it and
    not of a track in ``taken``, that ``d`` looks most like at ``appearance`` or more; None if none."""
    best: tuple[float, int] | None = None
    for b, other in enumerate(frame.detections):
        track = ids.get((pos, b))
        if theirs is None or track is None or track in taken or other.label != d.label or not _near(d, other):
            continue
        cosine = _cosine(vector, theirs[b])
        if cosine >= appearance and (best is None or cosine > best[0]):
            best = (cosine, track)
    return best


def track_video(frames: list[FrameRecord], frames_dir: Path, cfg: TrackConfig, conf: float,
                no_class_reason: str) -> TrackSummary:
    """Give every box of ``frames`` (one video's, in time order, decided) its track, view score and
    hard mark, in place; a frame the detector saw with nothing, between two that found a track,
    gets the box the track says it missed."""
    ids = assign_tracks(frames, cfg, conf)
    for pos, frame in enumerate(frames):
        frame.detections = [replace(d, track=ids.get((pos, k))) for k, d in enumerate(frame.detections)]
    summary = TrackSummary(len(set(ids.values())), Counter())
    _mark_hard(frames, summary, no_class_reason)
    for frame in frames:
        if any(d.track is not None for d in frame.detections):
            score_views(frame, frames_dir / frame.file)
    return summary


def _observations(frames: list[FrameRecord]) -> dict[int, list[tuple[int, int]]]:
    """Track id -> its (seen-frame rank, frame position) in time order; rank counts only the frames
    the detector saw, so "the next frame" is the next one the model was asked about."""
    out: dict[int, list[tuple[int, int]]] = {}
    rank = 0
    for pos, frame in enumerate(frames):
        if not _seen(frame):
            continue
        for track in sorted({d.track for d in frame.detections if d.track is not None}):
            out.setdefault(track, []).append((rank, pos))
        rank += 1
    return out


def _seen(frame: FrameRecord) -> bool:
    """Whether the detector answered for the frame (a prefilter dropped none of it, nothing deferred)."""
    return frame.decision in (Decision.CANDIDATE, Decision.NEGATIVE)


def _seen_positions(frames: list[FrameRecord]) -> list[int]:
    return [pos for pos, f in enumerate(frames) if _seen(f)]


def _mark_hard(frames: list[FrameRecord], summary: TrackSummary, no_class_reason: str) -> None:
    seen = _seen_positions(frames)
    assert summary.hard is not None
    for track, path in sorted(_observations(frames).items()):
        for (_, p0), (_, p1), (_, p2) in zip(path, path[1:], path[2:], strict=False):
            mark_class_change(frames, track, p0, p1, p2, summary)
        for (r0, p0), (r1, p1) in pairwise(path):
            if r1 - r0 == 2:  # seen, one frame the model said nothing of this object, seen again
                mark_missed(frames, track, p0, seen[r0 + 1], p1, summary, no_class_reason)


def _box_of(frame: FrameRecord, track: int) -> Detection:
    return next(d for d in frame.detections if d.track == track)


def mark_class_change(frames: list[FrameRecord], track: int, p0: int, p1: int, p2: int,
                      summary: TrackSummary) -> bool:
    """Mark the track's box on ``frames[p1]`` if its class differs from the track's just before and
    after; whether it did."""
    before, box, after = _box_of(frames[p0], track), _box_of(frames[p1], track), _box_of(frames[p2], track)
    if box.label == before.label or before.label != after.label:
        return False
    mark = f"{before.label} -> {box.label}"
    frames[p1].detections = [replace(d, hard=mark) if d is box else d for d in frames[p1].detections]
    assert summary.hard is not None
    summary.hard[box.label] += 1
    return True


def mark_missed(frames: list[FrameRecord], track: int, p0: int, at: int, p2: int, summary: TrackSummary,
                no_class_reason: str) -> bool:
    """Give ``frames[at]`` the box the track says it missed, unless it holds the track; whether it did."""
    before, after = _box_of(frames[p0], track), _box_of(frames[p2], track)
    frame = frames[at]
    if any(d.track == track for d in frame.detections):
        return False
    xywhn = tuple(round((a + b) / 2, 6) for a, b in zip(before.xywhn, after.xywhn, strict=True))
    label = before if before.label == after.label else max(before, after, key=lambda d: d.conf)
    span = f"between {frames[p0].t:.1f} s and {frames[p2].t:.1f} s"
    weak = _weak_match(frame, label.label, xywhn)  # type: ignore[arg-type]
    if weak is not None:  # the model saw it, under the threshold: it crossed it and back
        box = replace(weak, model=label.model, track=track, hard=f"conf {weak.conf:.2f} under the threshold {span}")
    else:
        box = Detection(label.label, label.class_index, 0.0, xywhn, label.model, None, track,  # type: ignore[arg-type]
                        hard=f"missed {span}")
    frame.embedding = _with_box(frame.embedding, frames[p0], frames[p2], track)
    frame.detections = [*frame.detections, box]
    if frame.decision == Decision.NEGATIVE and frame.reason == no_class_reason:
        frame.decision, frame.reason = Decision.CANDIDATE, None
        summary.recovered += 1
    assert summary.hard is not None
    summary.hard[label.label] += 1
    return True


def _weak_match(frame: FrameRecord, label: str, xywhn: tuple[float, float, float, float]) -> Detection | None:
    """The frame's box under the threshold of ``label`` that best overlaps where its track says the
    object is (IoU >= ``WEAK_IOU``), if any."""
    best = max((w for w in frame.weak if w.label == label), key=lambda w: box_iou(w.xywhn, xywhn), default=None)
    return best if best is not None and box_iou(best.xywhn, xywhn) >= WEAK_IOU else None


def _with_box(embedding: bytes | None, before: FrameRecord, after: FrameRecord, track: int) -> bytes | None:
    """The frame's embedding with a vector for a box the model missed: its track's neighbours'
    box vectors averaged (the object as it looked just before and after)."""
    if embedding is None:
        return None
    mine = FrameEmbedding.from_bytes(embedding)
    near = []
    for frame in (before, after):
        if frame.embedding is None:
            continue
        theirs = FrameEmbedding.from_bytes(frame.embedding)
        at = next(k for k, d in enumerate(frame.detections) if d.track == track)
        if at < theirs.boxes.shape[0] and theirs.boxes.shape[1] == mine.boxes.shape[1]:
            near.append(theirs.boxes[at])
    vector = np.mean(near, axis=0) if near else np.resize(mine.whole, mine.boxes.shape[1])
    vector = vector / max(float(np.linalg.norm(vector)), 1e-9)
    return FrameEmbedding(mine.whole, np.vstack([mine.boxes, vector[None, :]])).to_bytes()


def view_score(box: Detection, others: list[Detection], sharpness: float) -> float:
    """How good a view of its object a box is, 0-1: larger, surer, sharper, not cut by the frame's
    edge, not covered by another box. The area counts by its square root: twice as close is about
    twice as good, not four times."""
    _, _, w, h = box.xywhn
    shown = (0.5 if is_cut(box) else 1.0) * (1.0 - covered(box, others))
    return round(float(np.sqrt(max(w * h, 0.0))) * box.conf * sharpness * shown, 5)


def score_views(frame: FrameRecord, image: Path, every: bool = False) -> None:
    """Each tracked box's ``view`` score (``every``: each box's, for tracks that are not known yet)."""
    with Image.open(image) as im:
        gray = np.asarray(im.convert("L"))
    height, width = gray.shape
    scored = []
    for d in frame.detections:
        if d.track is None and not every:
            scored.append(d)
            continue
        x, y, w, h = d.xywhn
        crop = gray[max(0, int((y - h / 2) * height)):int((y + h / 2) * height),
                    max(0, int((x - w / 2) * width)):int((x + w / 2) * width)]
        sharp = 1.0 - blur_effect(crop) if min(crop.shape) >= MIN_CROP else 0.5
        scored.append(replace(d, view=view_score(d, frame.detections, sharp)))
    frame.detections = scored
