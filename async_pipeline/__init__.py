"""A generic stage engine: items flow through named stages joined by bounded queues.

The model, in brief
-------------------
* A pipeline is an ordered list of :class:`StageSpec` (name, worker factory, worker count, queue
  size and policy). Items are :class:`StageMessage` objects that carry paths and small metadata,
  never pixels, so queues stay cheap however large the files.
* A stage subclasses :class:`BaseStageWorker` and implements ``process(msg)``: return a message
  (pass on), a list (fan out: each part continues on its own) or ``None`` (drop). Blocking work
  runs in one shared ``ThreadPoolExecutor``; ``async def process`` runs on the loop instead.
  ``setup``/``close`` run once per worker (load a model once).
* :class:`AsyncPipelineOrchestrator` runs every stage at once. Each stage reads a bounded
  ``asyncio.Queue`` (default size 2 x its workers), so a slow stage holds the ones before it back
  (backpressure) instead of filling memory. End of stream is an explicit marker that a stage
  forwards once all its workers have seen it; everything runs in ``asyncio.TaskGroup``\\ s, so a
  dropped item, a fan-out, a full queue or a crashed worker cannot hang a run.
* Every input ends exactly once as ``done``, ``dropped`` or ``failed`` (stage, exception type,
  message) in the :class:`RunResult`; ``cancelled`` marks items a stop left unfinished.
  An exception from ``process`` fails only that item; ``retry_on`` exceptions are retried with
  exponential backoff up to ``max_attempts``. A :class:`FatalStageError`, a failing ``setup`` or
  a bug in a worker task ends the run at once with :class:`PipelineError`.
* Stopping: the first SIGINT/SIGTERM (or :meth:`~AsyncPipelineOrchestrator.request_stop`) stops
  taking inputs and gives in-flight items ``grace_seconds`` to finish; a second aborts at once.
  Either way the partial result names every unfinished item.
* Queue policies: ``block`` (default, never loses an item) or ``drop_oldest``/``drop_newest`` for
  live sources; every drop is counted and the item settled as dropped (the ``queue_dropped`` event
  carries the message, so its owner can clean up).
* Inputs may be an async iterable, endless if need be (camera frames, a watched folder): a stop
  request ends it. ``keep_outcomes=False`` then keeps counts only, so memory stays flat.
* :class:`DynamicBatcher`: a stage's workers hand single requests (frames) to one shared batcher
  that runs them in batches formed across all items in flight, and hands each result back. A
  batch goes when full, when its oldest request waited ``max_wait_s``, or at once when every
  client is waiting on it. Name it in the stage's spec so each worker counts as a client.
* Workers may :meth:`~BaseStageWorker.report_progress` inside an item (bytes, seconds of media);
  snapshots carry it as ``in_flight``. Durations are kept as bounded :class:`Distribution` objects.
* Observers read :meth:`snapshot` (per stage: workers busy/idle, queue depth and high-water mark,
  items in/out/dropped/failed, time per item) or pass ``on_event`` to hear each
  :class:`PipelineEvent`. No UI code lives here.
* :class:`SequentialRunner` runs the same stages without queues, ``jobs`` items at a time, one
  shared instance per stage, and gives the same per-item results.

This package imports nothing video-specific.
"""

from .batcher import BatcherClosed, BatcherStats, DynamicBatcher, wait_on
from .distribution import Distribution
from .message import StageMessage
from .orchestrator import AsyncPipelineOrchestrator
from .sequential import SequentialRunner
from .spec import PipelineError, QueuePolicy, StageSpec
from .stats import ItemOutcome, PipelineEvent, RunResult, StageSnapshot, StageStats, Status
from .sync import JoinStats, Release, Sync, Synchronizer
from .worker import BaseStageWorker, FatalStageError, StageOutput

__all__ = [
    "AsyncPipelineOrchestrator",
    "BaseStageWorker",
    "BatcherClosed",
    "BatcherStats",
    "Distribution",
    "DynamicBatcher",
    "FatalStageError",
    "ItemOutcome",
    "JoinStats",
    "PipelineError",
    "PipelineEvent",
    "QueuePolicy",
    "Release",
    "RunResult",
    "SequentialRunner",
    "StageMessage",
    "StageOutput",
    "StageSnapshot",
    "StageSpec",
    "StageStats",
    "Status",
    "Sync",
    "Synchronizer",
    "wait_on",
]
