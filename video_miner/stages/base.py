"""The one seam between a stage and the engine that runs it.

A :class:`MinerStage` does one video's work with what its :class:`StageEnv` offers and records
what changed; :func:`execute` runs it and turns any exception into a failure class (or a fault of
the machine), wherever that happens: in this process, or on a Ray worker. On the driver,
:func:`settle` commits the changes to the registry before the next stage sees the video, records a
failure (unless the engine will retry it), and hands on the outputs. :class:`LocalStage` puts the
two together for the local engines; the Ray engine runs :func:`execute` remotely and :func:`settle`
here, so the same stage classes run on both.
"""

from __future__ import annotations

import errno
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from async_pipeline import BaseStageWorker, FatalStageError, StageMessage, StageOutput
from async_pipeline.worker import as_messages

from ..errors import CorruptMedia, MinerError, TooLarge, TransientError, classify_network, classify_os_error, environment_error
from ..records import VideoItem, VideoRow
from .changes import StageChanges
from .context import MiningContext, StageEnv

Message = StageMessage[VideoItem]
#: How far into the current video a stage is: (done, total or None), in the stage's progress unit.
Progress = Callable[[float, float | None], None]


def _no_progress(done: float, total: float | None) -> None:
    return None


class MinerStage(ABC):
    """One stage's work on one video, the same on every engine. ``row`` is the video's registry row
    as the driver read it just before; nothing else of the registry is read or written here."""

    name: ClassVar[str]
    #: What the stage's progress reports count ("bytes", "s").
    progress_unit: ClassVar[str] = ""

    def __init__(self, env: StageEnv) -> None:
        self.env = env

    def setup(self) -> None:
        """Acquire per-worker resources (a model)."""

    def close(self) -> None:
        """Release what :meth:`setup` acquired."""

    @abstractmethod
    def handle(self, msg: Message, row: VideoRow | None, changes: StageChanges, progress: Progress) -> StageOutput:
        """The stage's work for one video; raise to fail it."""


@dataclass
class StageResult:
    """What one call of a stage gave: its outputs, what it changed, and the failure if it failed
    (``fault``: the machine's, not the video's)."""

    outputs: list[Message] = field(default_factory=list)
    changes: StageChanges = field(default_factory=StageChanges)
    error: MinerError | None = None
    fault: bool = False


def classify(exc: Exception, video_id: str) -> MinerError:
    """Any exception of a stage as a failure class a user can act on, in words."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, MinerError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return classify_os_error(exc, video_id)
    if isinstance(exc, (Image.DecompressionBombError, MemoryError)):
        return TooLarge(f"{video_id}: a picture too large to decode ({exc or 'out of memory'})")
    if isinstance(exc, UnidentifiedImageError):
        return CorruptMedia(f"{video_id}: a picture that cannot be read ({exc})")
    if (network := classify_network(exc, video_id)) is not None:  # DNS, TLS, a proxy, a store's credentials
        return network
    error = MinerError(f"{video_id}: unexpected error: {exc or 'no message'} (a bug: run again with --debug and "
                       "report it)")
    error.kind = "internal_error"
    return error


def execute(stage: MinerStage, msg: Message, row: VideoRow | None, progress: Progress = _no_progress) -> StageResult:
    """Run ``stage`` on ``msg``: never raises, but for a :class:`FatalStageError`."""
    changes = StageChanges()
    try:
        return StageResult(as_messages(stage.handle(msg, row, changes, progress)), changes)
    except FatalStageError:
        raise
    except Exception as exc:
        fault = environment_error(exc, stage.env.output)
        if fault is not None:
            return StageResult([], changes, fault, fault=True)
        error = classify(exc, msg.item.video_id)
        if error is not exc:
            error.__cause__ = exc  # for --debug's traceback
        return StageResult([], changes, error)


@contextmanager
def _registry_writes(ctx: MiningContext, cause: BaseException | None = None) -> Iterator[None]:
    """A registry write that fails for the machine's sake (disk full, read-only) stops the run."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        fault = environment_error(exc, ctx.registry.path)
        if fault is None:
            raise
        ctx.environment_fault(fault)
        raise fault from cause or exc


def settle(ctx: MiningContext, msg: Message, result: StageResult, attempts: int) -> list[Message]:
    """On the driver: commit ``result``'s changes, then hand on its outputs or raise its failure,
    recorded in the registry unless the engine will retry it (``attempts``: how many it makes)."""
    done: set[str] = set()
    try:
        with _registry_writes(ctx):
            done = ctx.commit(result.changes)
    except MinerError as exc:
        if environment_error(exc) is not None:
            raise
        result = StageResult([], result.changes, exc)  # e.g. a live stream found where no live reader runs
    error = result.error
    if error is None:
        return [m for m in result.outputs if m.item.video_id not in done]
    if result.fault:
        ctx.environment_fault(error)
        raise error
    if not (error.transient and msg.attempt < attempts):
        with _registry_writes(ctx, error):
            ctx.registry.mark_failed(msg.item.video_id, error.kind, str(error))
    raise error


class EngineStage(BaseStageWorker):
    """A stage as the engine sees it, on the driver: failures of the network kind are retried
    with backoff (``download.retries``, ``download.backoff_s``)."""

    retry_on = (TransientError,)

    def __init__(self, ctx: MiningContext) -> None:
        self.ctx = ctx
        self.max_attempts = ctx.config.download.retries + 1
        self.backoff_s = ctx.config.download.backoff_s


class LocalStage(EngineStage):
    """A stage in this process: its work and the driver's commit, one after the other."""

    def __init__(self, ctx: MiningContext, stage: MinerStage) -> None:
        super().__init__(ctx)
        self.stage = stage
        self.progress_unit = stage.progress_unit

    # One instance may serve several items at once (sequential runner): the stages keep no
    # per-item state of their own.
    thread_safe = True

    def setup(self) -> None:
        self.stage.setup()

    def close(self) -> None:
        self.stage.close()

    def process(self, msg: StageMessage[VideoItem]) -> StageOutput:
        video_id = msg.item.video_id
        row = self.ctx.registry.video(video_id)
        result = execute(self.stage, msg, row, lambda done, total: self.report_progress(video_id, done, total))
        return settle(self.ctx, msg, result, self.max_attempts)


#: The file pipeline's stages, in order, and the live pipeline's.
FILE_STAGES = ("download", "extract", "filter", "collect")
LIVE_STAGES = ("live_filter", "live_collect")
