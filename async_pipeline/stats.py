"""Live counters per stage and the final per-item outcomes: plain data for observers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from .distribution import Distribution


class Status(StrEnum):
    DONE = "done"
    DROPPED = "dropped"
    FAILED = "failed"
    #: Never finished: the run was stopped (Ctrl-C, SIGTERM) or aborted first.
    CANCELLED = "cancelled"


@dataclass
class ItemOutcome:
    item_id: str
    status: Status
    stage: str | None = None
    error_type: str | None = None
    error: str | None = None
    #: Messages that left the last stage for this item (several after a fan-out).
    outputs: list[Any] = field(default_factory=list)


@dataclass
class StageStats:
    """Counters of one stage. Mutated only on the event loop (or under the runner's lock)."""

    name: str
    workers: int
    queue_size: int = 0
    queue_depth: int = 0
    queue_high_water: int = 0
    busy: int = 0
    items_in: int = 0
    items_out: int = 0
    dropped: int = 0
    failed: int = 0
    retries: int = 0
    #: Items the queue policy threw away (drop_oldest / drop_newest) before this stage saw them.
    queue_dropped: int = 0
    busy_seconds: float = 0.0
    #: Time the workers spent in ``setup`` (loading a model) before their first item, summed.
    setup_seconds: float = 0.0
    #: Seconds per item (bounded: a fixed histogram, however many items pass).
    durations: Distribution = field(default_factory=Distribution)
    #: What the stage's progress reports count (``"bytes"``, ``"s"``), if it reports any.
    progress_unit: str = ""
    #: Items in this stage that reported progress: item id -> (done, total or None).
    progress: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    _progress_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def idle(self) -> int:
        return self.workers - self.busy

    @property
    def avg_seconds(self) -> float:
        return self.durations.mean

    def report_progress(self, item_id: str, done: float, total: float | None) -> None:
        """From a worker thread: how far this stage is into an item."""
        with self._progress_lock:
            self.progress[item_id] = (done, total)

    def clear_progress(self, item_id: str) -> None:
        with self._progress_lock:
            self.progress.pop(item_id, None)

    def snapshot(self) -> StageSnapshot:
        return StageSnapshot(
            name=self.name, workers=self.workers, busy=self.busy, idle=self.idle, queue_size=self.queue_size,
            queue_depth=self.queue_depth, queue_high_water=self.queue_high_water, items_in=self.items_in,
            items_out=self.items_out, dropped=self.dropped, failed=self.failed, retries=self.retries,
            queue_dropped=self.queue_dropped, busy_seconds=self.busy_seconds, setup_seconds=self.setup_seconds,
            avg_seconds=self.avg_seconds, processed=self.durations.count, progress_unit=self.progress_unit,
            in_flight=self._in_flight())

    def _in_flight(self) -> dict[str, tuple[float, float | None]]:
        with self._progress_lock:
            return dict(self.progress)


@dataclass(frozen=True)
class StageSnapshot:
    """One stage's figures at a moment, as observers read them."""

    name: str
    workers: int
    busy: int
    idle: int
    queue_size: int
    queue_depth: int
    queue_high_water: int
    items_in: int
    items_out: int
    dropped: int
    failed: int
    retries: int
    #: Items the queue policy threw away before this stage saw them.
    queue_dropped: int
    busy_seconds: float
    setup_seconds: float
    avg_seconds: float
    #: Items whose processing ended (passed on, dropped or failed).
    processed: int
    progress_unit: str = ""
    #: Items in the stage that reported progress: item id -> (done, total or None).
    in_flight: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class PipelineEvent:
    """What observers are told: ``kind`` is one of started, finished, failed, dropped, retry,
    queue_dropped, item_done. ``message`` is the part concerned where one is at hand (a
    ``queue_dropped`` event carries the message the queue threw away, so its owner can clean up)."""

    kind: str
    stage: str | None
    item_id: str
    seconds: float = 0.0
    error: BaseException | None = None
    message: Any = None


EventCallback = Callable[[PipelineEvent], None]


class OutcomeTracker:
    """Settles each input item exactly once, however many parts a fan-out made of it.

    An item is open while any of its parts is still in the pipeline; when the last part ends the
    item is failed if any part failed, else done if any part reached the end, else dropped.
    With ``keep_outcomes=False`` (endless inputs, e.g. camera frames) settled items are only
    counted, so memory does not grow with the number of items.
    """

    def __init__(self, stage_names: list[str], on_event: EventCallback | None = None, keep_outcomes: bool = True) -> None:
        self.stages = {name: StageStats(name=name, workers=0) for name in stage_names}
        self._open: dict[str, int] = {}
        self._parts: dict[str, list[ItemOutcome]] = {}
        self.outcomes: dict[str, ItemOutcome] = {}
        self.order: list[str] = []
        self.counts: Counter[str] = Counter()
        self.keep_outcomes = keep_outcomes
        self._on_event = on_event
        # The sequential runner settles items from several threads.
        self._lock = threading.Lock()
        self.started_at = time.monotonic()

    def emit(self, kind: str, stage: str | None, item_id: str, seconds: float = 0.0,
             error: BaseException | None = None, message: Any = None) -> None:
        if self._on_event is not None:
            self._on_event(PipelineEvent(kind, stage, item_id, seconds, error, message))

    def admit(self, item_id: str) -> bool:
        """Register a new input; False if the id was seen already (duplicate inputs run once)."""
        with self._lock:
            if item_id in self._open or item_id in self.outcomes:
                return False
            self._open[item_id] = 1
            self._parts[item_id] = []
            if self.keep_outcomes:
                self.order.append(item_id)
            return True

    def fan_out(self, item_id: str, parts: int) -> None:
        """One part became ``parts`` parts (0 is not allowed: that is a drop)."""
        with self._lock:
            self._open[item_id] += parts - 1

    def settle_part(self, part: ItemOutcome) -> None:
        with self._lock:
            item_id = part.item_id
            self._parts[item_id].append(part)
            self._open[item_id] -= 1
            if self._open[item_id] > 0:
                return
            del self._open[item_id]
            parts = self._parts.pop(item_id)
            failed = next((p for p in parts if p.status is Status.FAILED), None)
            outputs = [o for p in parts for o in p.outputs]
            if failed is not None:
                outcome = ItemOutcome(item_id, Status.FAILED, failed.stage, failed.error_type, failed.error, outputs)
            elif any(p.status is Status.DONE for p in parts):
                outcome = ItemOutcome(item_id, Status.DONE, outputs=outputs)
            else:
                outcome = ItemOutcome(item_id, Status.DROPPED, parts[0].stage)
            self.counts[outcome.status.value] += 1
            if self.keep_outcomes:
                self.outcomes[item_id] = outcome
        self.emit("item_done", outcome.stage, item_id)

    def cancel_open(self) -> None:
        """Settle every item still in flight as cancelled (after a stop or abort)."""
        with self._lock:
            for item_id in list(self._open):
                self.counts[Status.CANCELLED.value] += 1
                if self.keep_outcomes:
                    self.outcomes[item_id] = ItemOutcome(item_id, Status.CANCELLED)
                del self._open[item_id]
                self._parts.pop(item_id, None)

    def result(self, pending: list[str], stopped: bool) -> RunResult:
        self.cancel_open()
        for item_id in pending:
            if item_id not in self.outcomes:
                self.counts[Status.CANCELLED.value] += 1
                self.order.append(item_id)
                self.outcomes[item_id] = ItemOutcome(item_id, Status.CANCELLED)
        return RunResult(
            items=[self.outcomes[i] for i in self.order],
            stages={name: s.snapshot() for name, s in self.stages.items()},
            wall_seconds=time.monotonic() - self.started_at,
            stopped=stopped,
            counts={s.value: self.counts[s.value] for s in Status},
        )


@dataclass
class RunResult:
    items: list[ItemOutcome]
    stages: dict[str, StageSnapshot]
    wall_seconds: float
    #: True when a stop request (signal or :meth:`request_stop`) cut the run short.
    stopped: bool = False
    #: Items per status; the only record of them when outcomes were not kept.
    counts: dict[str, int] = field(default_factory=dict)

    def by_status(self, status: Status) -> list[ItemOutcome]:
        return [i for i in self.items if i.status is status]

    @property
    def done(self) -> list[ItemOutcome]:
        return self.by_status(Status.DONE)

    @property
    def failed(self) -> list[ItemOutcome]:
        return self.by_status(Status.FAILED)

    @property
    def dropped(self) -> list[ItemOutcome]:
        return self.by_status(Status.DROPPED)

    @property
    def unfinished(self) -> list[ItemOutcome]:
        return self.by_status(Status.CANCELLED)

    def summary(self) -> dict[str, int]:
        if self.counts:
            return dict(self.counts)
        return {s.value: len(self.by_status(s)) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [
                {"item_id": i.item_id, "status": i.status.value, "stage": i.stage,
                 "error_type": i.error_type, "error": i.error}
                for i in self.items
            ],
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
            "wall_seconds": self.wall_seconds,
            "stopped": self.stopped,
            "summary": self.summary(),
        }
