"""The best views of every tracked object (``select.per_track``): pure, over settled frames.

Each track (one object in one video, :mod:`video_miner.detect.tracking`) keeps its ``k`` best
views: the first is its best box (the ``view`` score: size, confidence, sharpness, not cut, not
covered); each next one, among the good views (at least half as good as the best), the one most
unlike the views already kept (by the box embeddings; by time where there are none). Tracks are
served in order of id, and a frame kept for one track counts for every track it shows, so a frame
showing two people may serve both. A frame with tracked boxes that no track keeps is left out, and
the kept view of its track nearest in time stands for it.

On a live source the track is still going on when an export chooses, and an export handed over
must not change its mind later: there a track's first view is its first good one in time (a box
not cut by the frame's edge, at most half covered by another), or its best so far while it has
none; the next views are chosen as above.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..records import FrameEmbedding, FrameRow, covered, is_cut

#: A next view must be at least this good, relative to its track's best.
GOOD = 0.5
#: A live track's first view may be at most this much covered by another box.
CLEAR = 0.5


@dataclass(frozen=True)
class TrackCover:
    """The kept view standing for a frame ``per_track`` left out, and the track they share."""

    pick: str
    track: int


@dataclass
class _View:
    frame: int  # place in the rows
    score: float
    t: float
    vector: np.ndarray | None
    #: Not cut by the frame's edge nor covered by another box (a live track's first view).
    clear: bool = True


def best_views(rows: Sequence[FrameRow], eligible: Sequence[bool], k: int,
               live: frozenset[str] = frozenset()) -> dict[str, TrackCover]:
    """The frames of ``rows`` (those ``eligible``: showing the classes) that ``per_track: k`` leaves
    out, each with the kept view that stands for it; ``live``: the videos that are live segments
    (their tracks keep their first good view first)."""
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if eligible[i] and any(d.track is not None for d in row.detections):
            by_video[row.video_id].append(i)
    out: dict[str, TrackCover] = {}
    for video in sorted(by_video):
        out.update(_video_views([rows[i] for i in by_video[video]], k, video in live))
    return out


def _tracks_of(rows: list[FrameRow]) -> dict[int, list[_View]]:
    tracks: dict[int, list[_View]] = defaultdict(list)
    for place, row in enumerate(rows):
        boxes = _box_vectors(row)
        for b, d in enumerate(row.detections):
            if d.track is None:
                continue
            vector = boxes[b] if boxes is not None and b < len(boxes) else None
            clear = not is_cut(d) and covered(d, row.detections) <= CLEAR
            tracks[d.track].append(_View(place, d.view if d.view is not None else d.conf, row.timestamp, vector, clear))
    return tracks


def _video_views(rows: list[FrameRow], k: int, live: bool) -> dict[str, TrackCover]:
    tracks = _tracks_of(rows)
    kept: set[int] = set()
    for track in sorted(tracks):
        views = tracks[track]
        mine = [v for v in views if v.frame in kept]  # kept for another track, showing this one too
        ranked = sorted(views, key=lambda v: (-v.score, v.t))
        if live and not mine:
            first = min((v for v in views if v.clear), key=lambda v: v.t, default=ranked[0])
            mine.append(first)
            kept.add(first.frame)
        while len(mine) < k and len(mine) < len(views):
            view = _next_view(ranked, mine)
            if view is None:
                break
            mine.append(view)
            kept.add(view.frame)
    out: dict[str, TrackCover] = {}
    for place, row in enumerate(rows):
        if place in kept:
            continue
        # The track of its largest box; the kept view of it nearest in time stands for the frame.
        box = max((d for d in row.detections if d.track is not None), key=lambda d: d.xywhn[2] * d.xywhn[3])
        assert box.track is not None
        chosen = [v for v in tracks[box.track] if v.frame in kept]
        nearest = min(chosen, key=lambda v: (abs(v.t - row.timestamp), v.t))
        out[row.key] = TrackCover(rows[nearest.frame].key, box.track)
    return out


def _next_view(ranked: list[_View], mine: list[_View]) -> _View | None:
    """The best view if none is kept yet; then, among the good ones left, the most unlike those kept."""
    taken = {v.frame for v in mine}
    left = [v for v in ranked if v.frame not in taken]
    if not left:
        return None
    if not mine:
        return left[0]
    good = [v for v in left if v.score >= GOOD * ranked[0].score] or left[:1]
    return max(good, key=lambda v: (min(_distance(v, m, ranked) for m in mine), v.score, -v.t))


def _distance(a: _View, b: _View, views: list[_View]) -> float:
    if a.vector is not None and b.vector is not None:
        return float(1.0 - a.vector @ b.vector)
    span = max(v.t for v in views) - min(v.t for v in views)
    return abs(a.t - b.t) / span if span > 0 else 0.0


def _box_vectors(row: FrameRow) -> np.ndarray | None:
    """The row's per-box unit vectors, or None (no embedding, or one that does not fit its boxes:
    a registry is untrusted input, and time then spreads the views)."""
    if not row.embedding:
        return None
    try:
        boxes = FrameEmbedding.from_bytes(row.embedding).boxes
    except ValueError:
        return None
    if boxes.shape[0] != len(row.detections):
        return None
    norms = np.linalg.norm(boxes, axis=1, keepdims=True)
    return boxes / np.maximum(norms, 1e-9)
