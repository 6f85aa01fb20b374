"""Stage 3 (the GPU stage): the detector, on the frames the prefilters passed.

Each frame goes to the :class:`~video_miner.detect.judge.FrameJudge`, which reuses a byte-identical
twin's detections, defers a near-duplicate of a more preferred frame with the classes, or sends it
to the run's shared detector (:class:`~video_miner.detect.detector.SharedDetector`; several models:
:class:`~video_miner.detect.model_graph.ModelGraph`), whose batcher fills each batch with frames of
every video in flight (and holds at most two batches' worth, so a
worker loading frames faster than the model works waits for room). A worker decides each frame as
soon as its batch is back, so those detections can defer its later frames. ``filter.json``
commits the decisions.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future
from pathlib import Path

from async_pipeline import StageOutput

from ..detect.hints import Detections
from ..detect.judge import FrameJudge, FrameModels, Ticket
from ..detect.tracking import track_video
from ..records import Decision, FrameRecord, State, VideoRow, VideoUpdate
from ..store.layout import RESULT, read_index, write_result
from .base import Message, MinerStage, Progress
from .changes import StageChanges
from .context import StageEnv


class FilterStage(MinerStage):
    name = "filter"

    def __init__(self, env: StageEnv, detector: FrameModels) -> None:
        super().__init__(env)
        self.detector = detector
        # With tracks on, no frame is deferred: the tracker needs every frame's boxes.
        hints = None if env.config.track.enabled else env.hints
        self.judge = FrameJudge(detector, env.detections, hints, env.config.filter.no_class_reason())

    def setup(self) -> None:
        # In the worker, not at start-up: the first videos download and decode meanwhile. The
        # first worker here warms the shared model; the others wait for it.
        self.detector.warm_up()

    def handle(self, msg: Message, row: VideoRow | None, changes: StageChanges, progress: Progress) -> StageOutput:
        video_id = msg.item.video_id
        frames_dir = msg.input_path
        assert frames_dir is not None
        if row and row.state == State.FILTERED and (frames_dir / RESULT).exists():
            return msg
        order = row.order if row else msg.item.order
        frames = self.filter_frames(frames_dir, read_index(frames_dir).frames, video_id, order)
        if self.env.config.track.enabled:
            tracked = track_video(frames, frames_dir, self.env.config.track, self.env.config.filter.conf,
                                  self.env.config.filter.no_class_reason())
            changes.count(tracks=tracked.tracks, frames_hard=tracked.hard_marks)
        write_result(frames_dir, frames)
        candidates = sum(f.decision == Decision.CANDIDATE for f in frames)
        deferred = sum(f.decision == Decision.DEFERRED for f in frames)
        changes.count(frames_candidates=candidates, frames_deferred=deferred,
                      frames_filtered=len(frames) - candidates - deferred,
                      frames_to_detector=sum(f.detected for f in frames))
        changes.update(video_id, VideoUpdate(State.FILTERED))
        return msg

    def filter_frames(self, frames_dir: Path, frames: list[FrameRecord], video_id: str, order: int) -> list[FrameRecord]:
        """Decide ``frames`` (the extract stage's records, prefilter decisions included) in place."""
        outstanding: dict[Future[Detections], list[Ticket]] = {}
        errors: list[BaseException] = []

        def wait_for(ticket: Ticket | None) -> None:
            if ticket is not None:
                outstanding.setdefault(ticket.future, []).append(ticket)

        def settle(done: set[Future[Detections]]) -> None:
            # Decided as soon as a batch is back: its hints are there for the next frames.
            for future in done:
                for ticket in outstanding.pop(future):
                    try:
                        wait_for(self.judge.finish(ticket, order, video_id))
                    except Exception as exc:
                        errors.append(exc)

        for frame in frames:
            wait_for(self.judge.start(frame, frames_dir / frame.file, order, video_id))
            settle({f for f in outstanding if f.done()})
        while outstanding:
            settle(self.detector.wait(outstanding, FIRST_COMPLETED))
        if errors:
            raise errors[0]
        return frames
