"""What the stages of a run share, in two parts.

:class:`StageEnv` is what a stage may use wherever it runs, in this process or on a Ray worker:
the settings, the output folder's layout and this process's shared helpers. It holds no registry:
a stage says what changed (:class:`~video_miner.stages.changes.StageChanges`) and the driver
commits it. :class:`MiningContext` is the driver's side of the run: the registry, the counters,
the first fault of the machine, and the hooks to stop the run or start reading a live stream.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from typing_extensions import Unpack

from ..config import MinerConfig
from ..detect.detector import resolve_device
from ..detect.hints import DetectionCache, KeptHints, hints_for
from ..detect.shots import ShotDetector
from ..download.host_gate import HostGate
from ..errors import LiveUnsupported, MinerError, disk_full
from ..media.same_content import SameContent
from ..records import FrameCounts, State
from ..store.files import free_gb, remove_tree
from ..store.layout import OutputLayout
from ..store.registry import Registry
from .changes import LiveStart, StageChanges


@dataclass
class FrameCounters:
    """Frame-level totals for the progress footer and metrics (stage threads add to them)."""

    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: Unpack[FrameCounts]) -> None:
        with self._lock:
            self._counts.update(deltas)

    def get(self, key: str) -> int:
        assert key in FrameCounts.__annotations__, key
        with self._lock:
            return self._counts[key]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def check_free_space(config: MinerConfig, output: Path, writing: Path) -> None:
    floor = config.download.min_free_gb
    if floor > 0 and free_gb(output) < floor:
        raise disk_full(writing, floor=f"less than {floor} GB free (download.min_free_gb)")


@dataclass
class StageEnv:
    config: MinerConfig
    layout: OutputLayout
    #: Detections by frame content, shared by the filter workers of this process.
    detections: DetectionCache = field(default_factory=DetectionCache)
    hints: KeptHints | None = None
    #: Inputs with identical bytes decode once: the first one's committed frames folder, by content.
    same_content: SameContent[Path] = field(default_factory=SameContent)
    #: Politeness per host for the downloads of this process.
    hosts: HostGate = field(init=False)
    #: Where each video's shots start (a ``kind: shots`` model), loaded on first use.
    shots: ShotDetector | None = field(init=False)

    def __post_init__(self) -> None:
        self.hints = self.hints or hints_for(self.config)
        shots = self.config.shots_model
        self.shots = None if shots is None else ShotDetector(
            shots.name, 0.5 if shots.conf is None else shots.conf, resolve_device(shots.device or
                                                                                   self.config.filter.device))
        download = self.config.download
        self.hosts = HostGate(download.max_per_host, download.sleep_s, backoff_s=max(1.0, download.backoff_s))

    @classmethod
    def of(cls, config: MinerConfig, output: Path) -> StageEnv:
        return cls(config, OutputLayout(output))

    @property
    def output(self) -> Path:
        return self.layout.output

    def check_free_space(self, writing: Path) -> None:
        """Before writing a video or its frames: stop (the video stays unfinished) below the floor."""
        check_free_space(self.config, self.output, writing)


@dataclass
class MiningContext:
    env: StageEnv
    registry: Registry
    counters: FrameCounters = field(default_factory=FrameCounters)
    #: Set by the runner: stop taking new videos (disk floor reached).
    request_stop: Callable[[], None] = lambda: None
    #: The first fault of the machine a stage met (disk full, no permission): the run stops.
    fault: MinerError | None = None
    #: Set by the local engine: hand a source found to be live (a yt-dlp URL) to the live readers.
    go_live: Callable[[LiveStart], None] | None = None

    @property
    def config(self) -> MinerConfig:
        return self.env.config

    @property
    def layout(self) -> OutputLayout:
        return self.env.layout

    @property
    def output(self) -> Path:
        return self.env.output

    def environment_fault(self, error: MinerError) -> None:
        if self.fault is None:
            self.fault = error
        self.request_stop()

    def commit(self, changes: StageChanges) -> set[str]:
        """Apply what a stage call changed; returns the new videos that were done already (their
        messages go no further)."""
        registry = self.registry
        done: set[str] = set()
        for video in changes.new_videos:
            registry.upsert_video(video.video_id, input=video.input, normalized=video.normalized, kind=video.kind,
                                  order=video.order, parent=video.parent, config_hash=video.config_hash)
            row = registry.video(video.video_id)
            if row is not None and row.state is State.DONE:
                done.add(video.video_id)
        for video_id in changes.attempts:
            registry.bump_attempts(video_id)
        for video_id, update in changes.updates:
            if video_id not in done:
                registry.update(video_id, update)
        for video_id, frames in changes.completed:
            registry.complete_video(video_id, frames)
        for path in changes.removals:
            remove_tree(path)
        if changes.counts:
            self.counters.add(**changes.counts)
        for start in changes.live:
            if self.go_live is None:
                raise LiveUnsupported(f"{start.source.raw} is a live stream")
            registry.upsert_video(start.source.video_id, input=start.source.raw, normalized=start.source.normalized,
                                  kind="live", order=start.source.order)
            self.go_live(start)
        return done
