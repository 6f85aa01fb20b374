"""The live pipeline's second stage: commits each decided camera frame to its segment's registry
rows as it comes (a frame that may be kept moves to the candidates, the others' files go), so an
export at any moment, or after a kill, has every frame decided so far."""

from __future__ import annotations

import os

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..context import MiningContext
from ..errors import environment_error
from ..registry import Decision, FrameRow


class LiveCollectStage(BaseStageWorker):
    def __init__(self, ctx: MiningContext) -> None:
        self.ctx = ctx

    def process(self, msg: StageMessage) -> StageOutput:
        try:
            return self._commit(msg)
        except Exception as exc:
            fault = environment_error(exc, self.ctx.output)
            if fault is not None:
                self.ctx.environment_fault(fault)
                raise fault from exc
            raise

    def _commit(self, msg: StageMessage) -> StageOutput:
        assert msg.input_path is not None
        row, video_id = msg.metadata["row"], msg.metadata["video_id"]
        keep = row["decision"] in (Decision.CANDIDATE, Decision.DEFERRED)
        file = row["file"]
        if keep:
            folder = self.ctx.candidates_dir / video_id
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(msg.input_path, folder / file)
            file = (folder / file).relative_to(self.ctx.output).as_posix()
        else:
            msg.input_path.unlink(missing_ok=True)
        self.ctx.registry.add_frames([FrameRow(video_id, row["index"], row["t"], file, row["phash"], row["blur"],
                                               row["detections"], row["decision"], row["reason"], row["pixels"],
                                               row["bpp"], row["sharpness"])])
        if msg.metadata.get("media"):
            self.ctx.registry.set_media(video_id, msg.metadata["media"])
        self.ctx.counters.add(frames_extracted=1, frames_filtered=int(not keep))
        return msg
