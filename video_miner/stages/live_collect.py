"""The live pipeline's second stage: commits each decided camera frame to its segment's registry
rows as it comes (a frame that may be kept moves to the candidates, the others' files go), so an
export at any moment, or after a kill, has every frame decided so far."""

from __future__ import annotations

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..errors import environment_error
from ..records import FrameRow, LiveFrame
from ..store.files import move
from .context import MiningContext


class LiveCollectStage(BaseStageWorker):
    def __init__(self, ctx: MiningContext) -> None:
        self.ctx = ctx

    def process(self, msg: StageMessage[LiveFrame]) -> StageOutput:
        try:
            return self._commit(msg)
        except Exception as exc:
            fault = environment_error(exc, self.ctx.output)
            if fault is not None:
                self.ctx.environment_fault(fault)
                raise fault from exc
            raise

    def _commit(self, msg: StageMessage[LiveFrame]) -> StageOutput:
        assert msg.input_path is not None
        live = msg.item
        frame, layout = live.frame, self.ctx.layout
        file = frame.file
        if frame.keeps_file:
            folder = layout.candidates_dir / live.video_id
            move(msg.input_path, folder / file, layout.output)
            file = layout.relative(folder / file)
        else:
            msg.input_path.unlink(missing_ok=True)
        self.ctx.registry.add_frames([FrameRow.of(live.video_id, frame, file)])
        if live.media.display_size is not None:
            self.ctx.registry.set_media(live.video_id, live.media)
        self.ctx.counters.add(frames_extracted=1, frames_filtered=int(not frame.keeps_file))
        return msg
