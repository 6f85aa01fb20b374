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
duplicate of the kept frame it is most like, so the result depends only on the frames. The pairs
are scored many at a time first (classes, and the boxes of one-box frames, the common case), and
only frames left with a candidate are walked one by one: 1M frames in under 20 s on 2 cores.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Generic, TypeVar

import numpy as np

from ..records import FrameEmbedding

#: Nearest neighbours looked at per frame: a frame with more near copies than this is covered by
#: one of them anyway.
NEIGHBOURS = 32
#: Pools up to this size are searched exactly (deterministic; 20k frames in 1.5 s on 2 cores, the index 0.7 s).
EXACT_UP_TO = 20_000


#: How a match names frames: a place in a walk (int) or a frame key (str).
Id = TypeVar("Id", int, str)


@dataclass(frozen=True)
class Match(Generic[Id]):
    """Why a frame is the duplicate of another by content (the one record of it, whether frames are
    named by their place in a walk or by their key): the pictures' and the worst-matched objects'
    similarity."""

    of: Id
    picture: float
    objects: float
    #: The duplicate of ``of`` this frame was found through (a chained duplicate); None when it matched ``of``.
    via: Id | None = None
    #: Found through the videos' times (:mod:`.retimed`): how fast this frame's video plays the
    #: other's (1.25: a copy sped up by a quarter); None when matched by content alone.
    speed: float | None = None


def _unit_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norms > 0, norms, 1)).astype(np.float32)


@dataclass
class Vectors:
    """The pool's vectors: ``whole`` (n, d), zero where a frame has none; ``single`` (n, e) the box
    of each frame with exactly one (zero elsewhere), so the common case is compared many pairs at
    a time; ``several`` the boxes of the other frames that have an embedding."""

    whole: np.ndarray
    present: np.ndarray
    one: np.ndarray
    single: np.ndarray
    several: dict[int, np.ndarray]

    def __len__(self) -> int:
        return len(self.whole)

    def boxes(self, i: int) -> np.ndarray:
        """Frame ``i``'s box vectors (k, e)."""
        return self.single[i:i + 1] if self.one[i] else self.several.get(i, self.single[:0])

    def take(self, indices: Sequence[int]) -> Vectors:
        """The vectors of the frames at ``indices``, in that order."""
        at = np.asarray(indices, dtype=np.int64)
        several = {new: self.several[old] for new, old in enumerate(at.tolist()) if old in self.several}
        return Vectors(self.whole[at], self.present[at], self.one[at], self.single[at], several)

    @classmethod
    def of(cls, embeddings: Sequence[FrameEmbedding | None]) -> Vectors:
        present = np.array([e is not None for e in embeddings], dtype=bool)
        real = [e for e in embeddings if e is not None]
        d = real[0].whole.shape[0] if real else 1
        e_dim = real[0].boxes.shape[1] if real else 1
        if any(e.whole.shape != (d,) or e.boxes.shape[1] != e_dim for e in real):
            raise ValueError(f"embeddings of different sizes (the first has {d} + {e_dim} values): one model's only")
        one = np.array([e is not None and len(e.boxes) == 1 for e in embeddings], dtype=bool)
        whole = _rows_at(present, np.concatenate([e.whole for e in real]) if real else None, d)
        singles = [e.boxes for e, o in zip(embeddings, one.tolist(), strict=True) if o and e is not None]
        several = {i: e.boxes for i, e in enumerate(embeddings) if e is not None and len(e.boxes) != 1}
        return cls(whole, present, one, _rows_at(one, np.concatenate(singles) if singles else None, e_dim), several)

    @classmethod
    def decode(cls, blobs: Sequence[bytes | None], counts: Sequence[int]) -> tuple[Vectors, dict[int, str]]:
        """The vectors of stored embeddings (:meth:`FrameEmbedding.to_bytes`; None: none), each
        expected to hold ``counts[i]`` boxes (one that does not is left out), and why each
        unreadable one was refused (a registry is untrusted input). One-box embeddings of the
        common size are read all at once: 1M frames in 4-6 s, where one
        :meth:`FrameEmbedding.from_bytes` each took 10.5 s and gathering their arrays 5 s more."""
        d, e_dim = _pool_dims(blobs)
        size = 6 + 2 * (d + e_dim)
        head = struct.pack("<HHH", 1, d, e_dim)
        bulk = {i: b for i, b in enumerate(blobs) if b is not None and len(b) == size and b[:6] == head and counts[i] == 1}
        refused: dict[int, str] = {}
        n = len(blobs)
        in_bulk = np.zeros(n, dtype=bool)
        in_bulk[list(bulk)] = True
        # the 6-byte header is three float16 slots, skipped as a column
        flat = np.frombuffer(b"".join(bulk.values()), dtype="<f2").reshape(len(bulk), size // 2)
        wholes, singles = flat[:, 3:3 + d].astype(np.float32), flat[:, 3 + d:].astype(np.float32)
        finite = np.isfinite(wholes).all(axis=1) & np.isfinite(singles).all(axis=1)
        for i in np.flatnonzero(in_bulk)[~finite].tolist():
            refused[i] = "embedding holds values that are not finite"
        # every frame in the bulk (the usual case): the converted rows are the matrices, no copy
        whole, single = _rows_at(in_bulk, wholes, d), _rows_at(in_bulk, singles, e_dim)
        present, one = in_bulk.copy(), in_bulk.copy()
        several: dict[int, np.ndarray] = {}
        for i in np.flatnonzero(~in_bulk).tolist():
            if (blob := blobs[i]) is None:
                continue
            try:
                embedding = FrameEmbedding.from_bytes(blob)
            except ValueError as exc:
                refused[i] = str(exc)
                continue
            if embedding.whole.shape != (d,) or embedding.boxes.shape[1] != e_dim:
                refused[i] = (f"embedding of {embedding.whole.shape[0]} + {embedding.boxes.shape[1]} values, not {d} + "
                              f"{e_dim} like the others (made by another model?)")
            elif len(embedding.boxes) == counts[i]:  # otherwise not this frame's boxes: none to compare
                whole[i], present[i] = embedding.whole, True
                if len(embedding.boxes) == 1:
                    single[i], one[i] = embedding.boxes[0], True
                else:
                    several[i] = embedding.boxes
        for i in refused:
            whole[i], single[i], present[i], one[i] = 0, 0, False, False
        return cls(whole, present, one, single, several), refused


def _pool_dims(blobs: Sequence[bytes | None]) -> tuple[int, int]:
    """The pool's vector sizes (picture, box): the most common among well-formed embeddings
    (another model's are refused, one by one)."""
    heads = ((len(b), struct.unpack_from("<HHH", b)) for b in blobs if b is not None and len(b) >= 6)
    sizes = Counter((d, e) for length, (n, d, e) in heads if length == 6 + 2 * (d + n * e))
    return next((dims for dims, _ in sizes.most_common() if dims[0] > 0), (1, 1))


def _rows_at(where: np.ndarray, rows: np.ndarray | None, d: int) -> np.ndarray:
    """An (n, d) matrix: ``rows`` (flat or 2-d) at the true places of ``where``, zero elsewhere;
    the rows themselves when every place is true (1M frames: no second gigabyte to fill)."""
    if rows is None:
        return np.zeros((len(where), d), np.float32)
    rows = rows.reshape(-1, d).astype(np.float32, copy=False)
    if where.all():
        return rows
    out = np.zeros((len(where), d), np.float32)
    out[where] = rows
    return out


@dataclass(frozen=True)
class Near:
    """Each frame's neighbours, nearest first: frame i's are ``ids[start[i]:start[i + 1]]``."""

    start: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.start) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.start[i]:self.start[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame, neighbour) for every neighbour, frame by frame, each frame's nearest first."""
        return np.repeat(np.arange(len(self)), np.diff(self.start)), self.ids

    @classmethod
    def of_pairs(cls, n: int, row: np.ndarray, col: np.ndarray, sims: np.ndarray, k: int) -> Near:
        """The ``k`` nearest of each row among the pairs (row, col) at similarity ``sims``; equal
        similarities by index, so the order never depends on the sort."""
        # one stable sort by (row, similarity descending) over the pairs already in index order:
        # half the time of a three-key lexsort (3M pairs: 1.0 s, not 2.0)
        by_col = np.argsort(col, kind="stable")
        order = by_col[np.argsort(_row_then_nearest(row, sims)[by_col], kind="stable")]
        row, col = row[order], col[order]
        start = np.searchsorted(row, np.arange(n + 1))
        keep = np.arange(len(row)) - start[row] < k
        return cls(np.searchsorted(row[keep], np.arange(n + 1)), col[keep])


def _row_then_nearest(row: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """A uint64 key that sorts by ``row``, then by ``sims`` descending: the row above the float's
    bits, made to sort as the floats do (negative ones reversed), then inverted."""
    bits = (sims.astype(np.float32) + np.float32(0)).view(np.uint32)  # + 0: -0.0 is 0.0
    ascending = np.where(bits & np.uint32(1 << 31), ~bits, bits | np.uint32(1 << 31))
    return (row.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)


def neighbours(vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS) -> Near:
    """Per row, the (at most ``k``) other rows whose cosine with it is >= ``threshold``, nearest first.
    Rows come most preferred first (the walk's order): in a crowd of near-identical frames too
    large to compare all with all, the first are the ones searched."""
    n = len(vectors)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return Near(np.zeros(n + 1, np.int64), np.empty(0, np.int64))
    if n > EXACT_UP_TO:
        return _indexed(vectors, threshold, k)
    rows, cols, sims = [], [], []
    step = max(1, BLOCK // n)
    for start in range(0, n, step):
        block = vectors[start:start + step] @ vectors.T
        here = np.arange(len(block))
        block[here, start + here] = -np.inf
        r, c = _at_least(block, threshold, k)
        rows.append(start + r)
        cols.append(c)
        sims.append(block[r, c])
    return Near.of_pairs(n, np.concatenate(rows), np.concatenate(cols), np.concatenate(sims), k)


def _at_least(sims: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the similarities >= ``threshold``, at most ``k`` a row: its nearest, equal
    ones by column (a crowd of equal frames keeps k each, not all). Flat positions first: a quarter
    of the time of a 2-d mask's nonzero, and far less than ordering every row."""
    hit = np.flatnonzero(sims >= threshold)
    r, c = np.divmod(hit, sims.shape[1])
    over = np.flatnonzero(np.bincount(r, minlength=len(sims)) > k)
    if len(over):
        kth = np.full(len(sims), -np.inf, sims.dtype)
        kth[over] = np.partition(sims[over], -k, axis=1)[:, -k]
        value = sims.ravel()[hit]
        above, tied = value > kth[r], value == kth[r]
        # the hits come row by row, columns ascending: a tie's place among its row's ties
        ties = np.cumsum(tied)
        before = np.concatenate([[0], ties])[np.searchsorted(r, np.arange(len(sims)))]
        room = k - np.bincount(r[above], minlength=len(sims))
        keep = above | (tied & (ties - before[r] <= room[r]))
        r, c = r[keep], c[keep]
    return r, c


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


def _indexed(vectors: np.ndarray, threshold: float, k: int) -> Near:
    """:func:`neighbours` through an inverted file: faiss's spherical k-means makes the cells (on
    the principal components), each frame lives in its nearest cell and is compared with the
    members of its ``PROBES`` nearest. The comparisons are one matrix product per cell (a self-join:
    every frame is a query): on 1M frames about 4 s with the check on the whole vectors, where
    faiss's ``IndexIVFFlat.search`` over the same cells, frame by frame, took 34-38 s."""
    import faiss

    n, d = vectors.shape
    cells = max(1, min(int(2 * np.sqrt(n)), n // 40))
    # every m-th row: deterministic; 20,000 rows fit 256-d axes as well as all (1M: 0.5 s, not 2.3)
    axes = np.linalg.svd(vectors[::max(1, n // 20_000)], full_matrices=False)[2][:min(INDEX_DIM, d)].T
    axes = axes.astype(np.float32)
    reduced = np.ascontiguousarray(_unit_rows(vectors @ axes))
    # 5 rounds, not 10: half the time (1M: 2.5 s), 92.3% of the exact pairs found, not 92.9%
    kmeans = faiss.Kmeans(reduced.shape[1], cells, niter=5, seed=1, spherical=True)
    kmeans.train(reduced[::max(1, n // (40 * cells))])  # ~40 rows a cell, as k-means wants
    probes = _nearest_cells(reduced, np.asarray(kmeans.centroids), min(PROBES, cells))
    members = _grouped(probes[:, 0], cells)
    queries = _grouped(probes.ravel(), cells, np.repeat(np.arange(n), probes.shape[1]))
    gate = threshold - INDEX_SLACK

    def pairs_in(cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # a crowd of near-identical frames (a still camera) is met in its first CROWD members: the
        # rows come in walk order, so those are the crowd's most preferred, the ones kept
        inside, asking = members[cell][:CROWD], queries[cell]
        rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        step = max(1, BLOCK // max(1, len(inside)))
        for start in range(0, len(asking) if len(inside) else 0, step):
            who = asking[start:start + step]
            # a frame's k + 1 nearest here (itself among them)
            r, c = _at_least(reduced[who] @ reduced[inside].T, gate, k + 1)
            other = who[r] != inside[c]
            rows.append(who[r][other])
            cols.append(inside[c][other])
        row, col = np.concatenate(rows), np.concatenate(cols)
        exact = _cosines(vectors, row, col)  # the candidates on the whole vectors
        ok = exact >= threshold
        return row[ok], col[ok], exact[ok]

    # one cell after the other: two threads over the cells took longer on 2 cores (the products
    # already use both)
    found = [pairs_in(cell) for cell in range(cells)]
    row, col, sims = (np.concatenate([f[i] for f in found]) for i in range(3))
    return Near.of_pairs(n, row, col, sims, k)


def _cosines(vectors: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``vectors[row[i]] @ vectors[col[i]]`` for every i, ``BLOCK`` values gathered at a time."""
    step = max(1, BLOCK // vectors.shape[1])
    out = np.empty(len(row), np.float32)
    for i in range(0, len(row), step):
        out[i:i + step] = np.einsum("nd,nd->n", vectors[row[i:i + step]], vectors[col[i:i + step]])
    return out


def _nearest_cells(rows: np.ndarray, centroids: np.ndarray, p: int) -> np.ndarray:
    """Each row's ``p`` nearest centroids, nearest first (equal ones by index). A block's products,
    then its best ``p`` one at a time: on 1M rows and 2,000 cells 2.8 s, where faiss's search of
    the same centroids took 5.6 s."""
    out = np.empty((len(rows), p), np.int64)
    step = max(1, BLOCK // len(centroids))
    for start in range(0, len(rows), step):
        sims = rows[start:start + step] @ centroids.T
        here = np.arange(len(sims))
        for j in range(p):
            out[start:start + step, j] = best = sims.argmax(axis=1)
            sims[here, best] = -np.inf
    return out


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


def compare(vectors: Vectors, labels: Sequence[Sequence[str]], texts: Sequence[Sequence[str]] | None, a: int, b: int,
            picture_min: float, at_least: float) -> Match[int] | None:
    """Frame ``a`` as a duplicate of ``b`` if their objects match at ``at_least``, their sure texts
    agree and their pictures at ``picture_min``; else None."""
    score = objects_match(vectors.boxes(a), labels[a], vectors.boxes(b), labels[b])
    if score < at_least or (texts is not None and not texts_agree(texts[a], texts[b])):
        return None
    picture = float(vectors.whole[a] @ vectors.whole[b])
    return Match(b, round(picture, 4), round(score, 4)) if picture >= picture_min else None


def content_duplicates(embeddings: Vectors | Sequence[FrameEmbedding | None], labels: Sequence[Sequence[str]],
                       walk: Sequence[int], picture_min: float, objects_min: float, chain_min: float,
                       texts: Sequence[Sequence[str]] | None = None) -> dict[int, Match[int]]:
    """The frames of ``walk`` (indices, most preferred first) that duplicate a more preferred kept
    one, directly or through one of its duplicates (see the module's text); with ``texts`` (each
    frame's :func:`sure_texts`), only where they agree. Frames without an embedding (a registry
    restored from a manifest) are never duplicates here."""
    vectors = embeddings if isinstance(embeddings, Vectors) else Vectors.of(embeddings)
    position = np.full(len(vectors), -1, np.int64)  # each frame's place in the walk; -1: not walked
    position[np.asarray(walk, dtype=np.int64)] = np.arange(len(walk))
    row, col = _candidates(vectors, labels, position, picture_min, objects_min)
    found: dict[int, Match[int]] = {}

    def rank(m: Match[int]) -> tuple[float, float, int, int]:
        """The kept frame it is most like; ties to the more preferred one, then by the link's place."""
        return m.objects, m.picture, -int(position[m.of]), -int(position[m.of if m.via is None else m.via])

    def same(a: int, b: int, at_least: float) -> Match[int] | None:
        return compare(vectors, labels, texts, a, b, picture_min, at_least)

    # Only frames with a candidate are walked: the others can be no one's duplicate, and whether
    # they are kept changes nothing for the rest (a match is always with an earlier frame).
    starts = np.flatnonzero(np.diff(row, prepend=-1))  # each frame's candidates are together
    for node, js in zip(row[starts].tolist(), np.split(col, starts[1:]) if len(col) else [], strict=True):
        best: Match[int] | None = None
        for j in js.tolist():
            if (match := same(node, j, objects_min)) is None:
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
    return found


#: Object similarities computed many pairs at a time fall this far short of one computed alone at
#: most (another order of the sums); candidates within it are decided one by one.
ROUNDING = 1e-4


def _candidates(vectors: Vectors, labels: Sequence[Sequence[str]], position: np.ndarray, picture_min: float,
                objects_min: float) -> tuple[np.ndarray, np.ndarray]:
    """The pairs worth a closer look, as (frame, earlier frame): each frame's nearest pictures
    walked before it (nearest first) whose classes are its own and, for frames of one box each,
    whose boxes match at ``objects_min``; frames in walk order (``position``: their places)."""
    row, col = neighbours(vectors.whole, picture_min).pairs()
    keep = vectors.present[row] & vectors.present[col] & (position[col] >= 0) & (position[col] < position[row])
    row, col = row[keep], col[keep]
    kinds: dict[frozenset[str], int] = {}
    kind = np.array([kinds.setdefault(frozenset(x), len(kinds)) for x in labels], dtype=np.int64)
    keep = kind[row] == kind[col]  # another set of classes is never the same content
    row, col = row[keep], col[keep]
    both = vectors.one[row] & vectors.one[col]
    keep = ~both  # frames of several boxes are matched one pair at a time
    keep[both] = _cosines(vectors.single, row[both], col[both]) >= objects_min - ROUNDING
    row, col = row[keep], col[keep]
    order = np.argsort(position[row], kind="stable")  # walk order; each frame's neighbours stay nearest first
    return row[order], col[order]
