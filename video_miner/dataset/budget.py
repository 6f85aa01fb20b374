"""A budget: of the frames dedup kept, the N that cover them best (k-center greedy: each pick is the
frame farthest from every frame picked so far, in the detector's centred picture vectors), after
per-class quotas and a share of hard examples (frames whose detections sit just above the
confidence threshold, where the model is least sure).

Deterministic: ties go to the more preferred frame, and the first pick is the most preferred. The
picks of an earlier run are kept first, in their order, so a rerun with a larger budget keeps every
frame chosen before (and a smaller one keeps a prefix of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BudgetRule:
    budget: int
    per_class_min: dict[str, int]
    hard_fraction: float
    #: A frame is hard when its least confident detection is below ``conf + hard_margin``, or when
    #: a box of it is marked hard along its track (missed between neighbours, class changed).
    conf: float
    hard_margin: float


class _Cover:
    """Each frame's distance (1 - cosine) to the nearest pick so far."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.distance = np.full(len(vectors), np.inf, dtype=np.float32)
        self.picked: list[int] = []
        self.is_picked = np.zeros(len(vectors), dtype=bool)

    def pick(self, node: int) -> None:
        self.picked.append(node)
        self.is_picked[node] = True
        np.minimum(self.distance, 1 - self.vectors @ self.vectors[node], out=self.distance)
        self.distance[node] = -np.inf

    def farthest(self, among: np.ndarray) -> int | None:
        """The unpicked frame of ``among`` (a mask) farthest from the picks; None when none is left.
        ``argmax`` takes the first of equals: frames are in priority order, so the preferred one."""
        allowed = among & ~self.is_picked
        if not allowed.any():
            return None
        scores = np.where(allowed, self.distance, -np.inf)
        return int(np.argmax(scores))

    def radius(self) -> float:
        """How far the worst-covered frame is from its nearest pick."""
        rest = self.distance[~self.is_picked]
        return float(rest.max()) if len(rest) else 0.0


@dataclass
class Chosen:
    #: Indices, in pick order.
    picked: list[int]
    #: The coverage radius: the largest distance from a frame to its nearest pick.
    radius: float


def choose(vectors: np.ndarray, labels: Sequence[Sequence[str]], confidences: Sequence[Sequence[float]],
           rule: BudgetRule, earlier: Sequence[int] = (), marked: Sequence[bool] = ()) -> Chosen:
    """Pick ``rule.budget`` of the frames (rows of ``vectors``: unit vectors, in priority order).
    ``marked``: frames where the model contradicts itself along a track, hard whatever their scores."""
    n = len(vectors)
    cover = _Cover(vectors)
    budget = min(rule.budget, n)
    for node in list(dict.fromkeys(earlier))[:budget]:
        cover.pick(node)
    everyone = np.ones(n, dtype=bool)

    def fill(among: np.ndarray, upto: int) -> None:
        """Pick from ``among`` until ``upto`` of the picks are in it (or it runs out, or the budget does)."""
        while len(cover.picked) < budget and int((among & cover.is_picked).sum()) < upto:
            node = cover.farthest(among) if cover.picked else int(np.argmax(among))
            if node is None:
                return
            cover.pick(node)

    for label, minimum in sorted(rule.per_class_min.items()):
        fill(np.array([label in ls for ls in labels], dtype=bool), minimum)
    if rule.hard_fraction > 0:
        hard = np.array([bool(cs) and min(cs) < rule.conf + rule.hard_margin for cs in confidences], dtype=bool)
        if len(marked):
            hard |= np.asarray(marked, dtype=bool)
        fill(hard, round(rule.hard_fraction * budget))
    fill(everyone, budget)
    return Chosen(cover.picked, cover.radius())


def radius_of(vectors: np.ndarray, picked: Sequence[int]) -> float:
    """The coverage radius of any set of picks (for comparing with other ways of choosing)."""
    cover = _Cover(vectors)
    for node in picked:
        cover.pick(node)
    return cover.radius()
