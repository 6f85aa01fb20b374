"""What every video-miner stage shares: turning any exception into a failure class, recorded in
the registry for the video concerned before the engine hears of it. A fault of the machine (disk
full, no permission, a failing disk) is not the video's: it stops the run and leaves the video
unfinished, so a plain re-run resumes it once the fault is fixed."""

from __future__ import annotations

import errno
import sqlite3
from abc import abstractmethod

from async_pipeline import BaseStageWorker, FatalStageError, StageMessage, StageOutput

from ..context import MiningContext
from ..errors import MinerError, TransientError, classify_os_error, environment_error


class MinerStage(BaseStageWorker):
    retry_on = (TransientError,)

    def __init__(self, ctx: MiningContext) -> None:
        self.ctx = ctx
        self.max_attempts = ctx.config.download.retries + 1
        self.backoff_s = ctx.config.download.backoff_s

    def process(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata.get("video_id", msg.item_id)
        try:
            return self.handle(msg)
        except FatalStageError:
            raise
        except Exception as exc:
            fault = environment_error(exc, self.ctx.output)
            if fault is not None:
                self.ctx.environment_fault(fault)
                raise fault from exc
            error = self._classify(exc, video_id)
            if not (error.transient and msg.attempt < self.max_attempts):
                try:
                    self.ctx.registry.mark_failed(video_id, error.kind, str(error))
                except (OSError, sqlite3.Error) as write_error:
                    fault = environment_error(write_error, self.ctx.registry.path)
                    if fault is None:
                        raise
                    self.ctx.environment_fault(fault)
                    raise fault from exc
            if error is exc:
                raise
            raise error from exc

    def _classify(self, exc: Exception, video_id: str) -> MinerError:
        if isinstance(exc, MinerError):
            return exc
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return classify_os_error(exc, video_id)
        error = MinerError(f"{type(exc).__name__}: {exc}")
        error.kind = type(exc).__name__
        return error

    @abstractmethod
    def handle(self, msg: StageMessage) -> StageOutput:
        """The stage's work for one video; raise to fail it."""
