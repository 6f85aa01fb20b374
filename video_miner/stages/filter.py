"""Stage 3 (the GPU stage): the detector, on the frames the prefilters passed.

The prefilters (:mod:`video_miner.prefilter`, run while extracting) dropped blurry frames and
static stretches. Byte-identical frames seen before (the same video listed twice) reuse their detections,
and near-duplicates of a more preferred frame already found to show the classes are deferred:
dedup will almost surely drop them, and the export detects the few it does not.

The rest go one by one to the run's shared detector (:class:`~video_miner.detector.SharedDetector`),
whose batcher fills each batch with frames of every video in flight (and holds at most two batches'
worth, so a worker loading frames faster than the model works waits for room). A worker decides
each frame as soon as its batch is back, so those detections can defer its later frames.
"""

from __future__ import annotations

from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from async_pipeline import StageMessage, StageOutput

from ..context import MiningContext
from ..detector import Detections, SharedDetector
from ..fsutil import atomic_write_json, read_json
from ..registry import Decision, State
from .base import MinerStage
from .extract import read_index

RESULT = "filter.json"
#: What the detection cache holds for a frame that was deferred: its byte-identical twins are too.
DEFERRED: Detections = []


class FrameJudge:
    """The filter's decision for one frame, shared by the file and the live filter stages."""

    def __init__(self, ctx: MiningContext, detector: SharedDetector) -> None:
        self.ctx = ctx
        self.detector = detector

    def start(self, row: dict[str, Any], image: Path, order: int, video_id: str) -> Future[Detections] | None:
        """Decide ``row`` now (a prefilter dropped it, or it is deferred), or return the future of
        its detections: a byte-identical twin's, or its own request to the batcher."""
        if row["decision"] == Decision.FILTERED:
            return None
        future, owner = self.ctx.detections.claim(row["digest"])
        if not owner:  # a byte-identical frame was detected, or is in a batch now
            return future
        if self.ctx.hints is not None and self.ctx.hints.covers(row["phash"], self.ctx.priority(row, order, video_id)):
            future.set_result(DEFERRED)  # its byte-identical twins are deferred too
            self._defer(row)
            return None
        row["detected"] = True
        request = self._submit(image)
        # Twins in other workers wait on ``future``: it is settled whatever happens.
        request.add_done_callback(partial(self.ctx.detections.settle, row["digest"], future))
        return future

    def finish(self, row: dict[str, Any], future: Future[Detections], order: int, video_id: str) -> None:
        """Decide ``row`` from its finished future (raises the detector's error, if any)."""
        dets = future.result()
        if dets is DEFERRED:
            self._defer(row)
            return
        row["detections"] = dets
        row["decision"] = Decision.CANDIDATE if dets else Decision.NEGATIVE
        if not dets:
            row["reason"] = self.ctx.config.filter.no_class_reason()
        elif self.ctx.hints is not None:
            self.ctx.hints.add(row["phash"], self.ctx.priority(row, order, video_id))

    def _submit(self, path: Path) -> Future[Detections]:
        try:
            with Image.open(path) as im:
                return self.detector.batcher.submit(im.convert("RGB"))
        except Exception as exc:  # an unreadable frame fails its video, as the detector's error would
            failed: Future[Detections] = Future()
            failed.set_exception(exc)
            return failed

    @staticmethod
    def _defer(row: dict[str, Any]) -> None:
        row["decision"] = Decision.DEFERRED
        row["reason"] = "near-duplicate of a frame with the classes: detection deferred to the export"


class FilterStage(MinerStage):
    # Per-call state only: the model sits behind the shared batcher.
    thread_safe = True

    def __init__(self, ctx: MiningContext, detector: SharedDetector) -> None:
        super().__init__(ctx)
        self.detector = detector
        self.judge = FrameJudge(ctx, detector)

    def setup(self) -> None:
        # In the worker, not at start-up: the first videos download and decode meanwhile. The
        # first worker here warms the shared model; the others wait for it.
        self.detector.warm_up()

    def handle(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata["video_id"]
        frames_dir = msg.input_path
        assert frames_dir is not None
        row = self.ctx.registry.video(video_id)
        if row and row["state"] == State.FILTERED and (frames_dir / RESULT).exists():
            return msg
        order = row["ord"] if row else msg.metadata["order"]
        rows = self.filter_frames(frames_dir, read_index(frames_dir)["frames"], video_id, order)
        atomic_write_json(frames_dir / RESULT, rows)
        candidates = sum(r["decision"] == Decision.CANDIDATE for r in rows)
        deferred = sum(r["decision"] == Decision.DEFERRED for r in rows)
        self.ctx.counters.add(frames_candidates=candidates, frames_deferred=deferred,
                              frames_filtered=len(rows) - candidates - deferred,
                              frames_to_detector=sum(r["detected"] for r in rows))
        self.ctx.registry.set_state(video_id, State.FILTERED)
        return msg

    def filter_frames(self, frames_dir: Path, frames: list[dict[str, Any]], video_id: str,
                      order: int) -> list[dict[str, Any]]:
        """``frames``: the extract stage's rows, measures and prefilter decisions included."""
        rows: list[dict[str, Any]] = []
        outstanding: dict[Future[Detections], dict[str, Any]] = {}
        errors: list[BaseException] = []

        def settle(done: set[Future[Detections]]) -> None:
            # Decided as soon as a batch is back: its hints are there for the next frames.
            for future in done:
                row = outstanding.pop(future)
                try:
                    self.judge.finish(row, future, order, video_id)
                except Exception as exc:
                    errors.append(exc)

        for frame in frames:
            row = {"detections": [], "detected": False, **frame}
            rows.append(row)
            future = self.judge.start(row, frames_dir / row["file"], order, video_id)
            if future is not None:
                outstanding[future] = row
            settle({f for f in outstanding if f.done()})
        settle(self.detector.batcher.wait(outstanding))
        if errors:
            raise errors[0]
        return rows


def read_result(frames_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_json(frames_dir / RESULT)
    return rows
