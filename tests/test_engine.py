"""The stage engine: exact completion, backpressure, overlap, crashes, retries, stop signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_pipeline import (
    AsyncPipelineOrchestrator,
    BaseStageWorker,
    FatalStageError,
    PipelineError,
    PipelineEvent,
    QueuePolicy,
    SequentialRunner,
    StageMessage,
    StageSpec,
    Status,
)

ROOT = Path(__file__).resolve().parents[1]


class Scripted(BaseStageWorker):
    """Behaviour per (stage, item) drawn up front, so both runners see the same script."""

    thread_safe = True

    def __init__(self, stage: str, plan: dict[tuple[str, str], str], delay: float = 0.0) -> None:
        self.stage, self.plan, self.delay = stage, plan, delay

    def process(self, msg: StageMessage) -> StageMessage | list[StageMessage] | None:
        if self.delay:
            time.sleep(self.delay)
        action = self.plan.get((self.stage, msg.item_id), "pass")
        if action == "drop":
            return None
        if action == "fail":
            raise ValueError(f"{self.stage} rejects {msg.item_id}")
        if action.startswith("fan"):
            return [msg.evolve(metadata={"part": i}) for i in range(int(action[3:]))]
        return msg


def run_async(specs: list[StageSpec], items: list[StageMessage], **kw: object):
    return asyncio.run(AsyncPipelineOrchestrator(specs, **kw).run(items))  # type: ignore[arg-type]


def expected_status(plan: dict[tuple[str, str], str], stages: list[str], item: str) -> Status:
    """Fan-out parts share their item's script, so an item's fate is its first non-pass action."""
    for stage in stages:
        action = plan.get((stage, item), "pass")
        if action == "drop":
            return Status.DROPPED
        if action == "fail":
            return Status.FAILED
        if action == "fan0":
            return Status.DROPPED
    return Status.DONE


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_items=st.integers(0, 25),
    n_stages=st.integers(1, 4),
    workers=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    queue_sizes=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    actions=st.lists(st.sampled_from(["pass", "pass", "pass", "drop", "fail", "fan0", "fan2", "fan3"]),
                     min_size=100, max_size=100),
    delays=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.003]), min_size=4, max_size=4),
    jobs=st.integers(1, 3),
)
@pytest.mark.timeout(120)
def test_every_item_settles_exactly_once(n_items, n_stages, workers, queue_sizes, actions, delays, jobs) -> None:
    stages = [f"s{i}" for i in range(n_stages)]
    plan = {(stage, f"i{k}"): actions[(k * 4 + j) % 100] for j, stage in enumerate(stages) for k in range(n_items)}
    specs = [
        StageSpec(stage, (lambda s=stage, d=delays[j]: Scripted(s, plan, d)), workers=workers[j], queue_size=queue_sizes[j])
        for j, stage in enumerate(stages)
    ]
    items = [StageMessage(f"i{k}") for k in range(n_items)]
    results = [run_async(specs, items), SequentialRunner(specs, jobs=jobs).run(items)]
    for result in results:
        assert [o.item_id for o in result.items] == [m.item_id for m in items]
        for outcome in result.items:
            assert outcome.status is expected_status(plan, stages, outcome.item_id), outcome
            if outcome.status is Status.FAILED:
                assert outcome.error_type == "ValueError" and outcome.stage in stages
    assert [(o.item_id, o.status, o.stage if o.status is Status.FAILED else None) for o in results[0].items] == [
        (o.item_id, o.status, o.stage if o.status is Status.FAILED else None) for o in results[1].items
    ]


def test_fan_out_parts_all_reach_the_end() -> None:
    plan = {("split", "v"): "fan3"}
    specs = [StageSpec("split", lambda: Scripted("split", plan)), StageSpec("sink", lambda: Scripted("sink", {}))]
    result = run_async(specs, [StageMessage("v")])
    assert result.items[0].status is Status.DONE
    assert sorted(m.metadata["part"] for m in result.items[0].outputs) == [0, 1, 2]


def test_bounded_queues_never_exceed_their_size() -> None:
    depths: list[tuple[str, int, int]] = []
    orch: AsyncPipelineOrchestrator

    def observe(event: PipelineEvent) -> None:
        for name, snap in orch.snapshot().items():
            depths.append((name, snap.queue_depth, snap.queue_size))

    specs = [
        StageSpec("fast", lambda: Scripted("fast", {}), workers=2, queue_size=1),
        StageSpec("mid", lambda: Scripted("mid", {}), workers=1, queue_size=2),
        StageSpec("slow", lambda: Scripted("slow", {}, delay=0.02), workers=1, queue_size=3),
    ]
    orch = AsyncPipelineOrchestrator(specs, on_event=observe)
    result = asyncio.run(orch.run([StageMessage(str(i)) for i in range(40)]))
    assert result.summary()["done"] == 40
    assert depths and all(depth <= size for _, depth, size in depths)
    # The slow stage's queue really filled: backpressure, not an idle pipeline.
    assert result.stages["slow"].queue_high_water == 3


def test_stages_overlap() -> None:
    """Different stages work on different items at the same moment (counted, not timed)."""
    busy: set[str] = set()
    overlaps: list[frozenset[str]] = []
    lock = threading.Lock()

    class Watched(Scripted):
        def process(self, msg: StageMessage) -> StageMessage | list[StageMessage] | None:
            with lock:
                busy.add(self.stage)
                overlaps.append(frozenset(busy))
            try:
                return super().process(msg)
            finally:
                with lock:
                    busy.discard(self.stage)

    specs = [StageSpec(name, (lambda n=name: Watched(n, {}, delay=0.02))) for name in ("a", "b", "c", "d")]
    result = run_async(specs, [StageMessage(str(i)) for i in range(12)])
    assert result.summary()["done"] == 12
    assert max(map(len, overlaps)) >= 3, "stages ran one after another instead of side by side"


class CrashOnSetup(BaseStageWorker):
    def setup(self) -> None:
        raise OSError("model file vanished")

    def process(self, msg: StageMessage) -> StageMessage:
        return msg


class Fatal(BaseStageWorker):
    def process(self, msg: StageMessage) -> StageMessage:
        raise FatalStageError("GPU fell off the bus")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("crasher", [CrashOnSetup, Fatal])
def test_crashing_worker_ends_the_run(crasher: type[BaseStageWorker]) -> None:
    # A tiny queue before the crasher, many inputs: without structured concurrency the upstream
    # stage would block forever on a full queue.
    specs = [
        StageSpec("up", lambda: Scripted("up", {}), workers=2, queue_size=1),
        StageSpec("crash", crasher, queue_size=1),
    ]
    # A run that hangs instead is ended by the timeout above.
    with pytest.raises(PipelineError, match="stage 'crash'"):
        run_async(specs, [StageMessage(str(i)) for i in range(100)])
    with pytest.raises(PipelineError, match="stage 'crash'"):
        SequentialRunner(specs).run([StageMessage(str(i)) for i in range(100)])


class Flaky(BaseStageWorker):
    retry_on = (ConnectionError,)
    max_attempts = 3
    backoff_s = 0.01
    thread_safe = True

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def process(self, msg: StageMessage) -> StageMessage:
        with self.lock:
            self.calls[msg.item_id] = self.calls.get(msg.item_id, 0) + 1
            n = self.calls[msg.item_id]
        if n <= self.failures.get(msg.item_id, 0):
            raise ConnectionError(f"attempt {msg.attempt} failed")
        if msg.item_id == "bad":
            raise KeyError("permanent")
        return msg.evolve(metadata={"attempts": msg.attempt})


@pytest.mark.parametrize("runner", ["async", "sequential"])
def test_transient_errors_are_retried_with_backoff(runner: str) -> None:
    worker = Flaky({"once": 1, "twice": 2, "always": 99, "bad": 0})
    specs = [StageSpec("net", lambda: worker)]
    items = [StageMessage(i) for i in ("ok", "once", "twice", "always", "bad")]
    result = run_async(specs, items) if runner == "async" else SequentialRunner(specs).run(items)
    status = {o.item_id: o for o in result.items}
    assert status["once"].status is Status.DONE and status["once"].outputs[0].metadata["attempts"] == 2
    assert status["twice"].status is Status.DONE
    assert status["always"].status is Status.FAILED and status["always"].error_type == "ConnectionError"
    assert worker.calls["always"] == 3
    assert status["bad"].status is Status.FAILED and worker.calls["bad"] == 1
    assert result.stages["net"].retries == 1 + 2 + 2


@pytest.mark.parametrize("policy", [QueuePolicy.DROP_OLDEST, QueuePolicy.DROP_NEWEST])
def test_drop_policies_count_every_drop(policy: QueuePolicy) -> None:
    specs = [
        StageSpec("src", lambda: Scripted("src", {})),
        StageSpec("slow", lambda: Scripted("slow", {}, delay=0.01), queue_size=1, queue_policy=policy),
    ]
    result = run_async(specs, [StageMessage(str(i)) for i in range(50)])
    summary = result.summary()
    assert summary["done"] + summary["dropped"] == 50
    assert summary["dropped"] > 0
    assert result.stages["slow"].queue_dropped == summary["dropped"]
    if policy is QueuePolicy.DROP_NEWEST:
        # The first items win under drop_newest, the last under drop_oldest.
        assert result.items[0].status is Status.DONE
    else:
        assert result.items[-1].status is Status.DONE


def test_duplicate_item_ids_run_once() -> None:
    result = run_async([StageSpec("a", lambda: Scripted("a", {}))], [StageMessage("x"), StageMessage("x")])
    assert [o.item_id for o in result.items] == ["x"]


SIGINT_SCRIPT = """
import asyncio, json, sys, time
from async_pipeline import AsyncPipelineOrchestrator, BaseStageWorker, StageMessage, StageSpec

class Slow(BaseStageWorker):
    def process(self, msg):
        time.sleep(0.3)
        return msg

class Announce(BaseStageWorker):
    def process(self, msg):
        print("STARTED", flush=True)
        return msg

def on_event(event):
    if event.kind == "item_done":
        print("DONE", event.item_id, flush=True)

orch = AsyncPipelineOrchestrator(
    [StageSpec("announce", Announce), StageSpec("slow", Slow, workers=2)],
    handle_signals=True, grace_seconds=float(sys.argv[1]), on_event=on_event,
)
result = asyncio.run(orch.run(StageMessage(f"item{i}") for i in range(30)))
print("RESULT " + json.dumps(result.to_dict()), flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("grace", "signals"), [(30.0, 1), (0.0, 1), (30.0, 2)])
def test_sigint_returns_partial_result(tmp_path: Path, grace: float, signals: int) -> None:
    script = tmp_path / "pipe.py"
    script.write_text(SIGINT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(grace)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "STARTED"
    # Interrupted once an item is done: some items are finished, and (30 items at 0.3 s on two
    # workers) most are not, however fast the machine.
    while not proc.stdout.readline().startswith("DONE"):
        assert proc.poll() is None
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    statuses = {i["item_id"]: i["status"] for i in result["items"]}
    assert result["stopped"] is True
    assert set(statuses) == {f"item{i}" for i in range(30)}, "every item is named, finished or not"
    unfinished = [i for i, s in statuses.items() if s == "cancelled"]
    done = [i for i, s in statuses.items() if s == "done"]
    assert unfinished and done
    assert len(done) + len(unfinished) == 30


class AsyncFetch(BaseStageWorker):
    """A naturally async stage: awaited on the loop, not sent to the thread pool."""

    in_flight = 0
    most = 0

    async def process(self, msg: StageMessage) -> StageMessage:  # type: ignore[override]
        AsyncFetch.in_flight += 1
        AsyncFetch.most = max(AsyncFetch.most, AsyncFetch.in_flight)
        await asyncio.sleep(0.05)
        AsyncFetch.in_flight -= 1
        return msg.evolve(metadata={"thread": threading.current_thread().name})


def test_async_workers_run_on_the_loop_and_overlap() -> None:
    specs = [StageSpec("fetch", AsyncFetch, workers=10)]
    result = run_async(specs, [StageMessage(str(i)) for i in range(20)])
    assert AsyncFetch.most >= 2, "awaited one at a time"  # ten workers: up to ten at once
    assert {o.outputs[0].metadata["thread"] for o in result.items} == {threading.main_thread().name}
    seq = SequentialRunner(specs).run([StageMessage("a")])
    assert seq.items[0].status is Status.DONE


class FakeClock:
    """The engine's clock, moved only by the test: durations it measures are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_setup_time_is_counted_apart_from_busy_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model load is work the stage does but not per item: reported as setup_seconds, never as
    busy time (the clock moves 0.5 s during each setup, not at all for the items)."""
    import async_pipeline.orchestrator
    import async_pipeline.sequential

    clock = FakeClock()
    for module in (async_pipeline.orchestrator, async_pipeline.sequential):
        monkeypatch.setattr(module, "time", clock)

    class SlowSetup(Scripted):
        def setup(self) -> None:
            clock.now += 0.5

    specs = [StageSpec("load", lambda: SlowSetup("load", {}), workers=2), StageSpec("pass", lambda: Scripted("pass", {}))]
    items = [StageMessage(item_id=str(i)) for i in range(3)]
    for result in (run_async(specs, items), SequentialRunner(specs).run(items)):
        load, passing = result.stages["load"], result.stages["pass"]
        assert load.setup_seconds >= 0.5  # each worker's setup, however the two overlap
        assert load.busy_seconds == 0 and passing.busy_seconds == 0
        assert passing.setup_seconds < load.setup_seconds
