"""Which done frames make the dataset: every frame the prefilters passed, walked in dedup priority;
a frame is kept if it shows the classes and no kept frame is its near-duplicate. Frames whose
detection the filter deferred are detected here, only where it matters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import MinerConfig
from ..records import Decision, Detection, FrameRow
from ..store.registry import Registry
from .dedup import KEPT, NO, UNKNOWN, YES, select_distinct
from .priority import row_priority

ELIGIBILITY = {Decision.CANDIDATE: YES, Decision.NEGATIVE: NO, Decision.DEFERRED: UNKNOWN}
#: A detector over image files: the detections of each, in order.
Labeller = Callable[[list[Path]], list[list[Detection]]]


@dataclass
class Selection:
    #: The pool: every frame the prefilters passed, decisions updated by detections made here.
    pool: list[FrameRow]
    kept: list[FrameRow]
    #: Frame key -> the key of the kept frame it duplicates.
    duplicate_of: dict[str, str]
    #: Deferred frames detected here (no kept frame covered them).
    detected: int


def select_frames(registry: Registry, rows: list[FrameRow], order: dict[str, int], config: MinerConfig, output: Path,
                  detect: Labeller | None, detect_batch: int) -> Selection:
    """``detect`` runs the filter's detector on frames whose detection was deferred and that no kept
    frame covers (see :func:`video_miner.dataset.dedup.select_distinct`), ``detect_batch`` at a
    time; answers go to the registry."""
    # Every frame the prefilters passed takes part: a near-duplicate of a kept frame is reported as
    # its duplicate whether or not the detector saw it, so the manifest never depends on which
    # detections were skipped.
    pool = [r for r in rows if r.decision != Decision.FILTERED]
    priority = sorted(range(len(pool)), key=lambda i: row_priority(pool[i], order[pool[i].video_id]))
    eligible = np.array([ELIGIBILITY[r.decision] for r in pool], dtype=np.int8)
    hashes = np.array([r.phash for r in pool], dtype=np.uint64)
    detected: list[int] = []

    def resolve(nodes: list[int]) -> list[bool]:
        detected.extend(nodes)
        if detect is None:
            raise RuntimeError("frames with deferred detections need a detector to export")
        found = detect([output / pool[i].file for i in nodes])
        for i, dets in zip(nodes, found, strict=True):
            pool[i] = replace(pool[i], detections=dets, decision=Decision.CANDIDATE if dets else Decision.NEGATIVE,
                              reason=None if dets else config.filter.no_class_reason())
        registry.update_frames([pool[i] for i in nodes])
        return [bool(d) for d in found]

    threshold = config.dedup.threshold if config.dedup.enabled else -1
    dup_of = select_distinct(hashes, np.array(priority, dtype=np.int64), threshold, eligible, resolve,
                             batch=detect_batch)
    kept = [pool[i] for i in np.flatnonzero(dup_of == KEPT).tolist()]
    duplicate_of = {pool[i].key: pool[d].key for i, d in enumerate(dup_of.tolist()) if d >= 0}
    return Selection(pool, kept, duplicate_of, len(detected))
