"""The asyncio engine: stages joined by bounded queues, run under one TaskGroup.

End of stream is explicit: the feeder sends one end marker per worker of the first stage; the last
worker of a stage to see its marker sends one per worker of the next stage. No stage ever polls,
and the run ends exactly when the last marker reaches the last stage.

Inputs are an iterable or an async iterable: the latter may be endless (camera frames, files that
appear in a folder); a stop request then ends it, and the run finishes what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .batcher import BatcherClosed
from .message import StageMessage
from .spec import PipelineError, QueuePolicy, StageSpec
from .stats import EventCallback, ItemOutcome, OutcomeTracker, RunResult, StageSnapshot, Status
from .worker import BaseStageWorker, FatalStageError, as_messages, backoff_delay, is_async_worker, should_retry

_EOS = object()
Envelope = tuple[str, StageMessage]
Inputs = Iterable[StageMessage] | AsyncIterable[StageMessage]


class _Aborted(Exception):
    """Raised inside the task group to cancel everything once a stop's grace period is over."""


class _StageCrashed(Exception):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(stage)
        self.stage = stage
        self.cause = cause


class AsyncPipelineOrchestrator:
    """Runs ``stages`` over the inputs and returns every item's outcome.

    ``grace_seconds``: after a stop request, how long in-flight items may finish before they are
    cancelled. ``handle_signals``: install SIGINT/SIGTERM handlers for the run (first signal stops
    taking inputs, second aborts at once). ``keep_outcomes=False``: settled items are only counted
    (for endless inputs, so memory stays flat); the result then lists no items.
    """

    def __init__(
        self,
        stages: Sequence[StageSpec],
        *,
        on_event: EventCallback | None = None,
        grace_seconds: float = 30.0,
        handle_signals: bool = False,
        executor: ThreadPoolExecutor | None = None,
        keep_outcomes: bool = True,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.specs = list(stages)
        self.grace_seconds = grace_seconds
        self.handle_signals = handle_signals
        self._tracker = OutcomeTracker(names, on_event, keep_outcomes)
        for spec in self.specs:
            st = self._tracker.stages[spec.name]
            st.workers = spec.workers
            st.queue_size = spec.effective_queue_size
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=sum(s.workers for s in self.specs), thread_name_prefix="stage"
        )
        self._queues: list[asyncio.Queue[Any]] = []
        self._finished_workers = [0] * len(self.specs)
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- observers -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, StageSnapshot]:
        """Per-stage live state as plain data; safe to call at any moment from the loop."""
        for spec, q in zip(self.specs, self._queues, strict=False):
            self._tracker.stages[spec.name].queue_depth = q.qsize()
        return {name: st.snapshot() for name, st in self._tracker.stages.items()}

    # ---- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop taking new inputs; in-flight items get ``grace_seconds`` to finish."""
        self._call_in_loop(self._stop.set)

    def abort(self) -> None:
        """Cancel in-flight items now."""
        self._call_in_loop(self._stop.set)
        self._call_in_loop(self._abort.set)

    def _call_in_loop(self, fn: Any) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(fn)
        else:
            fn()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self.abort()
        else:
            self.request_stop()

    # ---- run -------------------------------------------------------------------------------
    async def run(self, inputs: Inputs) -> RunResult:
        self._loop = asyncio.get_running_loop()
        self._queues = [asyncio.Queue(maxsize=s.effective_queue_size) for s in self.specs]
        source: Iterator[StageMessage] | AsyncIterator[StageMessage] = (
            aiter(inputs) if isinstance(inputs, AsyncIterable) else iter(inputs))
        handled: list[signal.Signals] = []
        if self.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self._on_signal)
                    handled.append(sig)
        try:
            async with asyncio.TaskGroup() as outer:
                watcher = outer.create_task(self._watch_stop())
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._feed(source))
                    for idx, spec in enumerate(self.specs):
                        for _ in range(spec.workers):
                            tg.create_task(self._worker_task(idx))
                watcher.cancel()
        except BaseExceptionGroup as group:
            self._release_batchers("the run was cancelled")
            crashes = group.subgroup(_StageCrashed)
            if crashes is not None:
                crash = _first_leaf(crashes)
                assert isinstance(crash, _StageCrashed)
                raise PipelineError(crash.stage, crash.cause) from crash.cause
            rest = group.split(_Aborted)[1]
            if rest is not None:
                raise
        except BaseException:
            self._release_batchers("the run was cancelled")
            raise
        finally:
            for sig in handled:
                self._loop.remove_signal_handler(sig)
            if self._own_executor:
                # Threads cannot be interrupted: after an abort, leave them to finish on their own.
                self._executor.shutdown(wait=not self._abort.is_set(), cancel_futures=True)
        pending = [m.item_id for m in source] if isinstance(source, Iterator) else []
        return self._tracker.result(pending, stopped=self._stop.is_set())

    def _release_batchers(self, why: str) -> None:
        """Worker threads blocked on a batcher cannot be cancelled: fail what it holds instead."""
        for spec in self.specs:
            for batcher in spec.batchers:
                batcher.close(BatcherClosed(f"{batcher.name}: {why}"))

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), self.grace_seconds)
        raise _Aborted

    async def _feed(self, source: Iterator[StageMessage] | AsyncIterator[StageMessage]) -> None:
        while not self._stop.is_set():
            msg = await self._next_input(source) if isinstance(source, AsyncIterator) else next(source, None)
            if msg is None:
                break
            if self._tracker.admit(msg.item_id):
                await self._offer(0, (msg.item_id, msg))
        for _ in range(self.specs[0].workers):
            await self._queues[0].put(_EOS)

    async def _next_input(self, source: AsyncIterator[StageMessage]) -> StageMessage | None:
        """The next input, or None at its end or once a stop is requested (an endless source
        may never yield again)."""
        nxt: asyncio.Task[StageMessage] = asyncio.ensure_future(anext(source))  # type: ignore[arg-type]
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not nxt.done():
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt
            return None
        try:
            return nxt.result()
        except StopAsyncIteration:
            return None

    async def _offer(self, idx: int, env: Envelope) -> None:
        """Put ``env`` on stage ``idx``'s queue under that queue's policy."""
        spec, q = self.specs[idx], self._queues[idx]
        st = self._tracker.stages[spec.name]
        if q.full() and spec.queue_policy is QueuePolicy.DROP_NEWEST:
            self._queue_drop(spec.name, env)
            return
        if q.full() and spec.queue_policy is QueuePolicy.DROP_OLDEST:
            self._queue_drop(spec.name, q.get_nowait())
        await q.put(env)
        st.queue_high_water = max(st.queue_high_water, q.qsize())

    def _queue_drop(self, stage: str, env: Envelope) -> None:
        self._tracker.stages[stage].queue_dropped += 1
        self._tracker.emit("queue_dropped", stage, env[0], message=env[1])
        self._tracker.settle_part(ItemOutcome(env[0], Status.DROPPED, stage))

    async def _worker_task(self, idx: int) -> None:
        spec = self.specs[idx]
        loop = asyncio.get_running_loop()
        worker: BaseStageWorker | None = None
        st = self._tracker.stages[spec.name]
        for batcher in spec.batchers:
            batcher.join()
        try:
            worker = spec.worker()
            worker.progress_sink = st.report_progress
            st.progress_unit = worker.progress_unit
            started = time.perf_counter()
            await loop.run_in_executor(self._executor, worker.setup)
            self._tracker.stages[spec.name].setup_seconds += time.perf_counter() - started
            while (env := await self._queues[idx].get()) is not _EOS:
                await self._handle(idx, worker, env)
        except Exception as exc:
            raise _StageCrashed(spec.name, exc) from exc
        finally:
            for batcher in spec.batchers:
                batcher.leave()
            if worker is not None:
                worker.close()
        self._finished_workers[idx] += 1
        if self._finished_workers[idx] == spec.workers and idx + 1 < len(self.specs):
            for _ in range(self.specs[idx + 1].workers):
                await self._queues[idx + 1].put(_EOS)

    async def _handle(self, idx: int, worker: BaseStageWorker, env: Envelope) -> None:
        spec = self.specs[idx]
        st = self._tracker.stages[spec.name]
        item_id, msg = env
        st.items_in += 1
        st.busy += 1
        self._tracker.emit("started", spec.name, item_id)
        started = time.perf_counter()
        try:
            outputs = await self._process_with_retries(worker, st.name, msg)
        except FatalStageError:
            raise
        except Exception as exc:
            st.failed += 1
            self._tracker.emit("failed", spec.name, item_id, time.perf_counter() - started, exc)
            self._tracker.settle_part(ItemOutcome(item_id, Status.FAILED, spec.name, type(exc).__name__, str(exc)))
            return
        finally:
            elapsed = time.perf_counter() - started
            st.busy -= 1
            st.busy_seconds += elapsed
            st.durations.add(elapsed)
            st.clear_progress(item_id)
        self._tracker.emit("finished", spec.name, item_id, elapsed)
        if not outputs:
            st.dropped += 1
            self._tracker.emit("dropped", spec.name, item_id)
            self._tracker.settle_part(ItemOutcome(item_id, Status.DROPPED, spec.name))
            return
        st.items_out += len(outputs)
        self._tracker.fan_out(item_id, len(outputs))
        last = idx + 1 == len(self.specs)
        for out in outputs:
            if last:
                self._tracker.settle_part(ItemOutcome(item_id, Status.DONE, spec.name, outputs=[out]))
            else:
                await self._offer(idx + 1, (item_id, out))

    async def _process_with_retries(self, worker: BaseStageWorker, stage: str, msg: StageMessage) -> list[StageMessage]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if is_async_worker(worker):
                    result = await worker.process(msg)  # type: ignore[misc]
                else:
                    result = await loop.run_in_executor(self._executor, worker.process, msg)
                return as_messages(result)
            except Exception as exc:
                if isinstance(exc, FatalStageError) or not should_retry(worker, exc, msg.attempt):
                    raise
                self._tracker.stages[stage].retries += 1
                self._tracker.emit("retry", stage, msg.item_id, error=exc)
                await asyncio.sleep(backoff_delay(worker, msg.attempt))
                msg = msg.evolve(attempt=msg.attempt + 1, timestamp=msg.timestamp)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
