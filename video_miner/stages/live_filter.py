"""The live pipeline's first stage: one sampled camera frame at a time, decided as the file filter
decides (twins reuse a detection, near-duplicates of a frame with the classes are deferred, the
rest share the detector's batches with the files' frames). Its queue is the bounded one with the
drop policy: when the detector falls behind, frames are dropped there, counted per source."""

from __future__ import annotations

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..detect.judge import FrameJudge, FrameModels
from ..live.hub import LiveHub
from ..records import Decision, LiveFrame
from .context import MiningContext


class LiveFilterStage(BaseStageWorker):
    thread_safe = True

    def __init__(self, ctx: MiningContext, detector: FrameModels, hub: LiveHub) -> None:
        self.ctx, self.detector, self.hub = ctx, detector, hub
        env = ctx.env
        # With tracks on, no frame is deferred: the tracker needs every frame's boxes.
        hints = None if env.config.track.enabled else env.hints
        self.judge = FrameJudge(detector, env.detections, hints, env.config.filter.no_class_reason(), live=True)

    def setup(self) -> None:
        self.detector.warm_up()

    def process(self, msg: StageMessage[LiveFrame]) -> StageOutput:
        assert msg.input_path is not None
        live = msg.item
        frame = live.frame
        ticket = self.judge.start(frame, msg.input_path, live.order, live.video_id)
        while ticket is not None:
            self.detector.wait([ticket.future])
            ticket = self.judge.finish(ticket, live.order, live.video_id)
        record_decision(self.ctx, self.hub, live)
        return msg.evolve(timestamp=msg.timestamp)


def record_decision(ctx: MiningContext, hub: LiveHub, live: LiveFrame) -> None:
    """A live frame is decided (here, or on a Ray actor): its source's figures and the run's counters."""
    frame = live.frame
    hub.decided(live, frame.decision == Decision.CANDIDATE, frame.sync)
    ctx.counters.add(frames_to_detector=int(frame.detected), frames_candidates=int(frame.decision == Decision.CANDIDATE),
                     frames_deferred=int(frame.decision == Decision.DEFERRED))
