"""metrics.json as records: one writer (:meth:`~.metrics.RunMetrics.write` builds a
:class:`MetricsFile` and :func:`write_metrics` writes it) and one reader (:func:`read_metrics`)
that ``report``, ``status`` and the tests use.

The file is untrusted when read back (anyone may edit it, an older release wrote it): every figure
is validated, one that is missing reads as zero, a key a record does not name is kept as it is (a
newer release's figures survive a rewrite by this one) and a file that is not one of these says so
in a line instead of a traceback. ``schema_version`` says which layout wrote it; a file without one
was written before it existed, in the same layout.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..live.stats import LiveFigures
from ..store.files import UnsafePath, read_json, write_json

#: The layout of metrics.json this release writes.
SCHEMA_VERSION = 1
#: A metrics.json larger than this is not one this tool wrote (its history and timeline are capped).
MAX_METRICS_BYTES = 64 << 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class StageFigures(_Record):
    """One stage over the run: items, durations, how busy it was, its queue."""

    workers: int = 0
    items_in: int = 0
    items_out: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    p50_s: float = 0.0
    p95_s: float = 0.0
    max_s: float = 0.0
    busy_seconds: float = 0.0
    setup_seconds: float = 0.0
    busy_fraction: float = 0.0
    throughput_per_s: float = 0.0
    queue_high_water: int = 0
    queue_size: int = 0
    #: The share of the run it held the others back (see :func:`~.metrics.held_back`).
    held_fraction: float = 0.0


class Bottleneck(_Record):
    stage: str
    held_fraction: float = 0.0
    busy_fraction: float = 0.0
    hint: str = ""


class Quantiles(_Record):
    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    max: float = 0.0


class BatchFigures(_Record):
    """A batcher (the detector's, or a model's): how full its batches were, how long frames waited."""

    max_batch: int = 0
    batches: int = 0
    requests: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    batch_size_mean: float = 0.0
    batch_size_p50: int = 0
    batch_fill_mean: float = 0.0
    batch_sizes: dict[str, int] = Field(default_factory=dict)
    wait_s: Quantiles = Field(default_factory=Quantiles)
    reasons: dict[str, int] = Field(default_factory=dict)
    requests_per_busy_s: float = 0.0
    max_wait_s: float = 0.0
    frames_per_s: float = 0.0
    busy_fraction: float = 0.0


class ModelFigures(_Record):
    kind: str = "detector"
    after: str | None = None
    calls: int = 0
    skipped: int = 0
    busy: int = 0
    failed: int = 0
    batches: BatchFigures | None = None


class JoinFigures(_Record):
    waiting: int = 0
    matched: int = 0
    partial: int = 0
    expired: int = 0
    wait_p50_s: float = 0.0
    wait_p95_s: float = 0.0


class ModelsFigures(_Record):
    """Several models (``models:``): each model's calls and batches, each join's outcomes."""

    models: dict[str, ModelFigures] = Field(default_factory=dict)
    joins: dict[str, JoinFigures] = Field(default_factory=dict)
    keep: str = ""


class TimelinePoint(_Record):
    t: float
    stage: str
    busy: int = 0
    queue: int = 0


class MetricsFile(_Record):
    """All of metrics.json: this run's stages, totals and bottleneck, its batchers, models and live
    sources, the stages' timeline, and the totals of the runs before it (``history``)."""

    schema_version: int = SCHEMA_VERSION
    stages: dict[str, StageFigures] = Field(default_factory=dict)
    totals: dict[str, int | float] = Field(default_factory=dict)
    bottleneck: Bottleneck | None = None
    detector: BatchFigures | None = None
    models: ModelsFigures | None = None
    live: dict[str, LiveFigures] | None = None
    #: Tracks on: the boxes marked hard (the model contradicting itself along a track), per class.
    hard_by_class: dict[str, int] | None = None
    timeline: list[TimelinePoint] = Field(default_factory=list)
    history: list[dict[str, int | float | str]] = Field(default_factory=list)


def read_metrics(path: Path) -> MetricsFile:
    """metrics.json as its record; a file that is not one says which and what to do."""
    try:
        return MetricsFile.model_validate(read_json(path, MAX_METRICS_BYTES))
    except (ValueError, UnsafePath) as exc:  # ValidationError is a ValueError
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = (f" at {'.'.join(map(str, first['loc'])) or 'the top level'}: {first['msg']}" if first
                 else f": {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        raise ConfigError(f"{path}: not a video-miner metrics file{where}; run the job again to write it anew") from exc


def write_metrics(path: Path, metrics: MetricsFile) -> None:
    """The record as metrics.json (stages in pipeline order, figures as given)."""
    data = {k: v for k, v in metrics.model_dump(mode="json").items() if v is not None}  # a section absent: not run
    write_json(path, data, path.parent, sort_keys=False)
