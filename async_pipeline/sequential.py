"""The same stages without queues: each item goes through every stage before the next starts
(or ``jobs`` items at a time). One instance of each stage serves every item, so a model loads
once; instances that are not ``thread_safe`` are used by one item at a time."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, nullcontext
from types import FrameType
from typing import Any

from .message import StageMessage
from .spec import PipelineError, StageSpec
from .stats import EventCallback, ItemOutcome, OutcomeTracker, RunResult, StageSnapshot, Status
from .worker import BaseStageWorker, FatalStageError, as_messages, backoff_delay, is_async_worker, should_retry


class SequentialRunner:
    def __init__(
        self,
        stages: Sequence[StageSpec],
        *,
        jobs: int = 1,
        on_event: EventCallback | None = None,
        handle_signals: bool = False,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.specs = list(stages)
        self.jobs = jobs
        self.handle_signals = handle_signals
        self._tracker = OutcomeTracker([s.name for s in self.specs], on_event)
        for spec in self.specs:
            self._tracker.stages[spec.name].workers = 1
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()

    def snapshot(self) -> dict[str, StageSnapshot]:
        with self._stats_lock:
            return {name: st.snapshot() for name, st in self._tracker.stages.items()}

    def request_stop(self) -> None:
        """Start no new item; items already running finish."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        self.request_stop()

    def run(self, inputs: Iterable[StageMessage]) -> RunResult:
        workers = [spec.worker() for spec in self.specs]
        for spec, worker in zip(self.specs, workers, strict=True):
            worker.progress_sink = self._tracker.stages[spec.name].report_progress
            self._tracker.stages[spec.name].progress_unit = worker.progress_unit
        locks = [nullcontext() if w.thread_safe else threading.Lock() for w in workers]
        previous: dict[signal.Signals, Any] = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        source = iter(inputs)
        try:
            with ExitStack() as stack:
                for spec, worker in zip(self.specs, workers, strict=True):
                    started = time.perf_counter()
                    try:
                        worker.setup()
                    except Exception as exc:
                        raise PipelineError(spec.name, exc) from exc
                    self._tracker.stages[spec.name].setup_seconds += time.perf_counter() - started
                    stack.callback(worker.close)
                self._run_items(source, workers, locks)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        pending = [m.item_id for m in source]
        return self._tracker.result(pending, stopped=self._stop.is_set())

    def _run_items(self, source: Iterable[StageMessage], workers: list[BaseStageWorker], locks: list[Any]) -> None:
        running: set[Future[None]] = set()
        # Batcher clients: the items that may be inside a stage at once (one where the instance is locked).
        clients = [self.jobs if w.thread_safe else 1 for w in workers]
        for spec, n in zip(self.specs, clients, strict=True):
            for batcher in spec.batchers:
                batcher.join(n)
        try:
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="sequential") as pool:
                for msg in source:
                    if self._tracker.admit(msg.item_id):
                        running.add(pool.submit(self._run_item, msg, workers, locks))
                    while len(running) >= self.jobs:
                        running = _wait_some(running)
                    if self._stop.is_set():
                        break
                while running:
                    # No new item starts: a batch need not wait for the slots that went idle.
                    clients = self._shrink_clients(clients, len(running))
                    running = _wait_some(running)
        finally:
            self._shrink_clients(clients, 0)

    def _shrink_clients(self, clients: list[int], at_most: int) -> list[int]:
        kept = [min(n, at_most) for n in clients]
        for spec, before, after in zip(self.specs, clients, kept, strict=True):
            for batcher in spec.batchers:
                if before > after:
                    batcher.leave(before - after)
        return kept

    def _run_item(self, msg: StageMessage, workers: list[BaseStageWorker], locks: list[Any]) -> None:
        frontier = [(0, msg)]
        while frontier:
            idx, part = frontier.pop(0)
            spec = self.specs[idx]
            outputs = self._run_stage(idx, workers[idx], locks[idx], part)
            if outputs is None:
                continue
            self._tracker.fan_out(msg.item_id, len(outputs))
            if idx + 1 == len(self.specs):
                for out in outputs:
                    self._tracker.settle_part(ItemOutcome(msg.item_id, Status.DONE, spec.name, outputs=[out]))
            else:
                frontier.extend((idx + 1, out) for out in outputs)

    def _run_stage(self, idx: int, worker: BaseStageWorker, lock: Any, msg: StageMessage) -> list[StageMessage] | None:
        """Run one stage on one part; None when the part ended here (failed or dropped)."""
        spec = self.specs[idx]
        st = self._tracker.stages[spec.name]
        with self._stats_lock:
            st.items_in += 1
            st.busy += 1
        self._tracker.emit("started", spec.name, msg.item_id)
        started = time.perf_counter()
        error: Exception | None = None
        outputs: list[StageMessage] = []
        try:
            outputs = self._process_with_retries(worker, lock, st.name, msg)
        except FatalStageError as exc:
            raise PipelineError(spec.name, exc) from exc
        except Exception as exc:
            error = exc
        elapsed = time.perf_counter() - started
        st.clear_progress(msg.item_id)
        with self._stats_lock:
            st.busy -= 1
            st.busy_seconds += elapsed
            st.durations.add(elapsed)
            st.failed += error is not None
            st.dropped += error is None and not outputs
            st.items_out += len(outputs)
        if error is not None:
            self._tracker.emit("failed", spec.name, msg.item_id, elapsed, error)
            self._tracker.settle_part(ItemOutcome(msg.item_id, Status.FAILED, spec.name, type(error).__name__, str(error)))
            return None
        self._tracker.emit("finished", spec.name, msg.item_id, elapsed)
        if not outputs:
            self._tracker.emit("dropped", spec.name, msg.item_id)
            self._tracker.settle_part(ItemOutcome(msg.item_id, Status.DROPPED, spec.name))
            return None
        return outputs

    def _process_with_retries(self, worker: BaseStageWorker, lock: Any, stage: str, msg: StageMessage) -> list[StageMessage]:
        while True:
            try:
                with lock:
                    output: Any = worker.process(msg)
                    if is_async_worker(worker):
                        output = asyncio.run(output)
                return as_messages(output)
            except Exception as exc:
                if isinstance(exc, FatalStageError) or not should_retry(worker, exc, msg.attempt):
                    raise
                with self._stats_lock:
                    self._tracker.stages[stage].retries += 1
                self._tracker.emit("retry", stage, msg.item_id, error=exc)
                time.sleep(backoff_delay(worker, msg.attempt))
                msg = msg.evolve(attempt=msg.attempt + 1, timestamp=msg.timestamp)


def _wait_some(running: set[Future[None]]) -> set[Future[None]]:
    """Wait for at least one item; a PipelineError from any item ends the run. Returns the rest."""
    done, rest = wait(running, return_when=FIRST_COMPLETED)
    for fut in done:
        fut.result()
    return rest
