"""The filter's decision for one frame, shared by the file and the live filter stages.

Byte-identical frames seen before (the same video listed twice) reuse their detections, and
near-duplicates of a more preferred frame already found to show the classes are deferred: dedup
will almost surely drop them, and the export detects the few it does not. The rest go one by one to
the run's shared detector, whose batcher fills each batch with frames of every video in flight.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from PIL import Image

from async_pipeline import DynamicBatcher

from ..dataset.priority import PriorityKey, frame_priority
from ..records import Decision, FrameRecord
from .hints import DetectionCache, Detections, KeptHints


class FrameModels(Protocol):
    """What answers a frame: the lone detector (:class:`~.detector.SharedDetector`) or several
    models joined per frame (:class:`~.model_graph.ModelGraph`)."""

    @property
    def batch_size(self) -> int: ...

    @property
    def batchers(self) -> tuple[DynamicBatcher[Image.Image, Detections], ...]: ...

    def warm_up(self) -> None: ...

    def submit(self, image: Image.Image, key: tuple[str, float], live: bool = False) -> Future[Detections]: ...

    def wait(self, futures: Iterable[Future[Detections]], return_when: str = ...) -> set[Future[Detections]]: ...

    def map(self, images: Iterable[Image.Image]) -> list[Detections]: ...

#: What a frame's byte-identical twins waiting on it hear when it was deferred: whether they are
#: too depends on their own priority (a twin may be more preferred), so each decides again.
DEFERRED = Detections()


@dataclass
class Ticket:
    """A frame waiting for ``future``: its detections, or those of a more preferred near frame in
    a batch now (then ``claim``, its own entry in the detection cache, is still to be settled)."""

    frame: FrameRecord
    future: Future[Detections]
    claim: Future[Detections] | None = None
    image: Path | None = None
    #: Waiting on a byte-identical frame's claim rather than on its own.
    twin: bool = False


class FrameJudge:
    """The filter's decision for one frame, shared by the file and the live filter stages."""

    def __init__(self, detector: FrameModels, detections: DetectionCache, hints: KeptHints | None,
                 no_class_reason: str, live: bool = False) -> None:
        self.detector = detector
        #: Live frames: several models meet them with the realtime synchronizer.
        self.live = live
        self.detections = detections
        self.hints = hints
        #: What a frame without the classes is told (``FilterConfig.no_class_reason``).
        self.no_class_reason = no_class_reason

    def start(self, frame: FrameRecord, image: Path, order: int, video_id: str) -> Ticket | None:
        """Decide ``frame`` now (a prefilter dropped it, or it is deferred), or return what it waits
        for: its detections (a byte-identical twin's, or its own request to the batcher), or first
        the detections of a more preferred near frame in a batch now."""
        if frame.decision == Decision.FILTERED:
            return None
        assert frame.digest is not None, "a frame the prefilters passed carries its digest"
        claim, owner = self.detections.claim(frame.digest)
        if not owner:  # a byte-identical frame was detected, or is in a batch now
            return Ticket(frame, claim, image=image, twin=True)
        return self._route(Ticket(frame, claim, claim, image), frame_priority(frame, order, video_id), video_id)

    def _route(self, ticket: Ticket, key: PriorityKey, video_id: str) -> Ticket | None:
        """Defer the frame, make it wait on a blocker, or send it to the detector."""
        frame, claim, hints = ticket.frame, ticket.claim, self.hints
        assert claim is not None and ticket.image is not None and frame.digest is not None
        if hints is not None and hints.covers(frame.phash, key):
            self._defer(frame, claim)
            return None
        if hints is not None and (blocker := hints.blocker(frame.phash, key)) is not None:
            return Ticket(frame, blocker, claim, ticket.image)
        frame.detected = True
        request = self._submit(ticket.image, (video_id, frame.t))
        # Twins in other workers wait on the claim: it is settled whatever happens.
        request.add_done_callback(partial(self.detections.settle, frame.digest, claim))
        if hints is not None:
            hints.in_flight(frame.phash, key, claim)
        return Ticket(frame, claim)

    def finish(self, ticket: Ticket, order: int, video_id: str) -> Ticket | None:
        """Decide the ticket's frame from its finished future (raises the detector's error, if
        any); a frame that waited on a blocker may go on waiting, now for its own detections."""
        frame = ticket.frame
        key = frame_priority(frame, order, video_id)
        if ticket.future is not ticket.claim and ticket.claim is not None:  # it waited on a blocker
            shown = ticket.future.exception() is None and ticket.future.result().kept
            if shown:
                self._defer(frame, ticket.claim)
                return None
            return self._route(Ticket(frame, ticket.claim, ticket.claim, ticket.image), key, video_id)
        dets = ticket.future.result()
        if dets is DEFERRED and ticket.twin and ticket.image is not None:
            # Its twin was deferred for a near frame more preferred than that twin; this frame may
            # rank above that one, so the outcome must not depend on which twin claimed first.
            return self.start(frame, ticket.image, order, video_id)
        frame.detections = list(dets)
        frame.weak = dets.weak
        kept = dets.kept
        frame.embedding = dets.embedding if kept else None
        frame.decision = Decision.CANDIDATE if kept else Decision.NEGATIVE
        frame.sync = dets.sync
        if not kept:
            frame.reason = dets.reason or self.no_class_reason
        elif self.hints is not None:
            self.hints.add(frame.phash, key)
        return None

    def _submit(self, path: Path, key: tuple[str, float]) -> Future[Detections]:
        try:
            with Image.open(path) as im:
                return self.detector.submit(im.convert("RGB"), key, self.live)
        except Exception as exc:  # an unreadable frame fails its video, as the detector's error would
            failed: Future[Detections] = Future()
            failed.set_exception(exc)
            return failed

    def _defer(self, frame: FrameRecord, claim: Future[Detections]) -> None:
        """Defer ``frame``; its twins waiting on ``claim`` decide again, one of them claiming anew."""
        assert frame.digest is not None
        self.detections.forget(frame.digest, claim)
        claim.set_result(DEFERRED)
        frame.decision = Decision.DEFERRED
        frame.reason = "near-duplicate of a frame with the classes: detection deferred to the export"
