"""Cross-video near-duplicate removal over 64-bit pHashes, vectorized with numpy.

Resolution is greedy in a fixed priority order (sharpest first, then input order, then time), so
the kept set depends only on the frames, never on the order in which videos finished.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1024
KEPT_CHUNK = 65536


def _near_first(block: np.ndarray, kept: np.ndarray, threshold: int) -> np.ndarray:
    """For each hash in ``block``, the index into ``kept`` of the first hash within ``threshold``
    bits, or -1."""
    first = np.full(len(block), -1, dtype=np.int64)
    for start in range(0, len(kept), KEPT_CHUNK):
        chunk = kept[start:start + KEPT_CHUNK]
        near = np.bitwise_count(block[:, None] ^ chunk[None, :]) <= threshold
        hit = near.any(axis=1) & (first < 0)
        first[hit] = start + near[hit].argmax(axis=1)
    return first


def resolve_duplicates(hashes: np.ndarray, priority: np.ndarray, threshold: int) -> np.ndarray:
    """Greedy near-duplicate resolution.

    ``hashes``: uint64 pHashes. ``priority``: indices of ``hashes`` from most to least preferred.
    Returns ``dup_of``: -1 for a kept frame, else the index of the kept frame it duplicates (the
    most preferred kept frame within ``threshold`` bits).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    dup_of = np.full(len(hashes), -1, dtype=np.int64)
    kept_idx: list[int] = []
    kept = np.empty(0, dtype=np.uint64)
    for start in range(0, len(priority), BLOCK):
        block_idx = np.asarray(priority[start:start + BLOCK], dtype=np.int64)
        block = hashes[block_idx]
        prior = _near_first(block, kept, threshold) if len(kept) else np.full(len(block), -1, dtype=np.int64)
        intra = np.bitwise_count(block[:, None] ^ block[None, :]) <= threshold
        chosen = np.zeros(len(block), dtype=bool)
        for i in range(len(block)):
            if prior[i] >= 0:
                dup_of[block_idx[i]] = kept_idx[prior[i]]
                continue
            earlier = np.flatnonzero(intra[i, :i] & chosen[:i])
            if len(earlier):
                dup_of[block_idx[i]] = block_idx[earlier[0]]
                continue
            chosen[i] = True
        kept_idx.extend(block_idx[chosen].tolist())
        kept = np.concatenate([kept, block[chosen]])
    return dup_of
