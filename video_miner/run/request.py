"""What a run is asked to do, and what it reports at the end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from async_pipeline import RunResult

from ..config import MinerConfig
from ..dataset.export import ExportSummary
from ..live.stats import LiveSnapshot

Engine = Literal["async", "sequential", "ray"]


class StopSignal:
    """Stops a run from any thread as its first Ctrl-C does (no new work; what is in flight
    finishes, then the export): for programs that run video-miner inside their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._is_set = False
        self._listeners: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            self._is_set = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def is_set(self) -> bool:
        with self._lock:
            return self._is_set

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (thread-safe, once) when the signal is set, or now if it is."""
        with self._lock:
            if not self._is_set:
                self._listeners.append(listener)
                return
        listener()


@dataclass
class RunRequest:
    inputs: list[str]
    config: MinerConfig
    engine: Engine = "async"
    jobs: int = 1
    fresh: bool = False
    retry_failed: bool = False
    handle_signals: bool = False
    #: With engine "ray": the cluster to join (else RAY_ADDRESS, else a local instance).
    ray_address: str | None = None
    #: Folders that keep receiving videos: the run goes on until stopped (or ``duration_s``).
    watch: list[Path] = field(default_factory=list)
    #: Stop taking new work after this many seconds (live sources, watched folders).
    duration_s: float | None = None
    #: The command line, shown to a second run on the same output folder.
    command: list[str] | None = None
    #: Set from another thread to stop the run as Ctrl-C does.
    stop: StopSignal | None = None


@dataclass
class Failure:
    video_id: str
    input: str
    kind: str
    message: str

    def line(self) -> str:
        return f"{self.input}: {self.kind}: {self.message}"


@dataclass
class MiningReport:
    output: Path
    videos_total: int
    videos_done: int
    videos_skipped: int
    failures: list[Failure]
    export: ExportSummary
    counters: dict[str, int]
    wall_seconds: float
    stopped: bool
    #: (input, warning) for videos that completed with a problem, e.g. a truncated file.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    result: RunResult | None = None
    #: Per live source: frames captured, dropped, decided, latency (metrics.json's "live").
    live: dict[str, LiveSnapshot] = field(default_factory=dict)
    #: Every failed input of the run, a line each (class, message, input): ``failures.tsv``.
    failures_file: Path | None = None
