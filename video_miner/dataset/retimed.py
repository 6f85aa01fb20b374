"""Copies played faster or slower than their original (reposts at 1.1x, 1.25x, 0.9x).

A copy in time shows the original's moments at other times: sampled at the same rate, most of its
frames fall between the original's samples, and a person or a car moves in the fraction of a second
between, so they match none of the original's frames as closely as a frame-aligned copy does. What
gives such a copy away is its time line: its frames' look-alikes in the original lie on one line
``t_original = speed * t + offset``. Where most of a video's frames already duplicate another's, the
line is fitted (RANSAC over each frame's nearest pictures in the other video, then least squares
over the frames on it), and each frame the video still keeps is compared with the other video's
frames within one sample of the moment the line maps it to, at ``dedup.time_similarity``: the time
has said which moment it shows, the content only confirms it is that scene with those objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .semantic import Match, Vectors

#: Faster or slower than this is another video, not a copy of it.
SPEEDS = (0.5, 2.0)
#: A line needs this many of a video's frames on it before its other frames are judged by it ...
MIN_ON_LINE = 4
#: ... and this share of the video's frames (a copy follows its original throughout).
MIN_SHARE_ON_LINE = 0.5
#: Only a video this share of whose frames already duplicate the other's is looked at.
MIN_COPIED = 0.5
#: Each frame's nearest pictures in the other video that may be its moment there.
NEAREST = 3
#: A line and the other video's line back agree when their speeds' product is within this factor of 1.
AGREE = 1.2
#: Lines tried (pairs of frames' nearest moments); past this many, a fixed sample of them. A line
#: is kept only with half the frames on it, so a pair of them is on it one time in four or more:
#: 1,024 draws all miss such a line with a chance of 0.75^1024.
MAX_LINES = 1024
#: Lines scored at once (a block of lines x frames x moments: 256 x 3,000 frames x 3 = 18 MB).
LINES_AT_ONCE = 256


@dataclass(frozen=True)
class TimeLine:
    """``t_other = speed * t + offset``: where the video's frame at ``t`` is in the other video."""

    other: str
    speed: float
    offset: float
    #: The video's frames on the line (within one sample).
    support: int


@dataclass(frozen=True)
class Frames:
    """Frames' videos and times, in the order of the vectors they go with."""

    video: Sequence[str]
    t: np.ndarray

    def of(self, video: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.video) == video)


def line_through(t: np.ndarray, nearest: np.ndarray, tolerance: float) -> tuple[float, float, int]:
    """(speed, offset, frames on it) of the line ``t_other = speed * t + offset`` the most frames
    lie on: frame i at time ``t[i]`` is on it when one of its nearest moments in the other video
    (``nearest[i]``, most alike first) is within ``tolerance`` seconds of it."""
    n = len(t)
    if n < 2:
        return 1.0, 0.0, 0
    if n * (n - 1) // 2 > MAX_LINES:  # a fixed sample of the pairs: memory and time bounded per video
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, n, MAX_LINES), rng.integers(0, n, MAX_LINES)
    else:
        i, j = np.triu_indices(n, 1)
    i, j = i[t[i] != t[j]], j[t[i] != t[j]]
    speed = (nearest[j, 0] - nearest[i, 0]) / (t[j] - t[i])
    ok = (speed >= SPEEDS[0]) & (speed <= SPEEDS[1])
    if not ok.any():
        return 1.0, 0.0, 0
    speed = speed[ok]
    offset = nearest[i[ok], 0] - speed * t[i[ok]]
    count, error = np.empty(len(speed), np.int64), np.empty(len(speed))
    for start in range(0, len(speed), LINES_AT_ONCE):  # lines x frames x moments, a block of lines at a time
        at = slice(start, start + LINES_AT_ONCE)
        miss = np.abs(nearest[None, :, :] - (speed[at, None] * t[None, :] + offset[at, None])[:, :, None]).min(axis=2)
        on = miss <= tolerance
        count[at], error[at] = on.sum(axis=1), np.where(on, miss, 0.0).sum(axis=1)
    best = int(np.lexsort((error, -count))[0])
    # least squares over the frames on the best line, each at its moment nearest the line
    near = np.abs(nearest - (speed[best] * t + offset[best])[:, None])
    frames = np.flatnonzero(near.min(axis=1) <= tolerance)
    moment = nearest[frames, near[frames].argmin(axis=1)]
    if len(np.unique(t[frames])) >= 2:
        s, o = np.polyfit(t[frames], moment, 1)
        if SPEEDS[0] <= s <= SPEEDS[1]:
            found = int((np.abs(nearest - (s * t + o)[:, None]).min(axis=1) <= tolerance).sum())
            if found >= count[best]:
                return float(s), float(o), found
    return float(speed[best]), float(offset[best]), int(count[best])


def _fit(frames: Frames, vectors: Vectors, mine: str, other: str, tolerance: float) -> tuple[float, float, int, int]:
    """(speed, offset, frames on the line, frames looked at) of ``mine``'s frames against ``other``'s."""
    a, b = frames.of(mine), frames.of(other)
    a, b = a[vectors.present[a]], b[vectors.present[b]]
    if len(a) < MIN_ON_LINE or not len(b):
        return 1.0, 0.0, 0, len(a)
    alike = vectors.whole[a] @ vectors.whole[b].T
    k = min(NEAREST, len(b))
    top = np.argpartition(-alike, k - 1, axis=1)[:, :k] if len(b) > k else np.tile(np.arange(len(b)), (len(a), 1))
    # most alike first; equal ones by their place, so the order never depends on the partition
    order = np.lexsort((top, -np.take_along_axis(alike, top, axis=1)), axis=1)
    nearest = frames.t[b][np.take_along_axis(top, order, axis=1)]
    speed, offset, support = line_through(frames.t[a], nearest, tolerance)
    return speed, offset, support, len(a)


def time_lines(frames: Frames, vectors: Vectors, copied: dict[tuple[str, str], float],
               interval: dict[str, float]) -> dict[str, list[TimeLine]]:
    """Per video, the lines to the videos it is a copy in time of, among the pairs of ``copied``
    (the share of the first's frames found duplicates of the second's) at ``MIN_COPIED`` or more:
    ``frames`` with ``vectors`` are the videos' frames with an embedding. A line is kept only if
    the other video's own line back to this one says the same speed (their product within
    ``AGREE``): in a still scene that looks alike at any time, a line through look-alikes can be
    found either way, but two that do not invert each other are no time line."""
    lines: dict[str, list[TimeLine]] = {}
    for (mine, other), share in sorted(copied.items()):
        if share < MIN_COPIED:
            continue
        speed, offset, support, looked = _fit(frames, vectors, mine, other, interval.get(other, 1.0))
        if support < max(MIN_ON_LINE, MIN_SHARE_ON_LINE * looked):
            continue
        back, _, back_support, back_looked = _fit(frames, vectors, other, mine, interval.get(mine, 1.0))
        if back_support >= max(MIN_ON_LINE, MIN_SHARE_ON_LINE * back_looked) and \
                abs(np.log(speed * back)) <= np.log(AGREE):
            lines.setdefault(mine, []).append(TimeLine(other, speed, offset, support))
    return lines


def copies_in_time(frames: Frames, lines: dict[str, list[TimeLine]], still_kept: Sequence[int],
                   found: dict[int, Match[int]], interval: dict[str, float],
                   same: Callable[[int, int], Match[int] | None]) -> dict[int, Match[int]]:
    """The frames of ``still_kept`` (places in the walk ``frames`` describes, in walk order) that a
    time line says show the moment of a frame walked before them: ``same`` as a frame of the other
    video within one sample of where the line maps them, each standing with that frame's kept
    frame (itself, or the one ``found`` says it duplicates: the content pass's, then this pass's)."""
    found = dict(found)
    new: dict[int, Match[int]] = {}
    places = {line.other: frames.of(line.other) for video_lines in lines.values() for line in video_lines}
    for node in still_kept:
        best: Match[int] | None = None
        for line in lines.get(frames.video[node], []):
            there = line.speed * float(frames.t[node]) + line.offset
            others = places[line.other]
            near = others[(np.abs(frames.t[others] - there) <= interval.get(line.other, 1.0)) & (others < node)]
            for g in near[np.argsort(np.abs(frames.t[near] - there), kind="stable")].tolist():
                match = same(node, g)  # the frame at that moment; it stands with its own kept frame
                if match is None:
                    continue
                kept = found[g].of if g in found else g
                match = replace(match, of=kept, via=None if kept == g else g, speed=round(line.speed, 2))
                if best is None or (match.objects, match.picture) > (best.objects, best.picture):
                    best = match
        if best is not None:
            found[node] = new[node] = best
    return new
