"""Cross-video near-duplicate removal over 64-bit pHashes, vectorized with numpy.

Finding near pairs: the 64 bits are cut into ``m = threshold + 2`` bands. Two hashes within
``threshold`` bits differ in at most ``threshold`` bands, so at least two bands match exactly
(pigeonhole). For every pair of bands, hashes are sorted by those two bands together; only hashes
in the same bucket are compared (``bitwise_count`` of the XOR). That finds every pair within the
threshold while comparing a tiny fraction of all pairs.

Resolving them: greedy in a fixed priority order (:mod:`video_miner.dataset.priority`: the best copy first), so
the kept set depends only on the frames, never on the order in which videos finished. Frames whose
detection was skipped are asked about only when no kept frame covers them (:func:`select_distinct`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: ``threshold + 2`` nearly equal contiguous bands."""
    m = min(64, threshold + 2)
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def _pairs_sharing_key(key: np.ndarray, hashes: np.ndarray, threshold: int, earlier: list[tuple[int, int]]
                       ) -> list[np.ndarray]:
    """Pairs within ``threshold`` among hashes whose ``key`` (two bands) is equal, but for those
    that also share one of the ``earlier`` bands (shift, width) besides the first of the key's:
    an earlier band pair finds those, and each pair is reported once."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    sk, sh = key[order], hashes[order]
    found: list[np.ndarray] = []

    def keep(i: np.ndarray, d: int) -> None:
        if len(i) and earlier:
            x = sh[i] ^ sh[i + d]
            seen = np.zeros(len(i), dtype=bool)
            for shift, width in earlier:
                seen |= (x >> np.uint64(shift)) & np.uint64((1 << width) - 1) == 0
            i = i[~seen]
        if len(i):
            a, b = order[i], order[i + d]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))

    # Compare each hash with the one d places on, for growing d, while buckets are that long:
    # whole shifted arrays while most positions still have a partner d away (contiguous, fast),
    # then only the positions that do.
    d, active = 1, None
    while d < n:
        if active is None:
            same = sk[:-d] == sk[d:]
            if same.mean() < 0.25:
                active = np.flatnonzero(same)
                continue
            keep(np.flatnonzero(same & (np.bitwise_count(sh[:-d] ^ sh[d:]) <= threshold)), d)
        else:
            active = active[active + d < n]
            active = active[sk[active] == sk[active + d]]
            if not len(active):
                break
            keep(active[np.bitwise_count(sh[active] ^ sh[active + d]) <= threshold], d)
        d += 1
    return found


def near_pairs(hashes: np.ndarray, threshold: int, threads: int | None = None) -> np.ndarray:
    """Every pair ``(i, j)``, ``i < j``, of hashes within ``threshold`` bits, as an (n, 2) array."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    bands = _bands(threshold)
    values = [((hashes >> np.uint64(s)) & np.uint64((1 << w) - 1)).astype(np.uint32) for s, w in bands]

    def for_bands(ab: tuple[int, int]) -> list[np.ndarray]:
        a, b = ab
        key = (values[a] << np.uint32(bands[b][1])) | values[b]
        if bands[a][1] + bands[b][1] <= 16:
            key = key.astype(np.uint16)  # numpy sorts 16-bit keys by radix
        # A pair is reported by the first two bands it shares: (a, b) skips pairs sharing a band
        # before b other than a. Near-identical pictures share most bands: without this a pair came
        # from up to 28 band pairs, and sorting out the repeats cost more than finding them.
        return _pairs_sharing_key(key, hashes, threshold, [bands[k] for k in range(b) if k != a])

    # numpy releases the GIL in sorts and ufuncs, so band pairs run on all cores.
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        found = [p for chunk in pool.map(for_bands, combinations(range(len(bands)), 2)) for p in chunk]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


#: ``eligible`` values: the frame shows the wanted classes, does not, or has not been asked yet.
YES, NO, UNKNOWN = 1, 0, -1
#: ``dup_of`` values besides the index of the kept frame a duplicate is near.
KEPT, NOT_ELIGIBLE = -1, -2

#: Asks whether frames (indices) are eligible; answers in the same order.
Resolver = Callable[[list[int]], list[bool]]


class _NearGraph:
    """Frames with equal hashes (a camera watching a still scene, a looping stream, a video listed
    twice) are one node of the graph of near pairs, which is built over distinct hashes only: a
    picture seen ten thousand times costs one node, not fifty million pairs."""

    def __init__(self, hashes: np.ndarray, threshold: int) -> None:
        values, group = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
        group = group.ravel()
        pairs = near_pairs(values, threshold) if len(values) > 1 else np.empty((0, 2), dtype=np.int64)
        edges = np.concatenate([pairs, pairs[:, ::-1]])
        edges = edges[np.argsort(edges[:, 0], kind="stable")]
        self.starts: list[int] = np.searchsorted(edges[:, 0], np.arange(len(values) + 1)).tolist()
        self.near: list[int] = edges[:, 1].tolist()
        sizes = np.bincount(group, minlength=len(values))
        #: Per frame: whether another frame is within the threshold (or has its very hash).
        self.involved: np.ndarray = ((sizes > 1) | (np.diff(self.starts) > 0))[group]
        self.groups: list[int] = group.tolist()
        self.size = len(values)

    def close_to(self, node: int) -> list[int]:
        """The groups within the threshold of ``node``'s, its own first."""
        g = self.groups[node]
        return [g, *self.near[self.starts[g]:self.starts[g + 1]]]


class _Walk:
    """The greedy walk over the frames that have near neighbours, most preferred first."""

    def __init__(self, graph: _NearGraph, known: np.ndarray, ask: Callable[[list[int]], None], batch: int) -> None:
        self.graph, self.known, self.ask, self.batch = graph, known, ask, batch
        # Per hash, the most preferred kept frame within the threshold: frames are kept in priority
        # order, so the first one kept near a hash covers it for good.
        self.covered_by = [-1] * graph.size

    def covering(self, node: int) -> int:
        return self.covered_by[self.graph.groups[node]]

    def keep(self, node: int) -> None:
        for other in self.graph.close_to(node):
            if self.covered_by[other] < 0:
                self.covered_by[other] = node

    def near_any(self, node: int, others: list[int]) -> bool:
        close = set(self.graph.close_to(node))
        return any(self.graph.groups[o] in close for o in others)

    def run(self, walk: list[int], dup_of: np.ndarray) -> np.ndarray:
        known = self.known
        unknown_at = [pos for pos, node in enumerate(walk) if known[node] == UNKNOWN]
        next_unknown = 0
        for pos, node in enumerate(walk):
            cover = self.covering(node)
            if cover >= 0:
                dup_of[node] = cover
                continue
            if known[node] == UNKNOWN:
                while unknown_at[next_unknown] < pos:
                    next_unknown += 1
                ahead = unknown_at[next_unknown + 1:next_unknown + 1 + 4 * self.batch]
                self.ask(self._batch_from(node, [walk[k] for k in ahead]))
            if known[node] == YES:
                self.keep(node)
                dup_of[node] = KEPT
        return dup_of

    def _batch_from(self, node: int, later: list[int]) -> list[int]:
        """This frame and the next few unknown ones no kept frame covers yet, to ask in one batch;
        not one near a frame already in the batch: that one may turn out kept and cover it."""
        todo = [node]
        for other in later:
            if len(todo) >= self.batch:
                break
            if self.known[other] == UNKNOWN and self.covering(other) < 0 and not self.near_any(other, todo):
                todo.append(other)
        return todo


def select_distinct(hashes: np.ndarray, priority: np.ndarray, threshold: int, eligible: np.ndarray | None = None,
                    resolve: Resolver | None = None, batch: int = 16) -> np.ndarray:
    """Greedy near-duplicate removal, asking about eligibility only where it matters.

    Frames are walked from most to least preferred (``priority``: indices, most preferred first).
    A frame within ``threshold`` bits of a more preferred kept frame is its duplicate, eligible or
    not; otherwise it is kept if eligible. So a frame whose eligibility is ``UNKNOWN`` (its
    detection was skipped) needs ``resolve`` only if no kept frame covers it, and the result is
    the same as if every frame's eligibility had been known from the start.

    Returns ``dup_of``: ``KEPT``, ``NOT_ELIGIBLE``, or the index of the most preferred kept frame
    within ``threshold`` bits. ``eligible`` defaults to all ``YES``.
    """
    n = len(hashes)
    known = np.full(n, YES, dtype=np.int8) if eligible is None else np.array(eligible, dtype=np.int8)
    if (known == UNKNOWN).any() and resolve is None:
        raise ValueError("frames of unknown eligibility need a resolver")

    def ask(nodes: list[int]) -> None:
        for start in range(0, len(nodes), batch):
            chunk = nodes[start:start + batch]
            assert resolve is not None  # checked above: only unknown frames are asked about
            known[chunk] = [YES if ok else NO for ok in resolve(chunk)]

    if threshold < 0 or n == 0:  # dedup off: only eligibility counts
        ask(np.flatnonzero(known == UNKNOWN).tolist())
        return np.where(known == YES, KEPT, NOT_ELIGIBLE).astype(np.int64)
    graph = _NearGraph(hashes, threshold)
    # A frame with no near neighbour is never anyone's duplicate: only its eligibility counts.
    ask(np.flatnonzero(~graph.involved & (known == UNKNOWN)).tolist())
    dup_of = np.where(known == YES, KEPT, NOT_ELIGIBLE).astype(np.int64)
    walk = np.asarray(priority, dtype=np.int64)
    walk = walk[graph.involved[walk]].tolist()
    if not walk:
        return dup_of
    dup_of[walk] = NOT_ELIGIBLE
    return _Walk(graph, known, ask, batch).run(walk, dup_of)
