"""What every stage of one mining run shares: config, registry, folders, live counters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import MinerConfig
from .registry import Registry


@dataclass
class FrameCounters:
    """Frame-level totals for the progress footer and metrics (stage threads add to them)."""

    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: int) -> None:
        with self._lock:
            self._counts.update(deltas)

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass
class DetectionCache:
    """Detections by the exact bytes of a frame, shared by all filter workers.

    Only byte-identical frames (the same video listed twice, re-uploads of one file) reuse a result:
    the model is deterministic, so the dataset is the same whichever video came first.
    """

    _by_digest: dict[bytes, list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, digest: bytes) -> list[dict[str, Any]] | None:
        with self._lock:
            return self._by_digest.get(digest)

    def put(self, digest: bytes, detections: list[dict[str, Any]]) -> None:
        with self._lock:
            self._by_digest[digest] = detections


@dataclass
class MiningContext:
    config: MinerConfig
    registry: Registry
    output: Path
    counters: FrameCounters = field(default_factory=FrameCounters)
    detections: DetectionCache = field(default_factory=DetectionCache)
    #: Set by the runner: stop taking new videos (disk floor reached).
    request_stop: Callable[[], None] = lambda: None

    @property
    def work(self) -> Path:
        return self.output / "work"

    @property
    def videos_dir(self) -> Path:
        return self.work / "videos"

    @property
    def frames_dir(self) -> Path:
        return self.work / "frames"

    @property
    def candidates_dir(self) -> Path:
        return self.work / "candidates"

    @property
    def dataset_dir(self) -> Path:
        return self.output / "dataset"
