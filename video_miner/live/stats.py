"""What one live source did: metrics.json's ``live`` entry, the live table's row, Prometheus."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

from typing_extensions import Unpack

from async_pipeline import Distribution

from ..records import LiveCounts
from ..redact import DEFAULT, Redactor


@dataclass
class LiveStats:
    """What one source did: metrics.json's ``live`` entry, the live table's row, Prometheus."""

    #: The source as shown: its credentials masked.
    source: str
    redactor: Redactor = field(default=DEFAULT, repr=False)
    state: str = "connecting"  # connecting, live, retrying, ended, failed
    frames_captured: int = 0
    frames_sampled: int = 0
    #: Dropped by the prefilters (blurry, static): never written.
    frames_filtered: int = 0
    #: Thrown away by the live queue's policy because the detector was behind.
    frames_dropped: int = 0
    frames_decided: int = 0
    #: Packets the decoder could not use (joined mid-stream before a keyframe, damage in transit).
    frames_corrupt: int = 0
    candidates: int = 0
    #: With several models: decided without a slow model's answer, or dropped waiting for it.
    frames_partial: int = 0
    frames_expired: int = 0
    reconnects: int = 0
    gap_seconds: float = 0.0
    error: str | None = None
    latency: Distribution = field(default_factory=Distribution)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: Unpack[LiveCounts]) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            return LiveSnapshot(self.source, self.state, self.frames_captured, self.frames_sampled, self.frames_filtered,
                                self.frames_dropped, self.frames_decided, self.frames_corrupt, self.candidates,
                                self.frames_partial, self.frames_expired, self.reconnects, round(self.gap_seconds, 3),
                                round(self.latency.quantile(0.5), 4),
                                round(self.latency.quantile(0.95), 4), round(self.latency.max, 4),
                                self.redactor.text(self.error) if self.error else None)


@dataclass(frozen=True)
class LiveSnapshot:
    """One source's figures at a moment (``as_json``: metrics.json's ``live`` entry)."""

    source: str
    state: str
    frames_captured: int
    frames_sampled: int
    frames_filtered: int
    frames_dropped: int
    frames_decided: int
    frames_corrupt: int
    candidates: int
    frames_partial: int
    frames_expired: int
    reconnects: int
    gap_seconds: float
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
