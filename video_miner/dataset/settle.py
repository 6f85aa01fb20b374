"""Before choosing: the deferred frames that matter are detected, and recorded.

The filter skipped the detector for frames near a more preferred frame that shows the classes
(:mod:`video_miner.detect.judge`): dedup almost surely drops them. The few that no kept frame
covers after all need their detections before frames can be chosen. This step asks for exactly
those (the greedy pHash walk of :func:`~video_miner.dataset.dedup.select_distinct`, asking only
where the answer changes the outcome) and returns their rows with what the detector found; the
export records them in the registry. Choosing (:mod:`.select`) then reads only settled records and
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import MinerConfig
from ..records import Decision, Detections, FrameRow
from .dedup import NO, UNKNOWN, YES, select_distinct
from .priority import row_priority

#: A detector over image files: the detections of each, in order.
Labeller = Callable[[list[Path]], list[Detections]]
ELIGIBILITY = {Decision.CANDIDATE: YES, Decision.NEGATIVE: NO, Decision.DEFERRED: UNKNOWN}


def pool_of(rows: list[FrameRow], order: dict[str, int], pinned: frozenset[str] = frozenset()
            ) -> tuple[list[FrameRow], np.ndarray, np.ndarray, np.ndarray]:
    """The frames the prefilters passed, their dedup priority (indices, most preferred first;
    ``pinned``: frames a reviewer saw, see :data:`~.priority.PINNED_PIXELS`), their eligibility
    (YES, NO, UNKNOWN: deferred) and pHashes."""
    pool = [r for r in rows if r.decision != Decision.FILTERED]
    priority = np.array(sorted(range(len(pool)), key=lambda i: row_priority(pool[i], order[pool[i].video_id],
                                                                             pool[i].key in pinned)), dtype=np.int64)
    eligible = np.array([ELIGIBILITY[r.decision] for r in pool], dtype=np.int8)
    hashes = np.array([r.phash for r in pool], dtype=np.uint64)
    return pool, priority, eligible, hashes


def detected(row: FrameRow, found: Detections, config: MinerConfig) -> FrameRow:
    """``row`` as the detector's answer leaves it."""
    keep = found.kept
    return replace(row, detections=list(found), decision=Decision.CANDIDATE if keep else Decision.NEGATIVE,
                   reason=None if keep else found.reason or config.filter.no_class_reason(),
                   embedding=found.embedding)


def settle(rows: list[FrameRow], order: dict[str, int], config: MinerConfig, output: Path,
           detect: Labeller | None, batch: int, pinned: frozenset[str] = frozenset()) -> list[FrameRow]:
    """The deferred frames whose detections the choice needs, detected (``batch`` at a time): their
    rows as they are now, to record. None are needed when every frame was detected. ``pinned``:
    as :func:`~.select.select_frames` is given it, so both walk in the same order."""
    pool, priority, eligible, hashes = pool_of(rows, order, pinned)
    if not (eligible == UNKNOWN).any():
        return []
    done: list[FrameRow] = []

    def resolve(nodes: list[int]) -> list[bool]:
        now = detect_rows([pool[i] for i in nodes], config, output, detect)
        for i, row in zip(nodes, now, strict=True):
            pool[i] = row
        done.extend(now)
        return [row.decision == Decision.CANDIDATE for row in now]

    select_distinct(hashes, priority, config.phash_radius, eligible, resolve, batch=batch)
    return done


def detect_rows(rows: list[FrameRow], config: MinerConfig, output: Path, detect: Labeller | None) -> list[FrameRow]:
    """``rows`` (deferred frames) as the detector's answers for their files leave them."""
    if detect is None:
        raise RuntimeError("frames with deferred detections need a detector to export")
    found = detect([output / row.file for row in rows])
    return [detected(row, dets, config) for row, dets in zip(rows, found, strict=True)]
