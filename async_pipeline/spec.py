"""How a pipeline is declared: an ordered list of stage specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .batcher import DynamicBatcher
from .worker import BaseStageWorker


class QueuePolicy(StrEnum):
    #: Wait for room: bulk mining never loses an item.
    BLOCK = "block"
    #: Live sources: when full, throw away the oldest waiting item to make room.
    DROP_OLDEST = "drop_oldest"
    #: Live sources: when full, throw away the item being offered.
    DROP_NEWEST = "drop_newest"


@dataclass(frozen=True)
class StageSpec:
    name: str
    #: Builds one worker; called once per worker task (async) or once per stage (sequential).
    worker: Callable[[], BaseStageWorker]
    workers: int = 1
    #: Size of the queue that feeds this stage; default twice its workers.
    queue_size: int | None = None
    queue_policy: QueuePolicy = QueuePolicy.BLOCK
    #: Batchers this stage's workers submit to: each worker counts as one of their clients while
    #: it runs, so a batch goes at once when every worker is waiting on it. Their owner starts
    #: and closes them; the engine only fails what they hold when it cancels a run.
    batchers: tuple[DynamicBatcher[Any, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"stage {self.name!r}: workers must be >= 1, got {self.workers}")
        if self.queue_size is not None and self.queue_size < 1:
            raise ValueError(f"stage {self.name!r}: queue_size must be >= 1, got {self.queue_size}")

    @property
    def effective_queue_size(self) -> int:
        return self.queue_size if self.queue_size is not None else 2 * self.workers


class PipelineError(RuntimeError):
    """The run could not go on: a worker crashed, a stage's setup failed, or a stage raised
    :class:`~async_pipeline.worker.FatalStageError`."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage '{stage}' stopped the run: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause
