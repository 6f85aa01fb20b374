"""Tracks on live sources: each segment's boxes joined into tracks frame by frame, as the live
collect stage commits them (files are tracked a whole video at once, :mod:`video_miner.detect.tracking`;
a live frame is committed as it comes, so an export at any moment has it).

Where live differs from files, and why:

- A box gets its track once the track is confirmed (seen on ``track.min_frames`` frames): the
  frames holding its first boxes are handed back to be committed again, with the id.
- A frame the detector saw without a track's object, between two that found it, gets the box the
  track says it missed when the second one comes: the frame is handed back then, and the collect
  stage keeps the picture of the last frame without the classes until its segment's next frame.
- Samples the reader did not hand on (static, blurred, or dropped because the detector was behind)
  are shown to the tracker as the last frame it saw, so tracks age with time as on files (an empty
  room for a minute ends a track): at most as many as the tracker remembers.
- No repairs that need the whole video (joining a track's pieces, stitching boxes by look).
- A frame decided after a later one of its segment (the filter's workers overtake each other when
  the detector is behind) keeps no track: the tracker cannot go back in time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import TrackConfig
from ..detect.tracking import Follower, TrackSummary, mark_class_change, mark_missed, score_views
from ..records import Decision, Detection, FrameEmbedding, FrameRecord


@dataclass
class _Seen:
    """A frame the detector saw, with its rank among the seen frames of its segment."""

    frame: FrameRecord
    rank: int


@dataclass
class Step:
    """What one frame changed: the earlier frames to commit again (a track's id, a hard mark, a
    missed box), the tracks it confirmed (id, class, the time of their first box), and whether the last frame without the classes
    (whose picture the collect stage held) now shows them, or its picture may go."""

    again: list[FrameRecord] = field(default_factory=list)
    new_tracks: list[tuple[int, str, float]] = field(default_factory=list)
    recovered: FrameRecord | None = None
    release: FrameRecord | None = None
    #: Hard marks this frame gave (to it or to earlier frames).
    hard: int = 0


class SegmentTracks:
    """One segment's tracker and what it remembers: the last frame it saw, each track's last two
    views, the boxes of tracks not confirmed yet; all bounded by how long the tracker keeps a lost
    track."""

    def __init__(self, cfg: TrackConfig, conf: float, reid: bool, no_class_reason: str) -> None:
        self.cfg, self.reid, self.no_class_reason = cfg, reid, no_class_reason
        self.follower = Follower(cfg, conf, reid)
        self.memory = max(1, round(cfg.keep_lost_s * cfg.fps))
        self.summary = TrackSummary(0, Counter())
        self.rank = -1
        self.index: int | None = None
        self.last: _Seen | None = None
        #: The boxes (and their features) of the last frame as the tracker saw them, before any
        #: mark: what a sample it did not see repeats.
        self.shown: tuple[list[Detection], np.ndarray | None] | None = None
        self.ids: dict[int, int] = {}  # the tracker's id -> the track's (1, 2, ... by confirmation)
        self.pending: dict[int, list[tuple[_Seen, int]]] = {}  # unconfirmed: the tracker's id -> boxes
        self.views: dict[int, list[_Seen]] = {}  # a track's last two frames, older first

    def see(self, frame: FrameRecord, image: Path) -> Step:
        """Track ``frame`` (decided, its picture at ``image``) and say what changed."""
        step = Step()
        if self.index is not None and frame.index <= self.index:
            return step  # overtaken by a later frame: no going back
        if frame.decision not in (Decision.CANDIDATE, Decision.NEGATIVE):
            return step  # deferred or dropped: no evidence either way
        self._age(frame.index)
        marks = self.summary.hard_marks
        self.index, self.rank = frame.index, self.rank + 1
        seen = _Seen(frame, self.rank)
        if frame.detections:
            score_views(frame, image, every=True)
        self.shown = (list(frame.detections), self._features(frame))
        raw_ids = self.follower.see(*self.shown)
        confirmed: list[int] = []
        for box, raw in sorted(raw_ids.items()):
            self.pending.setdefault(raw, []).append((seen, box))
            if raw in self.ids or len(self.pending[raw]) >= self.cfg.min_frames:
                confirmed.append(raw)
        # numbered as on files: by first appearance, then from left to right
        first = {raw: self.pending[raw][0] for raw in confirmed}
        for raw in sorted(confirmed, key=lambda r: (first[r][0].rank, first[r][0].frame.detections[first[r][1]].xywhn[0])):
            self._confirm(raw, step)
        self._hard(seen, step)
        previous, self.last = self.last, seen
        if previous is not None and previous.frame.decision == Decision.NEGATIVE:
            step.release = previous.frame
        self._forget()
        step.hard = self.summary.hard_marks - marks
        return step

    def _age(self, index: int) -> None:
        """Show the tracker the samples between the last frame it saw and this one as repeats of it."""
        if self.index is None or self.shown is None:
            return
        for _ in range(min(index - self.index - 1, self.memory + 1)):
            self.follower.repeat(*self.shown)

    def _features(self, frame: FrameRecord) -> np.ndarray | None:
        """The frame's box embeddings for the tracker's appearance cue; a box without one looks like
        nothing in particular (a constant vector: the tracker compares only tracks with features)."""
        if not self.reid or not frame.detections:
            return None
        n = len(frame.detections)
        if frame.embedding is not None:
            boxes = FrameEmbedding.from_bytes(frame.embedding).boxes
            if boxes.shape[0] >= n:
                return boxes[:n]
            width = boxes.shape[1]
        else:
            width = 1
        return np.full((n, width), 1 / np.sqrt(width), dtype=np.float32)

    def _confirm(self, raw: int, step: Step) -> None:
        """Give the boxes held for ``raw`` their track (a new one at confirmation)."""
        if raw not in self.ids:
            self.ids[raw] = len(self.ids) + 1
            self.summary.tracks += 1
        track = self.ids[raw]
        for seen, box in self.pending.pop(raw):
            frame = seen.frame
            frame.detections[box] = replace(frame.detections[box], track=track)
            views = self.views.setdefault(track, [])
            if not views:
                step.new_tracks.append((track, frame.detections[box].label, frame.t))
            views.append(seen)
            del views[:-3]  # enough for a class changed for one frame
            if seen.rank != self.rank and frame not in step.again:  # committed already
                step.again.append(frame)

    def _hard(self, seen: _Seen, step: Step) -> None:
        """Marks along each track this frame shows: a class changed for one frame, or a frame
        between this one and the track's last that did not find it."""
        for track in sorted({d.track for d in seen.frame.detections if d.track is not None}):
            views = self.views[track]
            if len(views) >= 3:
                three = [v.frame for v in views[-3:]]
                if mark_class_change(three, track, 0, 1, 2, self.summary) and three[1] not in step.again:
                    step.again.append(three[1])
            before = views[-2] if len(views) >= 2 else None
            middle = self.last  # the frame seen just before this one
            if before is not None and middle is not None and seen.rank - before.rank == 2:
                frames = [before.frame, middle.frame, seen.frame]
                negative = middle.frame.decision == Decision.NEGATIVE
                if mark_missed(frames, track, 0, 1, 2, self.summary, self.no_class_reason):
                    if middle.frame not in step.again:
                        step.again.append(middle.frame)
                    if negative and middle.frame.decision == Decision.CANDIDATE:
                        step.recovered = middle.frame

    def _forget(self) -> None:
        """Drop what no later frame can need: tracks and unconfirmed boxes not seen for longer than
        the tracker keeps a lost track."""
        horizon = self.rank - self.memory - 2
        self.pending = {raw: boxes for raw, boxes in self.pending.items() if boxes[-1][0].rank >= horizon}
        self.views = {track: views for track, views in self.views.items() if views[-1].rank >= horizon}


class LiveTracks:
    """The tracks of every live source of a run, its current segment's (one caller at a time: the
    live collect stage). A source's new segment (a reconnection) starts new tracks, and the old
    segment's tracker goes: memory stays one tracker per source however often a camera drops."""

    def __init__(self, cfg: TrackConfig, conf: float, reid: bool, no_class_reason: str) -> None:
        self.cfg, self.conf, self.reid, self.no_class_reason = cfg, conf, reid, no_class_reason
        self.sources: dict[str, tuple[str, SegmentTracks]] = {}

    def see(self, source_id: str, video_id: str, frame: FrameRecord, image: Path) -> Step:
        current = self.sources.get(source_id)
        if current is None or current[0] != video_id:
            current = self.sources[source_id] = (video_id, SegmentTracks(self.cfg, self.conf, self.reid,
                                                                         self.no_class_reason))
        return current[1].see(frame, image)
