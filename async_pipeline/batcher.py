"""Dynamic batching: the workers of a stage hand single requests (say, frames) to one shared batcher,
which runs them in batches formed across every item in flight and hands each result back to its
caller. The pattern of Triton's dynamic batcher and Ray Serve's ``@serve.batch``.

When a batch goes
-----------------
* when it is full (``max_batch`` requests);
* when its oldest request has waited ``max_wait_s`` (Triton's ``max_queue_delay``): a lone request
  is never held longer than that;
* at once when no more requests can arrive: every client (a worker registered with :meth:`join`)
  is blocked waiting for results, or the batcher is closing (end of stream). So a run never sits
  out ``max_wait_s`` at its end, and a single worker never waits on itself.

One batch runs at a time, on the batcher's own thread (the "model instance"); requests that arrive
meanwhile form the next batch, so batches grow with the load by themselves. At most ``max_pending``
requests (default two batches) are held at once: :meth:`submit` blocks beyond that (backpressure;
the caller then counts as waiting), so callers cannot pile up memory faster than the model works.

Errors reach only the requests they concern: ``fn`` returns one result per request, and an
exception in that list fails that request alone; an exception raised by ``fn`` fails the requests
of that batch and no others. :meth:`close` with an error (a cancelled run) fails everything still
pending, so no caller blocks forever; without one, pending requests are still served.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .distribution import Distribution

Req = TypeVar("Req")
Res = TypeVar("Res")

#: Runs one batch: one result (or an exception instance, for that request alone) per request.
BatchFn = Callable[[list[Req]], Sequence["Res | BaseException"]]


class BatcherClosed(RuntimeError):
    """The batcher stopped before serving this request (the run was cancelled)."""


@dataclass
class _Request(Generic[Req, Res]):
    item: Req
    future: Future[Res]
    at: float


@dataclass
class BatcherStats:
    """What observers read: batch sizes against ``max_batch``, time waited for a batch, time busy."""

    max_batch: int
    batches: int = 0
    requests: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    #: How many batches had each size (index = size).
    sizes: list[int] = field(default_factory=list)
    #: Seconds from submit until the request's batch started.
    wait: Distribution = field(default_factory=Distribution)
    #: Why batches went: full, waited (max_wait_s), all_waiting (no more could come), closing.
    reasons: dict[str, int] = field(default_factory=lambda: {"full": 0, "waited": 0, "all_waiting": 0, "closing": 0})

    def size_quantile(self, q: float) -> int:
        if not self.batches:
            return 0
        rank, seen = q * (self.batches - 1), 0
        for size, n in enumerate(self.sizes):
            seen += n
            if seen > rank:
                return size
        return len(self.sizes) - 1

    def snapshot(self) -> dict[str, Any]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {
            "max_batch": self.max_batch,
            "batches": self.batches,
            "requests": self.requests,
            "failed": self.failed,
            "busy_seconds": round(self.busy_seconds, 4),
            "batch_size_mean": round(mean, 3),
            "batch_size_p50": self.size_quantile(0.5),
            "batch_fill_mean": round(mean / self.max_batch, 4) if self.max_batch else 0.0,
            "batch_sizes": {str(size): n for size, n in enumerate(self.sizes) if n},
            "wait_s": self.wait.summary(),
            "reasons": dict(self.reasons),
            "requests_per_busy_s": round(self.requests / self.busy_seconds, 3) if self.busy_seconds else 0.0,
        }


class DynamicBatcher(Generic[Req, Res]):
    """Thread-safe. Use as a context manager (or :meth:`start` / :meth:`close`); workers that will
    submit register with :meth:`join` / :meth:`leave` (the engines do this for a stage's workers
    when its :class:`~async_pipeline.StageSpec` names the batcher)."""

    def __init__(self, fn: BatchFn[Req, Res], *, max_batch: int, max_wait_s: float, name: str = "batcher",
                 max_pending: int | None = None,
                 on_batch: Callable[[int, list[float], float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_pending = max(max_batch, max_pending or 2 * max_batch)
        self._running = 0
        self.name = name
        #: Told (size, seconds each request waited for the batch, seconds it ran) after every batch.
        self.on_batch = on_batch
        self._pending: deque[_Request[Req, Res]] = deque()
        self._cond = threading.Condition()
        self._clients = 0
        self._waiting = 0
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.stats = BatcherStats(max_batch=max_batch, sizes=[0] * (max_batch + 1))

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> DynamicBatcher[Req, Res]:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close(BatcherClosed(f"{self.name}: stopped by {type(exc).__name__}") if exc is not None else None)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._serve, name=f"{self.name}-batcher", daemon=True)
            self._thread.start()

    def close(self, error: BaseException | None = None) -> None:
        """Stop: serve what is pending, then return; with ``error``, fail what is pending instead."""
        with self._cond:
            self._closing = True
            if error is not None and self._error is None:
                self._error = error
            failed = self._take_all() if self._error is not None else []
            self._cond.notify_all()
            thread = self._thread
        for req in failed:
            _fail(req.future, self._error)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            # Never started, or submitted while the thread was ending: nobody will serve these.
            left = self._take_all()
        for req in left:
            _fail(req.future, self._error or BatcherClosed(f"{self.name} is closed"))

    # ---- clients ---------------------------------------------------------------------------
    def join(self, n: int = 1) -> None:
        """``n`` more workers may submit: a batch waits for them (up to ``max_wait_s``)."""
        with self._cond:
            self._clients += n

    def leave(self, n: int = 1) -> None:
        """``n`` workers will submit no more (end of stream for them)."""
        with self._cond:
            self._clients = max(0, self._clients - n)
            self._cond.notify_all()

    # ---- requests --------------------------------------------------------------------------
    def submit(self, item: Req) -> Future[Res]:
        """Queue one request; blocks while ``max_pending`` are held (counting as waiting meanwhile)."""
        future: Future[Res] = Future()
        with self._cond:
            if len(self._pending) + self._running >= self.max_pending and not self._closed:
                self._waiting += 1
                self._cond.notify_all()
                while (len(self._pending) + self._running >= self.max_pending and self._error is None
                       and not self._closed):
                    self._cond.wait()
                self._waiting -= 1
            if self._error is not None or self._closed:
                error = self._error or BatcherClosed(f"{self.name} is closed")
            else:
                self._pending.append(_Request(item, future, time.monotonic()))
                self._cond.notify_all()
                return future
        _fail(future, error)
        return future

    def try_submit(self, item: Req) -> Future[Res] | None:
        """Queue one request if there is room now; None (nothing queued) while ``max_pending`` are
        held or the batcher is closed. For callers that would rather skip an item than wait (a
        live frame a slow model cannot take in time)."""
        with self._cond:
            if len(self._pending) + self._running >= self.max_pending or self._error is not None or self._closed:
                return None
            future: Future[Res] = Future()
            self._pending.append(_Request(item, future, time.monotonic()))
            self._cond.notify_all()
            return future

    def wait(self, futures: Iterable[Future[Res]], return_when: str = ALL_COMPLETED) -> set[Future[Res]]:
        """Block until ``futures`` are done (or the first one, with FIRST_COMPLETED); returns the
        done ones. While blocked the caller counts as waiting: if every client is, the batch goes.
        A caller stops counting the moment its results are set (not when its thread next runs), so
        the batch after the one it was waiting on waits for it to submit again."""
        return wait_on((self,), futures, return_when)

    def _waiting_for(self, n: int) -> None:
        with self._cond:
            self._waiting += n
            self._cond.notify_all()

    def map(self, items: Iterable[Req]) -> list[Res]:
        """Submit every item (``items`` may be a generator that loads each one), wait for all,
        return their results in order; raises the first error among them."""
        futures = [self.submit(item) for item in items]
        self.wait(futures)
        return [f.result() for f in futures]

    # ---- the batcher's thread -----------------------------------------------------------------
    def _take_all(self) -> list[_Request[Req, Res]]:
        taken = list(self._pending)
        self._pending.clear()
        return taken

    def _next_batch(self) -> tuple[list[_Request[Req, Res]], str] | None:
        """Wait until a batch should go; None when closed and nothing is left."""
        with self._cond:
            while True:
                if self._error is not None:
                    return None
                if self._pending:
                    reason = None
                    if len(self._pending) >= self.max_batch:
                        reason = "full"
                    elif self._closing:
                        reason = "closing"
                    elif self._waiting >= max(1, self._clients):
                        reason = "all_waiting"
                    else:
                        left = self._pending[0].at + self.max_wait_s - time.monotonic()
                        if left <= 0:
                            reason = "waited"
                        else:
                            self._cond.wait(left)
                            continue
                    n = min(self.max_batch, len(self._pending))
                    self._running = n
                    return [self._pending.popleft() for _ in range(n)], reason
                if self._closing:
                    return None
                self._cond.wait()

    def _serve(self) -> None:
        while (taken := self._next_batch()) is not None:
            batch, reason = taken
            started = time.monotonic()
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            results: Sequence[Any]
            try:
                results = self.fn([r.item for r in live]) if live else []
                if len(results) != len(live):
                    raise ValueError(f"{self.name}: batch function returned {len(results)} results for {len(live)} requests")
            except Exception as exc:
                results = [exc] * len(live)
            elapsed = time.monotonic() - started
            failed = 0
            for req, result in zip(live, results, strict=True):
                if isinstance(result, BaseException):
                    failed += 1
                    req.future.set_exception(result)
                else:
                    req.future.set_result(result)
            self._record(batch, reason, started, elapsed, failed)

    def _record(self, batch: list[_Request[Req, Res]], reason: str, started: float, elapsed: float, failed: int) -> None:
        s = self.stats
        with self._cond:
            self._running = 0
            self._cond.notify_all()  # room for blocked submitters
            s.batches += 1
            s.requests += len(batch)
            s.failed += failed
            s.busy_seconds += elapsed
            s.sizes[len(batch)] += 1
            s.reasons[reason] += 1
        waits = [started - req.at for req in batch]
        for w in waits:
            s.wait.add(w)
        if self.on_batch is not None:
            self.on_batch(len(batch), waits, elapsed)


def _fail(future: Future[Any], error: BaseException | None) -> None:
    if future.set_running_or_notify_cancel():
        future.set_exception(error or BatcherClosed("closed"))


def wait_on(batchers: Sequence[DynamicBatcher[Any, Any]], futures: Iterable[Future[Any]],
            return_when: str = ALL_COMPLETED) -> set[Future[Any]]:
    """:meth:`DynamicBatcher.wait` for a caller whose results come from several batchers (a frame
    answered by several models): it counts as waiting on each of them until its results are set."""
    futures = list(futures)
    if not futures:
        return set()
    first = return_when == FIRST_COMPLETED
    released = threading.Event()
    lock = threading.Lock()
    left = [len(futures)]

    def on_done(_: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if released.is_set() or not (first or left[0] == 0):
                return
            released.set()
        for batcher in batchers:
            batcher._waiting_for(-1)

    for batcher in batchers:
        batcher._waiting_for(1)
    for future in futures:
        future.add_done_callback(on_done)
    released.wait()
    return {f for f in futures if f.done()}
