"""What observers (the live display, metrics) read of a run: its pipelines' stages merged, its
video-level progress, its frame counters and the live sources' figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from async_pipeline import PipelineEvent, StageSnapshot

from ..live.hub import LiveHub
from ..live.stats import LiveSnapshot
from ..stages.context import FrameCounters
from ..store.registry import Registry


class Runner(Protocol):
    def snapshot(self) -> dict[str, StageSnapshot]: ...
    def request_stop(self) -> None: ...


@dataclass
class RunProgress:
    """Video-level progress: fed by the engine's events."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    #: Videos that left the pipeline (done, dropped or failed). One int: reads and writes are atomic.
    finished: int = 0
    #: No total is known: watched folders add videos as they come.
    open_ended: bool = False

    def on_event(self, event: PipelineEvent) -> None:
        if event.kind == "item_done":
            self.finished += 1


@dataclass
class RunView:
    counters: FrameCounters
    registry: Registry
    progress: RunProgress
    runners: list[Runner] = field(default_factory=list)
    hub: LiveHub | None = None

    def snapshot(self) -> dict[str, StageSnapshot]:
        merged: dict[str, StageSnapshot] = {}
        for runner in self.runners:
            merged.update(runner.snapshot())
        return merged

    def request_stop(self) -> None:
        for runner in self.runners:
            runner.request_stop()

    def live(self) -> dict[str, LiveSnapshot]:
        """Per live source (by its input as given)."""
        return {s.source: s.snapshot() for s in self.hub.stats.values()} if self.hub is not None else {}
