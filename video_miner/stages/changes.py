"""What one stage call changed, as typed records: the driver commits them to the registry and the
counters before the next stage sees the video. A stage never writes the registry itself, so it runs
unchanged in this process or on a Ray worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from typing_extensions import Unpack

from ..inputs.listing import Source
from ..records import FrameCounts, FrameRow, VideoUpdate


@dataclass(frozen=True)
class NewVideo:
    """A video found by a stage: a playlist's entry."""

    video_id: str
    input: str
    normalized: str
    kind: str
    order: int
    parent: str
    config_hash: str


@dataclass(frozen=True)
class LiveStart:
    """A URL found to be a live stream: read it as one (``url``: its stream; ``ends_cleanly``: its
    end of stream means it ended, as a playlist-based stream's does, rather than that it dropped)."""

    source: Source
    url: str
    options: dict[str, str]
    ends_cleanly: bool


@dataclass
class StageChanges:
    """Filled by a stage as it goes, so what it did before a failure is committed too."""

    #: Videos found (applied first: a video already done is not done again).
    new_videos: list[NewVideo] = field(default_factory=list)
    updates: list[tuple[str, VideoUpdate]] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    counts: FrameCounts = field(default_factory=lambda: FrameCounts())
    live: list[LiveStart] = field(default_factory=list)
    #: Videos whose frames are all decided: recorded, and the video done, in one transaction.
    completed: list[tuple[str, list[FrameRow]]] = field(default_factory=list)
    #: Work files no longer needed once the rest is committed (a file, or a folder and all in it).
    removals: list[Path] = field(default_factory=list)

    def update(self, video_id: str, update: VideoUpdate) -> None:
        self.updates.append((video_id, update))

    def attempt(self, video_id: str) -> None:
        self.attempts.append(video_id)

    def count(self, **deltas: Unpack[FrameCounts]) -> None:
        counts = cast(dict[str, int], self.counts)  # the names were checked where the call is written
        for key, value in deltas.items():
            counts[key] = counts.get(key, 0) + int(value)  # type: ignore[call-overload]

    def found(self, video: NewVideo) -> None:
        self.new_videos.append(video)

    def go_live(self, start: LiveStart) -> None:
        self.live.append(start)

    def complete(self, video_id: str, frames: list[FrameRow]) -> None:
        self.completed.append((video_id, frames))

    def remove(self, path: Path) -> None:
        self.removals.append(path)
