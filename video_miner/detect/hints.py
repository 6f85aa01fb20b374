"""What lets the filter skip the detector without changing the dataset: detections shared by
byte-identical frames, and hints of frames near a more preferred frame that shows the classes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import MinerConfig
from ..dataset.priority import PriorityKey
from ..records import Detections

__all__ = ["DetectionCache", "Detections", "KeptHints"]


@dataclass
class DetectionCache:
    """Detections by the exact bytes of a frame, shared by all filter workers, in flight or done.

    Only byte-identical frames (the same video listed twice, re-uploads of one file) reuse a result:
    the model is deterministic, so the dataset is the same whichever video came first. A frame
    whose twin is still in a detector batch waits for that batch instead of being sent again. The
    most recent ``capacity`` digests are kept (a camera never repeats a frame byte for byte), so
    memory stays flat however long a run goes; forgetting one only costs a detection.
    """

    capacity: int = 20_000
    _by_digest: OrderedDict[str, Future[Detections]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, digest: str) -> tuple[Future[Detections], bool]:
        """The detections of this content (maybe still being computed), and whether the caller
        owns them: an owner must :meth:`settle` the future."""
        with self._lock:
            future = self._by_digest.get(digest)
            if future is not None:
                self._by_digest.move_to_end(digest)
                return future, False
            future = Future()
            self._by_digest[digest] = future
            while len(self._by_digest) > self.capacity:
                self._by_digest.popitem(last=False)
            return future, True

    def forget(self, digest: str, future: Future[Detections]) -> None:
        """Drop a claim that will hold no detections (its frame was deferred): the next twin claims anew."""
        with self._lock:
            if self._by_digest.get(digest) is future:
                del self._by_digest[digest]

    def settle(self, digest: str, future: Future[Detections], source: Future[Detections]) -> None:
        """Copy an owned claim's outcome from ``source`` (its detector request); a failure is
        forgotten, so a later twin asks the detector again."""
        if (error := source.exception()) is not None:
            self.forget(digest, future)
            future.set_exception(error)
        else:
            future.set_result(source.result())


@dataclass
class KeptHints:
    """pHashes of frames the detector found the wanted classes in, shared by all filter workers.

    A later frame within the dedup threshold of a more preferred one here will almost surely be
    dropped as its duplicate, so the filter skips the detector for it. Only a hint: the export
    detects any skipped frame that dedup does not drop after all, so the dataset is the same
    whatever this held (see :func:`video_miner.dataset.dedup.select_distinct`). Past ``capacity`` entries
    the older half is forgotten (a week of camera frames must not grow memory), at the cost of a few
    detections.
    """

    threshold: int
    capacity: int = 200_000
    _hashes: np.ndarray = field(default_factory=lambda: np.empty(1024, dtype=np.uint64))
    _keys: list[PriorityKey] = field(default_factory=list)
    _flight: dict[int, tuple[int, PriorityKey, Future[Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, phash: int, key: PriorityKey) -> None:
        with self._lock:
            n = len(self._keys)
            if n >= self.capacity:
                # New arrays, not moves in place: a snapshot ``covers`` holds stays consistent.
                keep = n // 2
                self._hashes = np.concatenate([self._hashes[n - keep:n], np.empty(len(self._hashes) - keep, np.uint64)])
                self._keys = self._keys[n - keep:]
                n = keep
            if n == len(self._hashes):
                self._hashes = np.concatenate([self._hashes, np.empty_like(self._hashes)])
            self._hashes[n] = phash
            self._keys.append(key)

    def in_flight(self, phash: int, key: PriorityKey, detections: Future[Any]) -> None:
        """A frame sent to the detector: until ``detections`` are in, a less preferred frame near
        it may wait for them instead of being sent too (see :meth:`blocker`)."""
        with self._lock:
            self._flight[id(detections)] = (phash, key, detections)
        detections.add_done_callback(self._landed)

    def _landed(self, detections: Future[Any]) -> None:
        with self._lock:
            self._flight.pop(id(detections), None)

    def blocker(self, phash: int, key: PriorityKey) -> Future[Any] | None:
        """The detections of a more preferred frame within the threshold that is in a batch now:
        if it shows the classes, this frame is its duplicate whatever it shows."""
        with self._lock:
            flying = list(self._flight.values())
        for other, other_key, detections in flying:
            if other_key < key and (other ^ phash).bit_count() <= self.threshold and not detections.done():
                return detections
        return None

    def covers(self, phash: int, key: PriorityKey) -> bool:
        """Whether a more preferred frame within the threshold is here."""
        with self._lock:
            # Appends never move the first n entries: a view and the length are a consistent snapshot.
            keys, hashes = self._keys, self._hashes[:len(self._keys)]
        near = np.flatnonzero(np.bitwise_count(hashes ^ np.uint64(phash)) <= self.threshold)
        return any(keys[i] < key for i in near.tolist())


def hints_for(config: MinerConfig) -> KeptHints | None:
    radius = config.phash_radius
    return KeptHints(radius) if radius >= 0 and config.dedup.skip_detection else None
