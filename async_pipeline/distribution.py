"""A bounded summary of many observations (durations, latencies, batch sizes): exact count, sum,
min and max, and quantiles from a log-scale histogram, so memory stays the same however long a
run goes (a week of camera frames as much as five videos)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

#: Bins per decade: adjacent bin edges differ by 10^(1/40), so a quantile is within ~3% of the truth.
_PER_DECADE = 40
_LOW_EXP = -7  # 0.1 microsecond
_HIGH_EXP = 7  # ~4 months in seconds
_BINS = (_HIGH_EXP - _LOW_EXP) * _PER_DECADE + 2  # plus one bin below and one above the range


def _bin(value: float) -> int:
    if value <= 10.0**_LOW_EXP:
        return 0
    k = math.floor((math.log10(value) - _LOW_EXP) * _PER_DECADE) + 1
    return min(k, _BINS - 1)


def _bin_value(k: int) -> float:
    """The geometric middle of bin ``k``."""
    return float(10.0 ** (_LOW_EXP + (k - 0.5) / _PER_DECADE))


@dataclass
class Distribution:
    """Thread-safe; ``add`` is O(1) and memory is a fixed array of counts."""

    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = 0.0
    _counts: list[int] = field(default_factory=lambda: [0] * _BINS, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, value: float) -> None:
        value = max(0.0, float(value))
        with self._lock:
            self.count += 1
            self.total += value
            self.min = min(self.min, value)
            self.max = max(self.max, value)
            self._counts[_bin(value)] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1), within a bin's width, clamped to the exact min and max."""
        with self._lock:
            if not self.count:
                return 0.0
            rank = q * (self.count - 1)
            seen = 0
            for k, n in enumerate(self._counts):
                seen += n
                if seen > rank:
                    return min(self.max, max(self.min, _bin_value(k)))
            return self.max

    def summary(self, digits: int = 4) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": round(self.mean, digits),
            "p50": round(self.quantile(0.5), digits),
            "p95": round(self.quantile(0.95), digits),
            "max": round(self.max, digits),
        }
