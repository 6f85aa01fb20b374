"""Duplicates by what frames show: the second dedup pass, over the frames pHash kept.

Two frames are duplicates when they show the same classes, their whole-picture vectors agree and
their objects match box for box (every object of the frame with fewer of a class matches a distinct
one of the other). The vectors are the detector's own features, rank-normalised
(:mod:`video_miner.detect.embed`); each frame's are its own, so a decision never depends on what
else is in the pool. Measured on the shared videos (docs/benchmarks.md): at the defaults (0.75 for
the picture, a gate for the index; 0.94 for the objects) mirrored, cropped, panned, letterboxed,
re-lit, re-encoded and logo-stamped copies match, and frames with different people do not.

A frame may also match a frame that is itself a duplicate: a 70% crop is nearer the 80% crop than
the original the 80% crop stands for. It may then stand with that kept frame if it is still near it
(objects at ``chain_min``, 0.88 by default; the picture gate too), so a duplicate is never far from
the frame that represents it and no chain drifts from one scene, or one person, to the next. Of
the kept frames a frame may stand with, it stands with the one it is most like (two people dressed
alike can match through their crops; each is still nearer its own original).

Neighbours come from exact blocked products up to ``EXACT_UP_TO`` frames, and above it from an
inverted file (faiss's k-means cells, searched exactly: equal frames always share a cell, so no
copy is lost to the index; usearch's HNSW found 81% of the planted equal pairs at 1M frames and
took longer, docs/benchmarks.md). The walk is pHash's: most preferred first, a frame is the
duplicate of the kept frame it is most like, so the result depends only on the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from ..records import FrameEmbedding

#: Nearest neighbours looked at per frame: a frame with more near copies than this is covered by
#: one of them anyway.
NEIGHBOURS = 32
#: Pools up to this size are searched exactly (deterministic, ~1 s for 20k frames on 2 cores).
EXACT_UP_TO = 20_000


@dataclass(frozen=True)
class Match:
    """Why a frame is the duplicate of another: the pictures' and the worst-matched objects' similarity."""

    of: int
    picture: float
    objects: float
    #: The duplicate of ``of`` this frame was found through (a chained duplicate); None when it matched ``of``.
    via: int | None = None


def _unit_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norms > 0, norms, 1)).astype(np.float32)


@dataclass
class Vectors:
    """The pool's vectors: ``whole`` (n, d), zero where a frame has none; ``boxes[i]`` (k, e)."""

    whole: np.ndarray
    boxes: list[np.ndarray]
    present: np.ndarray

    @classmethod
    def of(cls, embeddings: Sequence[FrameEmbedding | None]) -> Vectors:
        present = np.array([e is not None for e in embeddings], dtype=bool)
        real = [e for e in embeddings if e is not None]
        d = real[0].whole.shape[0] if real else 1
        e_dim = real[0].boxes.shape[1] if real else 1
        whole = np.zeros((len(embeddings), d), np.float32)
        if real:
            whole[present] = np.stack([e.whole for e in real])
        boxes = [e.boxes if e is not None else np.zeros((0, e_dim), np.float32) for e in embeddings]
        return cls(whole, boxes, present)


def neighbours(vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS) -> list[np.ndarray]:
    """Per row, the (at most ``k``) other rows whose cosine with it is >= ``threshold``, nearest first.
    Rows come most preferred first (the walk's order): in a crowd of near-identical frames too
    large to compare all with all, the first are the ones searched."""
    n = len(vectors)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return [np.empty(0, np.int64) for _ in range(n)]
    if n <= EXACT_UP_TO:
        out = []
        for start in range(0, n, 2048):
            sims = vectors[start:start + 2048] @ vectors.T
            for row, sim in enumerate(sims):
                sim[start + row] = -np.inf
                top = np.argpartition(-sim, k - 1)[:k]
                out.append(_nearest_first(top, sim[top], threshold))
        return out
    return _indexed(vectors, threshold, k)


def _nearest_first(ids: np.ndarray, sims: np.ndarray, threshold: float) -> np.ndarray:
    """``ids`` at or above ``threshold``, nearest first; equal similarities by index, so the order
    never depends on the sort."""
    keep = sims >= threshold
    ids, sims = ids[keep], sims[keep]
    return ids[np.lexsort((ids, -sims))]


#: The cells are made over the vectors' first principal components: near copies differ in few
#: directions, and 64 dimensions cost a quarter of 256. On the pictures of the copy corpus 64
#: components hold 98.5% of the variance, and a projected cosine was never below the true one for
#: pairs at 0.7 or more; candidates within ``INDEX_SLACK`` of the gate are then checked on the whole
#: vectors (docs/benchmarks.md, section 10).
INDEX_DIM, INDEX_SLACK = 64, 0.05
#: Cells searched per frame: equal frames always share a cell; near ones almost always lie in one
#: of a frame's nearest four.
PROBES = 4
#: Similarities computed at a time (a block of frames against a cell's members): bounded memory.
BLOCK = 1 << 22
#: Members of one cell a frame is compared with at most: k-means cannot split a crowd of equal
#: vectors, and comparing each with all would take n^2 (1M frames of one still scene: hours).
CROWD = 20_000


def _indexed(vectors: np.ndarray, threshold: float, k: int) -> list[np.ndarray]:
    """:func:`neighbours` through an inverted file: faiss's spherical k-means makes the cells (on
    the principal components), each frame lives in its nearest cell and is compared with the
    members of its ``PROBES`` nearest. The comparisons are one matrix product per cell (a self-join:
    every frame is a query): on 1M frames about 9 s, where faiss's ``IndexIVFFlat.search`` over the
    same cells, frame by frame, took 34-38 s."""
    import faiss

    n, d = vectors.shape
    cells = max(1, min(int(2 * np.sqrt(n)), n // 40))
    # every m-th row: deterministic; 20,000 rows fit 256-d axes as well as all (1M: 0.5 s, not 2.3)
    axes = np.linalg.svd(vectors[::max(1, n // 20_000)], full_matrices=False)[2][:min(INDEX_DIM, d)].T
    axes = axes.astype(np.float32)
    reduced = np.ascontiguousarray(_unit_rows(vectors @ axes))
    kmeans = faiss.Kmeans(reduced.shape[1], cells, niter=10, seed=1, spherical=True)
    kmeans.train(reduced[::max(1, n // (40 * cells))])  # ~40 rows a cell, as k-means wants
    probes = kmeans.index.search(reduced, min(PROBES, cells))[1]
    members = _grouped(probes[:, 0], cells)
    queries = _grouped(probes.ravel(), cells, np.repeat(np.arange(n), probes.shape[1]))
    rows, cols = [], []
    for cell in range(cells):
        # a crowd of near-identical frames (a still camera) is met in its first CROWD members: the
        # rows come in walk order, so those are the crowd's most preferred, the ones kept
        inside, asking = members[cell][:CROWD], queries[cell]
        if len(inside) == 0 or len(asking) == 0:
            continue
        step = max(1, BLOCK // len(inside))
        for start in range(0, len(asking), step):
            who = asking[start:start + step]
            sims = reduced[who] @ reduced[inside].T
            near = sims >= threshold - INDEX_SLACK
            over = np.flatnonzero(near.sum(axis=1) > k + 1)  # a frame's k + 1 nearest here (itself among them)
            if len(over):
                kth = np.partition(sims[over], -(k + 1), axis=1)[:, -(k + 1)]
                near[over] &= sims[over] >= kth[:, None]
            r, c = np.nonzero(near)
            rows.append(who[r])
            cols.append(inside[c])
    row, col = (np.concatenate(x) if x else np.empty(0, np.int64) for x in (rows, cols))
    other = row != col
    row, col = row[other], col[other]
    exact = np.concatenate([np.einsum("nd,nd->n", vectors[row[i:i + BLOCK // d]], vectors[col[i:i + BLOCK // d]])
                            for i in range(0, len(row), BLOCK // d)] or [np.empty(0, np.float32)])
    ok = exact >= threshold
    row, col, exact = row[ok], col[ok], exact[ok]
    order = np.lexsort((col, -exact, row))  # per frame nearest first, equal similarities by index
    row, col = row[order], col[order]
    bounds = np.searchsorted(row, np.arange(n + 1))
    return [col[bounds[i]:min(bounds[i + 1], bounds[i] + k)] for i in range(n)]


def _grouped(keys: np.ndarray, groups: int, values: np.ndarray | None = None) -> list[np.ndarray]:
    """``values`` (default: the positions) grouped by ``keys`` in ``range(groups)``, in order."""
    order = np.argsort(keys, kind="stable")
    values = order if values is None else values[order]
    bounds = np.searchsorted(keys[order], np.arange(groups + 1))
    return [values[bounds[g]:bounds[g + 1]] for g in range(groups)]


def objects_match(a: np.ndarray, labels_a: Sequence[str], b: np.ndarray, labels_b: Sequence[str]) -> float:
    """The worst similarity among greedily matched objects of the same class (every object of the
    frame with fewer of a class matched to a distinct one of the other); -1 when the classes differ."""
    if len(labels_a) == 1 and len(labels_b) == 1:  # the common case, a few times faster
        return min(1.0, float(a[0] @ b[0])) if labels_a[0] == labels_b[0] else -1.0
    if set(labels_a) != set(labels_b):
        return -1.0
    worst = 1.0
    for label in set(labels_a):
        ia = [i for i, x in enumerate(labels_a) if x == label]
        ib = [i for i, x in enumerate(labels_b) if x == label]
        sims = a[ia] @ b[ib].T
        for _ in range(min(len(ia), len(ib))):
            x, y = np.unravel_index(int(np.argmax(sims)), sims.shape)
            worst = min(worst, float(sims[x, y]))
            sims[x, :], sims[:, y] = -np.inf, -np.inf
    return worst


#: Text read with at least this score takes part in comparing frames (OCR's unsure reads vary with
#: a frame's noise), when it has at least ``MIN_TEXT`` letters or digits.
SURE_TEXT, MIN_TEXT = 0.9, 3
#: Two strings are one text read twice at this similarity (difflib's ratio) or more.
SAME_TEXT = 0.8


def sure_texts(texts: Sequence[tuple[str, float]]) -> list[str]:
    """The strings of a frame's text boxes worth comparing: sure ones, letters and digits only."""
    out = []
    for text, score in texts:
        kept = "".join(ch for ch in text.upper() if ch.isalnum())
        if score >= SURE_TEXT and len(kept) >= MIN_TEXT:
            out.append(kept)
    return out


def texts_agree(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether every sure string of each frame was read, nearly alike, in the other (the same bus
    with another plate is other content)."""
    def covered(xs: Sequence[str], ys: Sequence[str]) -> bool:
        return all(any(x == y or SequenceMatcher(None, x, y).ratio() >= SAME_TEXT for y in ys) for x in xs)

    return covered(a, b) and covered(b, a)


def content_duplicates(embeddings: Sequence[FrameEmbedding | None], labels: Sequence[Sequence[str]],
                       walk: Sequence[int], picture_min: float, objects_min: float, chain_min: float,
                       texts: Sequence[Sequence[str]] | None = None) -> dict[int, Match]:
    """The frames of ``walk`` (indices, most preferred first) that duplicate a more preferred kept
    one, directly or through one of its duplicates (see the module's text); with ``texts`` (each
    frame's :func:`sure_texts`), only where they agree. Frames without an embedding (a registry
    restored from a manifest) are never duplicates here."""
    vectors = Vectors.of(embeddings)
    near = neighbours(vectors.whole, picture_min)
    position = {node: pos for pos, node in enumerate(walk)}
    seen: set[int] = set()
    found: dict[int, Match] = {}

    def rank(m: Match) -> tuple[float, float, int, int]:
        """The kept frame it is most like; ties to the more preferred one, then by the link's place."""
        return m.objects, m.picture, -position[m.of], -position[m.of if m.via is None else m.via]

    def same(a: int, b: int, at_least: float) -> Match | None:
        score = objects_match(vectors.boxes[a], labels[a], vectors.boxes[b], labels[b])
        if score < at_least or (texts is not None and not texts_agree(texts[a], texts[b])):
            return None
        picture = float(vectors.whole[a] @ vectors.whole[b])
        return Match(b, round(picture, 4), round(score, 4)) if picture >= picture_min else None

    for node in walk:
        if vectors.present[node]:
            best: Match | None = None
            for j in near[node].tolist():
                if j not in seen or (match := same(node, j, objects_min)) is None:
                    continue
                if j in found:  # a duplicate: this frame may stand with its kept frame, if still near it
                    kept = found[j].of
                    if (direct := same(node, kept, chain_min)) is None:
                        continue
                    match = Match(kept, direct.picture, direct.objects, via=j)
                if best is None or rank(match) > rank(best):
                    best = match
            if best is not None:
                found[node] = best
        seen.add(node)
    return found
