"""What a stage implements, and the per-call rules (retries, output shapes) both runners share."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar

from .message import StageMessage

StageOutput = StageMessage | list[StageMessage] | None


class FatalStageError(Exception):
    """Raised by a stage when it cannot go on for any item (e.g. the model is gone).

    Unlike an ordinary exception, which fails one item, this ends the whole run promptly.
    """


class BaseStageWorker(ABC):
    """Subclass and implement :meth:`process`.

    ``process`` runs in the engine's shared thread pool, so it may block (decode, infer, write).
    A stage whose work is naturally asynchronous may define ``async def process`` instead; the
    engine then awaits it on the event loop. Return a message to pass the item on, a list to
    fan out (each part continues on its own), or ``None`` to drop the item.

    ``setup`` runs once per worker before its first item (load a model there), ``close`` once at
    the end, also after errors.
    """

    #: Exceptions worth retrying (network blips, HTTP 5xx); anything else fails the item at once.
    retry_on: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Total attempts for a transient error, the first included.
    max_attempts: int = 3
    #: Delay before the second attempt; doubles for each one after.
    backoff_s: float = 0.5
    #: Whether one instance may run ``process`` from several threads at once (sequential runner).
    thread_safe: ClassVar[bool] = False
    #: What :meth:`report_progress` counts ("bytes", "s"); shown beside the stage's items in flight.
    progress_unit: str = ""
    #: Set by the engine before ``setup``: where progress reports go.
    progress_sink: Callable[[str, float, float | None], None] | None = None

    def report_progress(self, item_id: str, done: float, total: float | None = None) -> None:
        """How far ``process`` is into an item (callable from any thread): observers show it as
        a bar and base the ETA on it. The engine forgets it when the item leaves the stage."""
        if self.progress_sink is not None:
            self.progress_sink(item_id, done, total)

    def setup(self) -> None:
        """Acquire per-worker resources (models, sessions)."""

    def close(self) -> None:
        """Release what :meth:`setup` acquired."""

    @abstractmethod
    def process(self, msg: StageMessage) -> StageOutput | Awaitable[StageOutput]:
        """Handle one message; raise to fail this item."""


def is_async_worker(worker: BaseStageWorker) -> bool:
    return inspect.iscoroutinefunction(worker.process)


def should_retry(worker: BaseStageWorker, exc: BaseException, attempt: int) -> bool:
    return isinstance(exc, worker.retry_on) and attempt < worker.max_attempts


def backoff_delay(worker: BaseStageWorker, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential."""
    return float(worker.backoff_s * (2 ** (attempt - 1)))


def as_messages(output: StageOutput) -> list[StageMessage]:
    if output is None:
        return []
    if isinstance(output, StageMessage):
        return [output]
    if isinstance(output, list) and all(isinstance(m, StageMessage) for m in output):
        return output
    raise TypeError(f"process() must return StageMessage, list[StageMessage] or None, got {type(output).__name__}")
