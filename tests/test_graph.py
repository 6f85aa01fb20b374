"""Graphs in the engine: fan-out to branches and joins with synchronizers, under random speeds,
drops and failures (hypothesis): every key leaves a join at most once, an exact join emits every
key all its branches answered, nothing deadlocks; the sequential runner gives the same outputs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_pipeline import BaseStageWorker, GraphRunner, Join, Node, StageMessage, Sync, run_sequential

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Branch(BaseStageWorker):
    """Answers each key after ``delay`` (seconds, by key), or drops or fails the keys it is told to."""

    thread_safe = True

    def __init__(self, name: str, plan: dict[int, str], delay: dict[int, float]) -> None:
        self.name, self.plan, self.delay = name, plan, delay

    def process(self, msg: StageMessage[Any]) -> StageMessage[Any] | None:
        key = msg.metadata["key"]
        time.sleep(self.delay.get(key, 0.0))
        action = self.plan.get(key, "pass")
        if action == "fail":
            raise ValueError(f"{self.name} fails {key}")
        if action == "drop":
            return None
        return msg.evolve(metadata={self.name: key})


def merge(key: Any, answers: dict[str, StageMessage[Any] | None]) -> StageMessage[Any]:
    present = {name: m for name, m in answers.items() if m is not None}
    return StageMessage(str(key), metadata={"key": key, "answered": sorted(present)})


def source() -> BaseStageWorker:
    class Source(BaseStageWorker):
        thread_safe = True

        def process(self, msg: StageMessage[Any]) -> StageMessage[Any]:
            return msg

    return Source()


def graph(plans: dict[str, dict[int, str]], delays: dict[str, dict[int, float]], sync: Sync, capacity: int,
          workers: int) -> tuple[list[Node], list[Join]]:
    nodes = [Node("frames", source, workers=1, queue_size=2)]
    for name in plans:
        nodes.append(Node(name, (lambda n=name: Branch(n, plans[n], delays[n])), inputs=("frames",), workers=workers,
                          queue_size=2))
    return nodes, [Join("join", tuple(plans), merge, sync, capacity=capacity)]


def inputs(n: int) -> list[StageMessage[Any]]:
    return [StageMessage(str(k), metadata={"key": k}) for k in range(n)]


def key(msg: StageMessage[Any]) -> Any:
    return msg.metadata["key"]


ACTIONS = st.sampled_from(["pass", "pass", "pass", "drop", "fail"])


@FAST
@given(n=st.integers(1, 30), branches=st.integers(2, 3), capacity=st.integers(1, 8), workers=st.integers(1, 3),
       data=st.data())
def test_an_exact_join_emits_each_key_once_and_every_fully_answered_key(n: int, branches: int, capacity: int,
                                                                         workers: int, data: st.DataObject) -> None:
    names = [f"b{i}" for i in range(branches)]
    plans = {b: {k: data.draw(ACTIONS) for k in range(n)} for b in names}
    delays = {b: {k: data.draw(st.sampled_from([0.0, 0.0, 0.001, 0.004])) for k in range(n)} for b in names}
    nodes, joins = graph(plans, delays, Sync.exact(), capacity, workers)
    result = asyncio.run(asyncio.wait_for(GraphRunner(nodes, joins, key=key).run(inputs(n)), 60))
    out = result.outputs["join"]
    keys = [m.metadata["key"] for m in out]
    assert len(keys) == len(set(keys)), "a key left the join twice"
    assert sorted(keys) == list(range(n)), "every key goes on, answered in full or not"
    for m in out:
        k = m.metadata["key"]
        assert m.metadata["answered"] == sorted(b for b in names if plans[b][k] == "pass")
    stats = result.joins["join"]
    full = sum(all(plans[b][k] == "pass" for b in names) for k in range(n))
    assert stats.matched == full and stats.partial == n - full and stats.expired == 0 and stats.waiting == 0
    # The sequential runner gives the same outputs.
    sequential = run_sequential(nodes, joins, inputs(n), key=key)
    assert sorted((m.metadata["key"], m.metadata["answered"]) for m in sequential.outputs["join"]) == \
        sorted((m.metadata["key"], m.metadata["answered"]) for m in out)


@FAST
@given(n=st.integers(5, 40), tolerance=st.integers(0, 5), wait_all=st.booleans(), data=st.data())
def test_a_realtime_join_never_waits_on_a_slow_branch_past_the_tolerance(n: int, tolerance: int, wait_all: bool,
                                                                          data: st.DataObject) -> None:
    """A slow branch that drops half its frames: keys go on when answered in full, or once the
    fast branch is ``tolerance`` keys ahead, partial or expired; each key once; none deadlocks."""
    plans = {"fast": {}, "slow": {k: data.draw(st.sampled_from(["pass", "drop"])) for k in range(n)}}
    delays = {"fast": {}, "slow": {k: 0.002 for k in range(n)}}
    nodes, joins = graph(plans, delays, Sync.realtime(tolerance, wait_all), capacity=4, workers=1)
    result = asyncio.run(asyncio.wait_for(GraphRunner(nodes, joins, key=key).run(inputs(n)), 60))
    stats = result.joins["join"]
    keys = [m.metadata["key"] for m in result.outputs["join"]]
    assert len(keys) == len(set(keys))
    assert stats.matched + stats.partial + stats.expired == n
    for m in result.outputs["join"]:
        if "slow" not in m.metadata["answered"] and wait_all:  # waiting for all: only a drop said so goes on
            assert plans["slow"][m.metadata["key"]] == "drop", (m.metadata, stats.as_dict())
    if wait_all:
        assert stats.matched + stats.partial == len(keys)
    else:
        assert len(keys) == n
    assert stats.as_dict()["wait_p95_s"] >= stats.as_dict()["wait_p50_s"] >= 0


def test_a_full_join_holds_the_fast_branch_back_instead_of_growing() -> None:
    plans = {"fast": {}, "slow": {}}
    delays = {"fast": {}, "slow": {k: 0.01 for k in range(40)}}
    nodes, joins = graph(plans, delays, Sync.exact(), capacity=3, workers=1)
    runner = GraphRunner(nodes, joins, key=key)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, runner.join_stats["join"].waiting)
            await asyncio.sleep(0.001)

    async def main() -> Any:
        watcher = asyncio.ensure_future(watch())
        try:
            return await runner.run(inputs(40))
        finally:
            watcher.cancel()

    result = asyncio.run(asyncio.wait_for(main(), 60))
    assert result.joins["join"].matched == 40 and peak <= 3, peak


def test_a_cancelled_graph_ends_at_once() -> None:
    plans = {"a": {}, "b": {}}
    delays = {"a": {k: 0.05 for k in range(1000)}, "b": {}}
    nodes, joins = graph(plans, delays, Sync.exact(), capacity=4, workers=2)

    async def main() -> None:
        task = asyncio.ensure_future(GraphRunner(nodes, joins, key=key).run(inputs(1000)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 30))  # a cancellation that hangs is a TimeoutError


def test_graphs_refuse_cycles_and_nodes_with_two_inputs() -> None:
    with pytest.raises(ValueError, match="cycle"):
        GraphRunner([Node("s", source), Node("a", source, ("b",)), Node("b", source, ("a",))])
    with pytest.raises(ValueError, match="put a join before it"):
        GraphRunner([Node("s", source), Node("a", source, ("s",)), Node("b", source, ("s", "a"))])


@FAST
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 30), st.booleans()), max_size=120),
       st.sampled_from(["exact", "realtime"]), st.integers(0, 5), st.booleans())
def test_a_synchronizer_releases_each_key_at_most_once_whatever_the_order(
        offers: list[tuple[str, int, bool]], kind: str, tolerance: int, wait_all: bool) -> None:
    """The synchronizer alone, as the miner's model graph drives it from several threads (under a
    lock): answers in any order, repeated, some branches dropping keys (None)."""
    from async_pipeline import Synchronizer

    sync: Synchronizer[int] = Synchronizer(["a", "b", "c"], Sync.exact() if kind == "exact" else
                                           Sync.realtime(tolerance, wait_all))
    released: list[Any] = []
    answered: dict[int, set[str]] = {}
    for branch, key, present in offers:
        if branch in answered.get(key, set()):
            continue  # a branch answers a key once
        answered.setdefault(key, set()).add(branch)
        for r in sync.offer(branch, key, key if present else None):
            released.append(r.key)
            assert set(r.answers) == {"a", "b", "c"}
            assert r.how in ("matched", "partial", "expired")
            if r.how == "matched":
                assert all(v == r.key for v in r.answers.values())
    released += [r.key for r in sync.flush()]
    assert len(released) == len(set(released)), "a key left twice"
    assert not sync.pending and sync.stats.waiting == 0
    stats = sync.stats
    assert stats.matched + stats.partial + stats.expired == len(released)
    if kind == "exact":
        assert set(released) == set(answered), "every key some branch answered goes on"
