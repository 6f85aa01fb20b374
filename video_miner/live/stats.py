"""What one live source did: metrics.json's ``live`` entry, the live table's row, Prometheus."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict
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
    #: With tracks on: objects that came into view (tracks started).
    tracks_new: int = 0
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
            # the counters under the record's own names; the figures made of them after
            counts = {name: getattr(self, name) for name in LiveFigures.model_fields if hasattr(self, name)}
            return LiveSnapshot(**{
                **counts, "source": self.source, "gap_seconds": round(self.gap_seconds, 3),
                "latency_p50_s": round(self.latency.quantile(0.5), 4),
                "latency_p95_s": round(self.latency.quantile(0.95), 4), "latency_max_s": round(self.latency.max, 4),
                "error": self.redactor.text(self.error) if self.error else None})


class LiveFigures(BaseModel):
    """One live source's figures: metrics.json's ``live`` entry (read back untrusted: a missing
    figure reads as zero, a key it does not name is kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    state: str = ""
    frames_captured: int = 0
    frames_sampled: int = 0
    frames_filtered: int = 0
    frames_dropped: int = 0
    frames_decided: int = 0
    frames_corrupt: int = 0
    candidates: int = 0
    frames_partial: int = 0
    frames_expired: int = 0
    reconnects: int = 0
    tracks_new: int = 0
    gap_seconds: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_max_s: float = 0.0
    error: str | None = None


class LiveSnapshot(LiveFigures):
    """One source's figures at a moment, and which source."""

    source: str

    def figures(self) -> LiveFigures:
        return LiveFigures.model_validate(self.model_dump(exclude={"source"}))
