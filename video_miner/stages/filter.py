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

from concurrent.futures import FIRST_COMPLETED, Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from async_pipeline import StageMessage, StageOutput

from ..context import MiningContext, PriorityKey
from ..detector import Detections, SharedDetector
from ..fsutil import atomic_write_json, read_json
from ..registry import Decision, State
from .base import MinerStage
from .extract import read_index

RESULT = "filter.json"
#: What a frame's byte-identical twins waiting on it hear when it was deferred: whether they are
#: too depends on their own priority (a twin may be more preferred), so each decides again.
DEFERRED: Detections = []


@dataclass
class Ticket:
    """A frame waiting for ``future``: its detections, or those of a more preferred near frame in
    a batch now (then ``claim``, its own entry in the detection cache, is still to be settled)."""

    row: dict[str, Any]
    future: Future[Detections]
    claim: Future[Detections] | None = None
    image: Path | None = None
    #: Waiting on a byte-identical frame's claim rather than on its own.
    twin: bool = False


class FrameJudge:
    """The filter's decision for one frame, shared by the file and the live filter stages."""

    def __init__(self, ctx: MiningContext, detector: SharedDetector) -> None:
        self.ctx = ctx
        self.detector = detector

    def start(self, row: dict[str, Any], image: Path, order: int, video_id: str) -> Ticket | None:
        """Decide ``row`` now (a prefilter dropped it, or it is deferred), or return what it waits
        for: its detections (a byte-identical twin's, or its own request to the batcher), or first
        the detections of a more preferred near frame in a batch now."""
        if row["decision"] == Decision.FILTERED:
            return None
        claim, owner = self.ctx.detections.claim(row["digest"])
        if not owner:  # a byte-identical frame was detected, or is in a batch now
            return Ticket(row, claim, image=image, twin=True)
        return self._route(Ticket(row, claim, claim, image), self.ctx.priority(row, order, video_id))

    def _route(self, ticket: Ticket, key: PriorityKey) -> Ticket | None:
        """Defer the frame, make it wait on a blocker, or send it to the detector."""
        row, claim, hints = ticket.row, ticket.claim, self.ctx.hints
        assert claim is not None and ticket.image is not None
        if hints is not None and hints.covers(row["phash"], key):
            self._defer(row, claim)
            return None
        if hints is not None and (blocker := hints.blocker(row["phash"], key)) is not None:
            return Ticket(row, blocker, claim, ticket.image)
        row["detected"] = True
        request = self._submit(ticket.image)
        # Twins in other workers wait on the claim: it is settled whatever happens.
        request.add_done_callback(partial(self.ctx.detections.settle, row["digest"], claim))
        if hints is not None:
            hints.in_flight(row["phash"], key, claim)
        return Ticket(row, claim)

    def finish(self, ticket: Ticket, order: int, video_id: str) -> Ticket | None:
        """Decide the ticket's frame from its finished future (raises the detector's error, if
        any); a frame that waited on a blocker may go on waiting, now for its own detections."""
        row = ticket.row
        key = self.ctx.priority(row, order, video_id)
        if ticket.future is not ticket.claim and ticket.claim is not None:  # it waited on a blocker
            shown = ticket.future.exception() is None and bool(ticket.future.result())
            if shown:
                self._defer(row, ticket.claim)
                return None
            return self._route(Ticket(row, ticket.claim, ticket.claim, ticket.image), key)
        dets = ticket.future.result()
        if dets is DEFERRED and ticket.twin and ticket.image is not None:
            # Its twin was deferred for a near frame more preferred than that twin; this frame may
            # rank above that one, so the outcome must not depend on which twin claimed first.
            return self.start(row, ticket.image, order, video_id)
        row["detections"] = dets
        row["decision"] = Decision.CANDIDATE if dets else Decision.NEGATIVE
        if not dets:
            row["reason"] = self.ctx.config.filter.no_class_reason()
        elif self.ctx.hints is not None:
            self.ctx.hints.add(row["phash"], key)
        return None

    def _submit(self, path: Path) -> Future[Detections]:
        try:
            with Image.open(path) as im:
                return self.detector.batcher.submit(im.convert("RGB"))
        except Exception as exc:  # an unreadable frame fails its video, as the detector's error would
            failed: Future[Detections] = Future()
            failed.set_exception(exc)
            return failed

    def _defer(self, row: dict[str, Any], claim: Future[Detections]) -> None:
        """Defer ``row``; its twins waiting on ``claim`` decide again, one of them claiming anew."""
        self.ctx.detections.forget(row["digest"], claim)
        claim.set_result(DEFERRED)
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
            row = {"detections": [], "detected": False, **frame}
            rows.append(row)
            wait_for(self.judge.start(row, frames_dir / row["file"], order, video_id))
            settle({f for f in outstanding if f.done()})
        while outstanding:
            settle(self.detector.batcher.wait(outstanding, FIRST_COMPLETED))
        if errors:
            raise errors[0]
        return rows


def read_result(frames_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_json(frames_dir / RESULT)
    return rows
