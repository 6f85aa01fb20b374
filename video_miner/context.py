"""What every stage of one mining run shares: config, registry, folders, live counters."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import MinerConfig
from .errors import MinerError, disk_full
from .fsutil import free_gb
from .host_gate import HostGate
from .registry import Registry
from .same_content import SameContent


@dataclass
class FrameCounters:
    """Frame-level totals for the progress footer and metrics (stage threads add to them)."""

    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: int) -> None:
        with self._lock:
            self._counts.update(deltas)

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


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
    _by_digest: OrderedDict[str, Future[list[dict[str, Any]]]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, digest: str) -> tuple[Future[list[dict[str, Any]]], bool]:
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

    def forget(self, digest: str, future: Future[list[dict[str, Any]]]) -> None:
        """Drop a claim that will hold no detections (its frame was deferred): the next twin claims anew."""
        with self._lock:
            if self._by_digest.get(digest) is future:
                del self._by_digest[digest]

    def settle(self, digest: str, future: Future[list[dict[str, Any]]], source: Future[list[dict[str, Any]]]) -> None:
        """Copy an owned claim's outcome from ``source`` (its detector request); a failure is
        forgotten, so a later twin asks the detector again."""
        if (error := source.exception()) is not None:
            self.forget(digest, future)
            future.set_exception(error)
        else:
            future.set_result(source.result())


#: Dedup priority of a frame, most preferred first: of near-identical frames a person keeps the best
#: copy: more pixels (the source's, as shown), then less compressed (bits per pixel), then sharper
#: at a common scale; then input order, then time, so the order never depends on timing.
PriorityKey = tuple[int, float, float, int, str, float]


def priority_key(pixels: int, bpp: float, sharpness: float, order: int, video_id: str, timestamp: float) -> PriorityKey:
    return (-pixels, -bpp, -sharpness, order, video_id, timestamp)


@dataclass
class KeptHints:
    """pHashes of frames the detector found the wanted classes in, shared by all filter workers.

    A later frame within the dedup threshold of a more preferred one here will almost surely be
    dropped as its duplicate, so the filter skips the detector for it. Only a hint: the export
    detects any skipped frame that dedup does not drop after all, so the dataset is the same
    whatever this held (see :func:`video_miner.dedup.select_distinct`). Past ``capacity`` entries
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
    dedup = config.dedup
    return KeptHints(dedup.threshold) if dedup.enabled and dedup.skip_detection else None


def check_free_space(config: MinerConfig, output: Path, writing: Path) -> None:
    floor = config.download.min_free_gb
    if floor > 0 and free_gb(output) < floor:
        raise disk_full(writing, floor=f"less than {floor} GB free (download.min_free_gb)")


@dataclass
class MiningContext:
    config: MinerConfig
    registry: Registry
    output: Path
    counters: FrameCounters = field(default_factory=FrameCounters)
    detections: DetectionCache = field(default_factory=DetectionCache)
    hints: KeptHints | None = None
    #: Inputs with identical bytes decode once: the first one's committed frames folder, by content.
    same_content: SameContent[Path] = field(default_factory=SameContent)
    #: Set by the runner: stop taking new videos (disk floor reached).
    request_stop: Callable[[], None] = lambda: None
    #: The first fault of the machine a stage met (disk full, no permission): the run stops.
    fault: MinerError | None = None
    #: Politeness per host for downloads (shared by the download workers).
    hosts: HostGate = field(init=False)
    #: Set by the local engine: hand a source found to be live (a yt-dlp URL) to the live readers,
    #: as ``go_live(source, url, options, ends_cleanly)``.
    go_live: Callable[..., None] | None = None

    def environment_fault(self, error: MinerError) -> None:
        if self.fault is None:
            self.fault = error
        self.request_stop()

    def check_free_space(self, writing: Path) -> None:
        """Before writing a video or its frames: stop (the video stays unfinished) below the floor."""
        check_free_space(self.config, self.output, writing)

    def __post_init__(self) -> None:
        self.hints = self.hints or hints_for(self.config)
        self.hosts = HostGate(self.config.download.max_per_host, self.config.download.sleep_s,
                              backoff_s=max(1.0, self.config.download.backoff_s))

    def priority(self, frame: dict[str, Any], order: int, video_id: str) -> PriorityKey:
        """A filter row's dedup priority (the export computes the same from the registry)."""
        return priority_key(frame["pixels"], frame["bpp"], frame["sharpness"], order, video_id, frame["t"])

    @property
    def work(self) -> Path:
        return self.output / "work"

    @property
    def videos_dir(self) -> Path:
        return self.work / "videos"

    @property
    def frames_dir(self) -> Path:
        return self.work / "frames"

    @property
    def candidates_dir(self) -> Path:
        return self.work / "candidates"

    @property
    def dataset_dir(self) -> Path:
        return self.output / "dataset"
