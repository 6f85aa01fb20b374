"""Cross-video near-duplicate removal over 64-bit pHashes, vectorized with numpy.

Finding near pairs: the 64 bits are cut into ``m = threshold + 2`` bands. Two hashes within
``threshold`` bits differ in at most ``threshold`` bands, so at least two bands match exactly
(pigeonhole). For every pair of bands, hashes are sorted by those two bands together; only hashes
in the same bucket are compared (``bitwise_count`` of the XOR). That finds every pair within the
threshold while comparing a tiny fraction of all pairs.

Resolving them: greedy in a fixed priority order (sharpest first, then input order, then time), so
the kept set depends only on the frames, never on the order in which videos finished.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: ``threshold + 2`` nearly equal contiguous bands."""
    m = min(64, threshold + 2)
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def _pairs_sharing_key(key: np.ndarray, hashes: np.ndarray, threshold: int) -> list[np.ndarray]:
    """Pairs within ``threshold`` among hashes whose ``key`` (two bands) is equal."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    sk, sh = key[order], hashes[order]
    found: list[np.ndarray] = []

    def keep(i: np.ndarray, d: int) -> None:
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
        return _pairs_sharing_key(key, hashes, threshold)

    # numpy releases the GIL in sorts and ufuncs, so band pairs run on all cores.
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        found = [p for chunk in pool.map(for_bands, combinations(range(len(bands)), 2)) for p in chunk]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def resolve_duplicates(hashes: np.ndarray, priority: np.ndarray, threshold: int) -> np.ndarray:
    """Greedy near-duplicate resolution.

    ``hashes``: uint64 pHashes. ``priority``: indices of ``hashes`` from most to least preferred.
    Returns ``dup_of``: -1 for a kept frame, else the index of the most preferred kept frame
    within ``threshold`` bits of it.
    """
    n = len(hashes)
    dup_of = np.full(n, -1, dtype=np.int64)
    pairs = near_pairs(hashes, threshold)
    if not len(pairs):
        return dup_of
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(priority, dtype=np.int64)] = np.arange(n)
    # Only frames with a near neighbour need the greedy walk; everything else is kept as is.
    edges = np.concatenate([pairs, pairs[:, ::-1]])
    edges = edges[np.lexsort((rank[edges[:, 1]], rank[edges[:, 0]]))]
    starts = np.searchsorted(rank[edges[:, 0]], np.arange(n + 1))
    involved = np.unique(edges[:, 0])
    for node in involved[np.argsort(rank[involved])].tolist():
        if dup_of[node] >= 0:
            continue
        r = rank[node]
        for other in edges[starts[r]:starts[r + 1], 1].tolist():
            # Neighbours come in priority order: the first kept, more preferred one wins.
            if rank[other] < r and dup_of[other] < 0:
                dup_of[node] = other
                break
    return dup_of
