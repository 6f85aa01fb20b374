"""The live pipeline's second stage: commits each decided camera frame to its segment's registry
rows as it comes (a frame that may be kept moves to the candidates, the others' files go), so an
export at any moment, or after a kill, has every frame decided so far. With tracks on, each frame
is tracked first (:mod:`video_miner.live.tracks`): earlier frames whose boxes it changed (a
confirmed track's id, a hard mark, a missed box) are committed again."""

from __future__ import annotations

from pathlib import Path

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..errors import environment_error
from ..live.hub import LiveHub
from ..live.tracks import LiveTracks, Step
from ..records import Decision, FrameRecord, FrameRow, LiveFrame
from ..store.files import move
from .context import MiningContext


class LiveCollectStage(BaseStageWorker):
    def __init__(self, ctx: MiningContext, hub: LiveHub) -> None:
        self.ctx, self.hub = ctx, hub
        config = ctx.config
        self.tracks = LiveTracks(config.track, config.filter.conf, config.track.appearance < 1 and config.embeddings,
                                 config.filter.no_class_reason()) if config.track.enabled else None
        #: With tracks on: frames that came before an earlier frame of their segment, by sample number.
        self.held: dict[str, dict[int, StageMessage[LiveFrame]]] = {}

    def process(self, msg: StageMessage[LiveFrame]) -> StageOutput:
        try:
            if self.tracks is None:
                self._commit(msg)
                self.hub.settled(msg.item_id)
                return msg
            live = msg.item
            self.held.setdefault(live.video_id, {})[live.frame.index] = msg
            self._commit_ready(live.video_id)
            return msg
        except Exception as exc:
            fault = environment_error(exc, self.ctx.output)
            if fault is not None:
                self.ctx.environment_fault(fault)
                raise fault from exc
            raise

    def _commit_ready(self, video_id: str) -> None:
        """Commit the segment's held frames that no earlier frame is still on its way to: the
        tracker sees them in sample order."""
        held = self.held[video_id]
        while held:
            first = min(held)
            waiting = self.hub.first_in_flight(video_id)
            if waiting is not None and waiting < first:
                return
            msg = held.pop(first)
            self._commit(msg)
            self.hub.settled(msg.item_id)
        del self.held[video_id]

    def close(self) -> None:
        """The end of the live pipeline: frames still held (an earlier one failed or was stopped)
        are committed in order."""
        for held in self.held.values():
            for index in sorted(held):
                self._commit(held[index])
        self.held.clear()

    def _commit(self, msg: StageMessage[LiveFrame]) -> None:
        assert msg.input_path is not None
        live = msg.item
        frame = live.frame
        step = self.tracks.see(live.source_id, live.video_id, frame, msg.input_path) if self.tracks else None
        if frame.keeps_file:
            move(msg.input_path, self._kept(live.video_id, frame), self.ctx.layout.output)
        elif step is None or frame.decision != Decision.NEGATIVE:
            msg.input_path.unlink(missing_ok=True)
        # else: a missed box the next frame finds would make it a candidate; its picture waits
        self.ctx.registry.add_frames([self._row(live.video_id, frame)])
        if live.media.display_size is not None:
            self.ctx.registry.set_media(live.video_id, live.media)
        self.ctx.counters.add(frames_extracted=1, frames_filtered=int(not frame.keeps_file))
        if step is not None:
            self._after(live, step)

    def _kept(self, video_id: str, frame: FrameRecord) -> Path:
        return self.ctx.layout.candidates_dir / video_id / frame.file

    def _row(self, video_id: str, frame: FrameRecord) -> FrameRow:
        file = self.ctx.layout.relative(self._kept(video_id, frame)) if frame.keeps_file else frame.file
        return FrameRow.of(video_id, frame, file)

    def _after(self, live: LiveFrame, step: Step) -> None:
        """Commit what tracking ``live``'s frame changed in earlier frames of its segment."""
        held = self.hub.folder / live.video_id
        if step.recovered is not None:
            move(held / step.recovered.file, self._kept(live.video_id, step.recovered), self.ctx.layout.output)
        if step.again:
            self.ctx.registry.update_frames([self._row(live.video_id, f) for f in step.again])
        if step.release is not None:
            (held / step.release.file).unlink(missing_ok=True)
        for track, label, t in step.new_tracks:
            self.hub.new_track(live, track, label, t)
        self.ctx.counters.add(tracks=len(step.new_tracks), frames_hard=step.hard,
                              frames_filtered=-int(step.recovered is not None))
