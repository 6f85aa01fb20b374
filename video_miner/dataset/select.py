"""Which done frames make the dataset: every frame the prefilters passed, walked in dedup priority;
a frame is kept if it shows the classes and no kept frame is its near-duplicate, by pHash, then by
content (:mod:`.semantic`); then, with a budget, the frames that cover the rest best
(:mod:`.budget`). Frames whose detection the filter deferred are detected here, only where it
matters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import MinerConfig
from ..records import Decision, Detections, FrameRow
from ..store.registry import Registry
from .budget import BudgetRule, choose
from .dedup import KEPT, NO, UNKNOWN, YES, select_distinct
from .priority import row_priority
from .semantic import Vectors, content_duplicates, sure_texts

log = logging.getLogger(__name__)

ELIGIBILITY = {Decision.CANDIDATE: YES, Decision.NEGATIVE: NO, Decision.DEFERRED: UNKNOWN}
#: A detector over image files: the detections of each, in order.
Labeller = Callable[[list[Path]], list[Detections]]


@dataclass(frozen=True)
class SameContent:
    """A duplicate found by content: the kept frame it stands for, and how alike they are."""

    of: str
    picture: float
    objects: float
    #: The duplicate of ``of`` it was found through (a chained duplicate); None when it matched ``of``.
    via: str | None = None


@dataclass
class Budgeted:
    #: Kept frames, in the order the budget picked them.
    picks: list[str]
    #: Frames dedup kept that the budget left out.
    left_out: set[str]
    #: The largest distance (1 - cosine) from a frame of the pool to its nearest pick.
    radius: float


@dataclass
class Selection:
    #: The pool: every frame the prefilters passed, decisions updated by detections made here.
    pool: list[FrameRow]
    kept: list[FrameRow]
    #: Frame key -> the key of the kept frame it duplicates.
    duplicate_of: dict[str, str]
    #: Deferred frames detected here (no kept frame covered them).
    detected: int
    #: Duplicates found by content (a subset of ``duplicate_of``).
    same_content: dict[str, SameContent] = field(default_factory=dict)
    budget: Budgeted | None = None
    #: Frames left out because their shot already had ``extract.per_shot`` kept frames.
    over_shot: set[str] = field(default_factory=set)


def select_frames(registry: Registry, rows: list[FrameRow], order: dict[str, int], config: MinerConfig, output: Path,
                  detect: Labeller | None, detect_batch: int, earlier_picks: Sequence[str] = ()) -> Selection:
    """``detect`` runs the filter's detector on frames whose detection was deferred and that no kept
    frame covers (see :func:`video_miner.dataset.dedup.select_distinct`), ``detect_batch`` at a
    time; answers go to the registry. ``earlier_picks``: the last export's budget picks, kept first."""
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
                              reason=None if dets else getattr(dets, "reason", None) or config.filter.no_class_reason(),
                              embedding=getattr(dets, "embedding", None))
        registry.update_frames([pool[i] for i in nodes])
        return [bool(d) for d in found]

    threshold = config.phash_radius
    dup_of = select_distinct(hashes, np.array(priority, dtype=np.int64), threshold, eligible, resolve,
                             batch=detect_batch)
    walk = [i for i in priority if dup_of[i] == KEPT]
    by_content = config.dedup.enabled and config.dedup.semantic and bool(walk)
    # read only when a pass compares them (their warnings too)
    vectors = _vectors([pool[i] for i in walk] if by_content or config.select.budget is not None else [])
    local = list(range(len(walk)))  # the frames still in the running, as places in ``walk``
    same_content: dict[str, SameContent] = {}
    if by_content:
        labels = [[d.label for d in pool[i].detections] for i in walk]
        # Text read counts: the same bus with another plate is other content.
        texts = [sure_texts([(d.text, d.conf) for d in pool[i].detections if d.text is not None]) for i in walk]
        found = content_duplicates(vectors, labels, local, config.dedup.picture_similarity,
                                   config.dedup.object_similarity, config.dedup.chain_similarity,
                                   texts if any(texts) else None)
        for place, match in found.items():
            dup_of[walk[place]] = walk[match.of]
            same_content[pool[walk[place]].key] = SameContent(
                pool[walk[match.of]].key, match.picture, match.objects,
                None if match.via is None else pool[walk[match.via]].key)
        local = [place for place in local if place not in found]
    over_shot: set[str] = set()
    if config.extract.per_shot is not None:
        capped = _per_shot([pool[walk[place]] for place in local], config.extract.per_shot)
        over_shot = {pool[walk[local[at]]].key for at in capped}
        local = [place for at, place in enumerate(local) if at not in capped]
    budgeted = _budget(config, [pool[walk[place]] for place in local], vectors, local, earlier_picks)
    left_out = (budgeted.left_out if budgeted else set()) | over_shot
    kept = [pool[i] for i in np.flatnonzero(dup_of == KEPT).tolist() if pool[i].key not in left_out]
    duplicate_of = {pool[i].key: pool[d].key for i, d in enumerate(dup_of.tolist()) if d >= 0}
    return Selection(pool, kept, duplicate_of, len(detected), same_content, budgeted, over_shot)


def _per_shot(walk: list[FrameRow], cap: int) -> set[int]:
    """Positions in ``walk`` (kept frames, most preferred first) past the first ``cap`` of their
    shot; frames of no known shot (live, animated images) are never capped."""
    seen: Counter[tuple[str, int]] = Counter()
    over = set()
    for local, row in enumerate(walk):
        if row.shot is None:
            continue
        seen[(row.video_id, row.shot)] += 1
        if seen[(row.video_id, row.shot)] > cap:
            over.add(local)
    return over


def _vectors(rows: list[FrameRow]) -> Vectors:
    """The rows' embeddings (one that does not fit its row's detections is left out; an unreadable
    one is said, and its frame compared by pHash only: a registry is untrusted input)."""
    vectors, refused = Vectors.decode([r.embedding or None for r in rows], [len(r.detections) for r in rows])
    for i, why in sorted(refused.items()):
        log.warning("%s: its embedding is unreadable (%s): compared by pHash only", rows[i].key, why)
    return vectors


def _budget(config: MinerConfig, kept: list[FrameRow], vectors: Vectors, places: list[int],
            earlier_picks: Sequence[str]) -> Budgeted | None:
    """The budget's picks among ``kept`` (in priority order; their vectors at ``places``), or None
    without a budget."""
    s = config.select
    if s.budget is None:
        return None
    index = {r.key: i for i, r in enumerate(kept)}
    rule = BudgetRule(s.budget, dict(s.per_class_min), s.hard_fraction, config.filter.conf, s.hard_margin)
    chosen = choose(vectors.take(places).whole, [[d.label for d in r.detections] for r in kept],
                    [[d.conf for d in r.detections] for r in kept], rule,
                    [index[k] for k in earlier_picks if k in index])
    picks = [kept[i].key for i in chosen.picked]
    return Budgeted(picks, set(index) - set(picks), round(chosen.radius, 4))
