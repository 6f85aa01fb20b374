"""The live pipeline's first stage: one sampled camera frame at a time, decided as the file filter
decides (twins reuse a detection, near-duplicates of a frame with the classes are deferred, the
rest share the detector's batches with the files' frames). Its queue is the bounded one with the
drop policy: when the detector falls behind, frames are dropped there, counted per source."""

from __future__ import annotations

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..context import MiningContext
from ..detector import SharedDetector
from ..registry import Decision
from ..sources.hub import LiveHub
from .filter import FrameJudge


class LiveFilterStage(BaseStageWorker):
    thread_safe = True

    def __init__(self, ctx: MiningContext, detector: SharedDetector, hub: LiveHub) -> None:
        self.ctx, self.detector, self.hub = ctx, detector, hub
        self.judge = FrameJudge(ctx, detector)

    def setup(self) -> None:
        self.detector.warm_up()

    def process(self, msg: StageMessage) -> StageOutput:
        assert msg.input_path is not None
        row = {"detections": [], "detected": False, **msg.metadata["row"]}
        video_id, order = msg.metadata["video_id"], msg.metadata["order"]
        ticket = self.judge.start(row, msg.input_path, order, video_id)
        while ticket is not None:
            self.detector.batcher.wait([ticket.future])
            ticket = self.judge.finish(ticket, order, video_id)
        self.hub.decided(msg, row["decision"] == Decision.CANDIDATE)
        self.ctx.counters.add(frames_to_detector=int(row["detected"]),
                              frames_candidates=int(row["decision"] == Decision.CANDIDATE),
                              frames_deferred=int(row["decision"] == Decision.DEFERRED))
        return msg.evolve(metadata={"row": row}, timestamp=msg.timestamp)
