"""The engine's dynamic batcher: every request answered exactly once, errors only where they belong,
no batch held back when nothing more can come, and its use from a stage under both runners."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import FIRST_COMPLETED

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_pipeline import (
    AsyncPipelineOrchestrator,
    BaseStageWorker,
    BatcherClosed,
    DynamicBatcher,
    SequentialRunner,
    StageMessage,
    StageSpec,
    Status,
)

POISON = -1


class Recorder:
    """A batch function that doubles numbers, fails each multiple of 7 alone and a whole batch
    holding POISON, and records every batch it ran."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        with self.lock:
            self.batches.append(list(items))
        if self.delay:
            time.sleep(self.delay)
        if POISON in items:
            raise RuntimeError("poisoned batch")
        return [ValueError(f"bad {x}") if x % 7 == 0 and x > 0 else 2 * x for x in items]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_batch=st.integers(1, 8),
    max_wait=st.sampled_from([0.0, 0.001, 0.005, 0.02]),
    plans=st.lists(st.lists(st.lists(st.sampled_from(["ok", "ok", "ok", "bad", "poison"]), max_size=6), max_size=4),
                   min_size=1, max_size=5),
    pauses=st.lists(st.sampled_from([0.0, 0.0, 0.0005, 0.002]), min_size=10, max_size=10),
    fn_delay=st.sampled_from([0.0, 0.001]),
    waiting_style=st.sampled_from(["all", "first"]),
)
@pytest.mark.timeout(120)
def test_every_request_is_answered_exactly_once(max_batch, max_wait, plans, pauses, fn_delay, waiting_style) -> None:
    """Clients (threads) submit rounds of requests at random paces and wait for all of them or for
    one at a time; each gets its own result, and an error reaches only the requests it concerns."""
    batches: list[list[tuple[int, str]]] = []

    def fn(items: list[tuple[int, str]]) -> list[int | BaseException]:
        batches.append(list(items))
        if fn_delay:
            time.sleep(fn_delay)
        if any(kind == "poison" for _, kind in items):
            raise RuntimeError("poisoned batch")
        return [ValueError(f"bad {uid}") if kind == "bad" else 2 * uid for uid, kind in items]

    plan = {(c, r, k): (c * 1000 + r * 100 + k, kind)
            for c, rounds in enumerate(plans) for r, kinds in enumerate(rounds) for k, kind in enumerate(kinds)}
    answers: dict[tuple[int, int, int], object] = {}
    lock = threading.Lock()
    with DynamicBatcher(fn, max_batch=max_batch, max_wait_s=max_wait, name="t") as batcher:
        def client(c: int, rounds: list[list[str]]) -> None:
            try:
                for r, kinds in enumerate(rounds):
                    futures = []
                    for k in range(len(kinds)):
                        time.sleep(pauses[(c + r + k) % len(pauses)])
                        futures.append(batcher.submit(plan[(c, r, k)]))
                    pending = set(futures)
                    while pending:
                        pending -= batcher.wait(pending, FIRST_COMPLETED if waiting_style == "first" else "ALL_COMPLETED")
                    for k, f in enumerate(futures):
                        with lock:
                            assert (c, r, k) not in answers
                            answers[(c, r, k)] = f.exception() or f.result()
            finally:
                batcher.leave()

        batcher.join(len(plans))
        threads = [threading.Thread(target=client, args=(c, rounds)) for c, rounds in enumerate(plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a client never got its answers"

    assert answers.keys() == plan.keys()
    batch_of = {uid: b for b in batches for uid, _ in b}
    # Every request ran in exactly one batch, and no batch was larger than allowed.
    assert sorted(uid for b in batches for uid, _ in b) == sorted(uid for uid, _ in plan.values())
    assert all(1 <= len(b) <= max_batch for b in batches)
    for key, (uid, kind) in plan.items():
        got = answers[key]
        if any(k == "poison" for _, k in batch_of[uid]):
            assert isinstance(got, RuntimeError), (uid, got)
        elif kind == "bad":
            assert isinstance(got, ValueError) and str(got) == f"bad {uid}", (uid, got)
        else:
            assert got == 2 * uid, (uid, got)
    assert batcher.stats.requests == len(plan) and batcher.stats.batches == len(batches)


def test_errors_reach_only_their_own_requests() -> None:
    fn = Recorder()
    with DynamicBatcher(fn, max_batch=4, max_wait_s=1.0) as batcher:
        batcher.join()
        poisoned = [batcher.submit(x) for x in (1, POISON, 2, 3)]  # one full batch
        clean = [batcher.submit(x) for x in (7, 8)]
        batcher.wait(poisoned + clean)
        batcher.leave()
    assert [type(f.exception()) for f in poisoned] == [RuntimeError] * 4
    assert isinstance(clean[0].exception(), ValueError) and clean[1].result() == 16
    assert fn.batches == [[1, POISON, 2, 3], [7, 8]]


def test_a_batch_goes_at_once_when_every_client_waits_or_it_is_full() -> None:
    fn = Recorder()
    with DynamicBatcher(fn, max_batch=8, max_wait_s=30.0) as batcher:
        batcher.join(3)
        results: list[list[int]] = []

        def client(base: int) -> None:
            results.append(batcher.map([base, base + 1]))
            batcher.leave()

        threads = [threading.Thread(target=client, args=(10 * i + 2,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # max_wait is 30 s: a batch that went for any other reason did not wait for it.
        assert batcher.stats.reasons["waited"] == 0, "waited for max_wait although every client was waiting"
        assert sorted(x for r in results for x in r) == [4, 6, 24, 26, 44, 46]
        # Full: goes although other clients (registered, idle) might still submit.
        batcher.join(2)
        assert batcher.map([1, 2, 3, 4, 5, 6, 8, 9]) == [2, 4, 6, 8, 10, 12, 16, 18]
        assert batcher.stats.reasons["waited"] == 0
        assert batcher.stats.reasons["full"] >= 1 and batcher.stats.reasons["all_waiting"] >= 1
        batcher.leave(2)


def test_a_lone_request_waits_at_most_max_wait_for_company() -> None:
    fn = Recorder()
    with DynamicBatcher(fn, max_batch=8, max_wait_s=0.3) as batcher:
        batcher.join(2)  # the other client is busy elsewhere: it might still submit
        future = batcher.submit(5)
        assert future.result(timeout=5) == 10
        batcher.leave(2)
    # It went because its wait ran out (max_wait), not because it was full or every client waited.
    assert batcher.stats.reasons == {"full": 0, "waited": 1, "all_waiting": 0, "closing": 0}, batcher.stats.reasons


def test_closing_with_an_error_fails_what_is_pending_and_unblocks_waiters() -> None:
    gate = threading.Event()

    def slow(items: list[int]) -> list[int]:
        gate.wait(5)
        return items

    batcher: DynamicBatcher[int, int] = DynamicBatcher(slow, max_batch=1, max_wait_s=0.0)
    batcher.start()
    batcher.join(1)
    first, second = batcher.submit(1), batcher.submit(2)
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(batcher.wait([first, second])))
    waiter.start()
    time.sleep(0.1)
    closer = threading.Thread(target=batcher.close, args=(BatcherClosed("cancelled"),))
    closer.start()
    assert isinstance(second.exception(timeout=5), BatcherClosed)
    gate.set()
    closer.join(5)
    waiter.join(5)
    assert first.result() == 1 and outcome
    assert isinstance(batcher.submit(3).exception(timeout=1), BatcherClosed)


class Submitter(BaseStageWorker):
    """A stage that sends each item's numbers to the shared batcher, like the filter's frames."""

    thread_safe = True

    def __init__(self, batcher: DynamicBatcher[int, int], per_item: int) -> None:
        self.batcher, self.per_item = batcher, per_item

    def process(self, msg: StageMessage) -> StageMessage:
        base = int(msg.item_id) * 100
        out = self.batcher.map(range(base + 1, base + 1 + self.per_item))
        return msg.evolve(metadata={"out": out})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runner", ["async", "sequential"])
def test_a_stage_fills_batches_across_items_and_never_sits_out_max_wait(runner: str) -> None:
    fn = Recorder(delay=0.01)
    with DynamicBatcher(fn, max_batch=8, max_wait_s=10.0) as batcher:
        spec = StageSpec("detect", lambda: Submitter(batcher, per_item=1), workers=8, batchers=(batcher,))
        items = [StageMessage(str(i)) for i in range(1, 41)]
        if runner == "async":
            result = asyncio.run(AsyncPipelineOrchestrator([spec]).run(items))
        else:
            result = SequentialRunner([spec], jobs=4).run(items)
    # max_wait is 10 s: no batch ever waited for it, the last one included.
    assert batcher.stats.reasons["waited"] == 0, batcher.stats.reasons
    status = {o.item_id: o for o in result.items}
    for i in range(1, 41):
        if (i * 100 + 1) % 7 == 0:  # its one request fails, and so does the item
            assert status[str(i)].status is Status.FAILED and status[str(i)].error_type == "ValueError"
        else:
            assert status[str(i)].outputs[0].metadata["out"] == [2 * (i * 100 + 1)]
    assert max(len(b) for b in fn.batches) > 1, "one item per batch: nothing was batched across items"


def test_a_failed_request_fails_its_item_only_and_stop_lets_items_in_flight_finish() -> None:
    fn = Recorder(delay=0.02)
    with DynamicBatcher(fn, max_batch=4, max_wait_s=0.05) as batcher:
        orch: AsyncPipelineOrchestrator

        def stop_early(event) -> None:  # type: ignore[no-untyped-def]
            if event.kind == "finished" and event.item_id == "4":
                orch.request_stop()

        spec = StageSpec("detect", lambda: Submitter(batcher, per_item=2), workers=4, batchers=(batcher,))
        orch = AsyncPipelineOrchestrator([spec], on_event=stop_early)
        # Item 3's first request, 301, is a multiple of 7: that request fails, so item 3 does.
        items = [StageMessage(str(i)) for i in range(1, 200)]
        result = asyncio.run(orch.run(items))
    status = {o.item_id: o.status for o in result.items}
    assert result.stopped
    assert status["4"] is Status.DONE and status["3"] is Status.FAILED
    assert Status.CANCELLED in status.values(), "the stop left later items unstarted"
    for o in result.items:
        bad = any((int(o.item_id) * 100 + k) % 7 == 0 for k in (1, 2))
        if o.status is not Status.CANCELLED:
            assert (o.status is Status.FAILED) == bad and (not bad or o.error_type == "ValueError"), o
