"""The dedup index: finds every near pair, agrees with brute force, does not care about order."""

from __future__ import annotations

import numpy as np
import pytest

from video_miner.dataset.dedup import KEPT, NO, NOT_ELIGIBLE, UNKNOWN, YES, near_pairs, select_distinct


def brute_pairs(h: np.ndarray, t: int) -> set[tuple[int, int]]:
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= t, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def brute_greedy(h: np.ndarray, priority: np.ndarray, t: int, eligible: np.ndarray | None = None) -> np.ndarray:
    dup_of = np.full(len(h), KEPT)
    kept: list[int] = []
    for i in priority.tolist():
        near = [k for k in kept if int(h[i] ^ h[k]).bit_count() <= t]
        if near:
            dup_of[i] = near[0]
        elif eligible is None or eligible[i]:
            kept.append(i)
        else:
            dup_of[i] = NOT_ELIGIBLE
    return dup_of


def planted(n: int, pairs: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random hashes plus ``pairs`` copies of some of them with 0..t bits flipped; returns the
    hashes and the planted (source, copy) index pairs."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)
    src = rng.choice(n, size=pairs, replace=False)
    copies = []
    for k, s in enumerate(src):
        bits = rng.choice(64, size=k % (t + 1), replace=False)
        copies.append(h[s] ^ np.uint64(sum(1 << int(b) for b in bits)))
    return np.concatenate([h, np.array(copies, dtype=np.uint64)]), np.stack([src, n + np.arange(pairs)], axis=1)


@pytest.mark.parametrize("t", [0, 3, 6, 10])
def test_near_pairs_match_brute_force(t: int) -> None:
    h, _ = planted(1500, 400, t, seed=t)
    assert set(map(tuple, near_pairs(h, t).tolist())) == brute_pairs(h, t)


@pytest.mark.parametrize("t", [2, 6])
def test_greedy_matches_brute_force_and_ignores_input_order(t: int) -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**64 - 1, size=50, dtype=np.uint64)
    # Dense clusters so that greedy choices matter.
    h = np.concatenate([base ^ np.uint64(1 << int(rng.integers(64))) for _ in range(8)] + [base])
    priority = rng.permutation(len(h))
    expected = brute_greedy(h, priority, t)
    assert np.array_equal(select_distinct(h, priority, t), expected)
    # Same frames arriving in another order (another video finished first): same kept set.
    perm = rng.permutation(len(h))
    inverse = np.argsort(perm)
    again = select_distinct(h[perm], inverse[priority], t)
    kept = {int(perm[i]) for i in np.flatnonzero(again < 0)}
    assert kept == set(np.flatnonzero(expected < 0).tolist())


def clusters(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, size=40, dtype=np.uint64)
    return np.concatenate([base ^ np.uint64(1 << int(rng.integers(64))) for _ in range(6)] + [base])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [1, 5])
def test_skipped_detections_are_asked_only_when_they_matter(seed: int, batch: int) -> None:
    """Frames whose eligibility is unknown (detection skipped) give exactly the full-knowledge result,
    and with batch 1 only those no kept frame covers are asked about."""
    t = 4
    h = clusters(seed)
    rng = np.random.default_rng(100 + seed)
    truth = rng.random(len(h)) < 0.6
    priority = rng.permutation(len(h))
    unknown = rng.random(len(h)) < 0.5
    eligible = np.where(unknown, UNKNOWN, np.where(truth, YES, NO))
    asked: list[int] = []
    batches: list[list[int]] = []

    def resolve(nodes: list[int]) -> list[bool]:
        asked.extend(nodes)
        batches.append(nodes)
        return [bool(truth[i]) for i in nodes]

    expected = brute_greedy(h, priority, t, truth)
    got = select_distinct(h, priority, t, eligible, resolve, batch=batch)
    assert np.array_equal(got, expected)
    assert len(asked) == len(set(asked)) and all(unknown[i] for i in asked)
    needed = {i for i in np.flatnonzero(unknown).tolist() if expected[i] < 0}
    assert needed <= set(asked)
    if batch == 1:
        assert set(asked) == needed
    # A batch never holds two near frames: the first may be kept and make the other's detection moot.
    for nodes in batches:
        assert all(int(h[a] ^ h[b]).bit_count() > t for a in nodes for b in nodes if a < b), nodes
    assert len(asked) < unknown.sum(), "covered frames are never detected"


def test_unknown_eligibility_needs_a_resolver() -> None:
    with pytest.raises(ValueError):
        select_distinct(clusters(0), np.arange(280), 4, np.full(280, UNKNOWN))


def test_every_planted_pair_is_resolved_at_scale() -> None:
    n, t = 100_000, 6
    h, plants = planted(n, 2000, t, seed=1)
    found = {tuple(p) for p in near_pairs(h, t).tolist()}
    assert all((int(a), int(b)) in found for a, b in plants), "every planted pair is found"
    kept = select_distinct(h, np.random.default_rng(2).permutation(len(h)), t) < 0
    assert not (kept[plants[:, 0]] & kept[plants[:, 1]]).any(), "no planted pair keeps both frames"
    assert kept.sum() >= n - 2000


@pytest.mark.parametrize("seed", range(4))
def test_repeated_pictures_give_the_brute_force_result(seed: int) -> None:
    """Frames with equal hashes (a looping stream, a still scene): one node each, the same answer."""
    rng = np.random.default_rng(seed)
    h = np.repeat(clusters(seed)[::4], rng.integers(1, 6, size=70))
    truth = rng.random(len(h)) < 0.6
    priority = rng.permutation(len(h))
    eligible = np.where(rng.random(len(h)) < 0.5, UNKNOWN, np.where(truth, YES, NO))
    got = select_distinct(h, priority, 4, eligible, lambda nodes: [bool(truth[i]) for i in nodes], batch=3)
    assert np.array_equal(got, brute_greedy(h, priority, 4, truth))


def test_a_camera_watching_a_still_scene_costs_memory_per_picture_not_per_pair() -> None:
    """200,000 frames of 100 pictures (a week of a shop camera whose scene barely changes): the old
    pair list held billions of pairs. Now memory stays near the frames' own arrays."""
    import tracemalloc

    rng = np.random.default_rng(7)
    pictures = rng.integers(0, 2**64 - 1, size=100, dtype=np.uint64)
    h = pictures[rng.integers(0, 100, size=200_000)]
    tracemalloc.start()
    dup_of = select_distinct(h, rng.permutation(len(h)), 6)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (dup_of == KEPT).sum() == len(np.unique(h))
    assert peak < 100 * 2**20, peak / 2**20


@pytest.mark.parametrize("t", [2, 6])
def test_near_pairs_of_dense_clusters_are_each_found_once(t: int) -> None:
    """Near-identical pictures share most bands (a camera's noise flips a bit or two): every pair
    is found, and reported once, not once per pair of shared bands."""
    h = np.concatenate([clusters(3), clusters(3)[:50]])
    pairs = near_pairs(h, t)
    assert len(pairs) == len({tuple(p) for p in pairs.tolist()})
    assert set(map(tuple, pairs.tolist())) == brute_pairs(h, t)


def test_the_previous_model_disagrees_where_an_object_is_found_by_one_model_only_or_named_otherwise() -> None:
    from video_miner.dataset.previous import disagreements
    from video_miner.records import Detection

    def box(label: str, x: float, conf: float = 0.9) -> Detection:
        return Detection(label, 0, conf, (x, 0.5, 0.2, 0.2))

    assert disagreements([box("person", 0.2), box("car", 0.6)], [box("person", 0.21), box("car", 0.6)]) == []
    assert disagreements([box("person", 0.2)], []) == ["the previous model missed this person"]
    assert disagreements([], [box("dog", 0.2)]) == ["only the previous model saw a dog"]
    assert disagreements([box("truck", 0.6)], [box("car", 0.6)]) == ["previous model: car, now truck"]
    # the same class at the same place is the match, whatever other class overlaps it more
    assert disagreements([box("car", 0.6), box("truck", 0.6)], [box("car", 0.61)]) == \
        ["the previous model missed this truck"]
    # far apart (IoU under 0.5) is two objects, one each
    assert sorted(disagreements([box("car", 0.2)], [box("car", 0.7)])) == \
        ["only the previous model saw a car", "the previous model missed this car"]
