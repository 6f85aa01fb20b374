"""Duplicates by what frames show: the second dedup pass, over the frames pHash kept.

Two frames are duplicates when they show the same classes, their whole-picture vectors agree and
their objects match box for box (every object of the frame with fewer of a class matches a distinct
one of the other). The vectors are the detector's own features, rank-normalised
(:mod:`video_miner.detect.embed`); each frame's are its own, so a decision never depends on what
else is in the pool. Measured on the shared videos (docs/benchmarks.md): at the defaults (0.75 for
the picture, a gate for the index; 0.94 for the objects) mirrored, cropped, panned, letterboxed,
re-lit, re-encoded and logo-stamped copies match, and frames with different people do not.

Neighbours come from a nearest-neighbour index (usearch's HNSW: multi-threaded bulk add and search,
int8 vectors, in a few-MB wheel; faiss-cpu is 30 MB and its fast indexes need training) above
``EXACT_UP_TO`` frames, and from exact blocked products below it (deterministic). The walk is pHash's: most preferred first, a
frame is the duplicate of the most preferred kept frame it matches, so the result depends only on
the frames.
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


def neighbours(vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS, threads: int = 0) -> list[np.ndarray]:
    """Per row, the (at most ``k``) other rows whose cosine with it is >= ``threshold``, nearest first."""
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
                top = top[sim[top] >= threshold]
                # nearest first; equal similarities by index, so the order never depends on the sort
                out.append(top[np.lexsort((top, -sim[top]))])
        return out
    from usearch.index import Index

    # int8 vectors: 100k frames in ~20 s on 2 cores against 41 s with float16 and usearch's defaults,
    # finding 497 of 500 planted equal pairs; a sparser graph (connectivity 8) took 10 s but found
    # only 329 (docs/benchmarks.md, section 10).
    index = Index(ndim=vectors.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=64,
                  expansion_search=max(64, k + 1))
    keys = np.arange(n, dtype=np.uint64)
    index.add(keys, vectors, threads=threads)
    found = index.search(vectors, k + 1, threads=threads)
    out = []
    for row in range(n):
        ids = found.keys[row].astype(np.int64)
        sims = 1 - found.distances[row]
        keep = (ids != row) & (ids >= 0) & (ids < n) & (sims >= threshold)
        out.append(ids[keep][:k])
    return out


def objects_match(a: np.ndarray, labels_a: Sequence[str], b: np.ndarray, labels_b: Sequence[str]) -> float:
    """The worst similarity among greedily matched objects of the same class (every object of the
    frame with fewer of a class matched to a distinct one of the other); -1 when the classes differ."""
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
                       walk: Sequence[int], picture_min: float, objects_min: float,
                       texts: Sequence[Sequence[str]] | None = None) -> dict[int, Match]:
    """The frames of ``walk`` (indices, most preferred first) that duplicate a more preferred kept
    one; with ``texts`` (each frame's :func:`sure_texts`), only where they agree. Frames without an
    embedding (a registry restored from a manifest) are never duplicates here."""
    vectors = Vectors.of(embeddings)
    near = neighbours(vectors.whole, picture_min)
    position = {node: pos for pos, node in enumerate(walk)}
    kept: set[int] = set()
    found: dict[int, Match] = {}
    for node in walk:
        if vectors.present[node]:
            earlier = sorted((j for j in near[node].tolist() if j in kept), key=position.__getitem__)
            for j in earlier:
                if texts is not None and not texts_agree(texts[node], texts[j]):
                    continue
                score = objects_match(vectors.boxes[node], labels[node], vectors.boxes[j], labels[j])
                if score >= objects_min:
                    found[node] = Match(j, round(float(vectors.whole[node] @ vectors.whole[j]), 4), round(score, 4))
                    break
        if node not in found:
            kept.add(node)
    return found
