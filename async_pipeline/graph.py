"""Graphs of stages: a node may feed several nodes (every message to each branch), and a join
node takes several inputs and matches their messages by key through a synchronizer.

* ``exact``: a key goes on when every branch has answered it. A branch that drops, filters or
  fails a key says so (a *tombstone* travels down in its place), so a join never waits forever.
* ``realtime(tolerance, wait_all)``: a key goes on when every branch answered it, or once some
  branch has answered a key newer by more than ``tolerance``: with what it has
  (``wait_all=False``: *partial*) or not at all (``wait_all=True``: *expired*), counted either way.

Buffers are bounded: a join holds at most ``capacity`` keys; while full it reads only from the
branches that still owe one of them, so a fast branch waits (backpressure) and a slow one is never
starved. Every key leaves a join at most once. :class:`GraphRunner` runs a graph on the event loop
(the blocking work in one shared thread pool, like the linear orchestrator); :func:`run_sequential`
runs the same graph one input at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .message import StageMessage
from .sync import JoinStats, Release, Sync, Synchronizer
from .worker import BaseStageWorker, as_messages, is_async_worker

#: The key a join matches messages by (a frame's time, an item id).
KeyFn = Callable[[StageMessage[Any]], Any]
#: Builds a join's output from each branch's answer (None where a branch dropped or failed it, or
#: did not answer in time); returns None to drop the key.
Merge = Callable[[Any, dict[str, StageMessage[Any] | None]], StageMessage[Any] | None]


@dataclass(frozen=True)
class Tombstone:
    """A branch's word that it will not answer ``key``: it dropped, filtered or failed it."""

    key: Any
    node: str
    reason: str


_END = object()


@dataclass(frozen=True)
class Node:
    """A stage of the graph: ``worker`` builds one worker, ``inputs`` names the nodes it reads
    (none: the graph's source)."""

    name: str
    worker: Callable[[], BaseStageWorker]
    inputs: tuple[str, ...] = ()
    workers: int = 1
    queue_size: int = 4


@dataclass(frozen=True)
class Join:
    """Matches the messages of ``inputs`` by the graph's key; ``merge`` makes the one message it
    sends on."""

    name: str
    inputs: tuple[str, ...]
    merge: Merge
    sync: Sync = field(default_factory=Sync.exact)
    capacity: int = 64


@dataclass
class NodeStats:
    processed: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass
class GraphResult:
    #: What left the graph's sinks (nodes or joins nothing reads), by sink.
    outputs: dict[str, list[StageMessage[Any]]]
    nodes: dict[str, NodeStats]
    joins: dict[str, JoinStats]


def _check(nodes: Sequence[Node], joins: Sequence[Join]) -> dict[str, tuple[str, ...]]:
    """Every element's inputs, checked: unique names, known inputs, one source, no cycle."""
    inputs: dict[str, tuple[str, ...]] = {}
    elements: list[Node | Join] = [*nodes, *joins]
    for element in elements:
        if element.name in inputs:
            raise ValueError(f"graph element {element.name!r} defined twice")
        inputs[element.name] = element.inputs
    for name, ins in inputs.items():
        for upstream in ins:
            if upstream not in inputs:
                raise ValueError(f"{name!r} reads {upstream!r}, which is not in the graph")
    if len([n for n in nodes if not n.inputs]) != 1 or any(len(j.inputs) < 2 for j in joins):
        raise ValueError("a graph needs one source node (a node without inputs), and joins of two inputs or more")
    for node in nodes:
        if len(node.inputs) > 1:
            raise ValueError(f"node {node.name!r} reads several inputs: put a join before it")
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"the graph has a cycle through {name!r}")
        if name not in seen:
            seen.add(name)
            for upstream in inputs[name]:
                visit(upstream, (*path, name))

    for name in inputs:
        visit(name, ())
    return inputs


class _JoinState:
    """One join's :class:`~async_pipeline.sync.Synchronizer` and its ``merge``, shared by both runners."""

    def __init__(self, join: Join, stats: JoinStats, key: KeyFn) -> None:
        self.join, self.key = join, key
        self.sync: Synchronizer[StageMessage[Any]] = Synchronizer(join.inputs, join.sync, stats)

    @property
    def pending(self) -> dict[Any, dict[str, StageMessage[Any] | None]]:
        return self.sync.pending

    def offer(self, branch: str, item: StageMessage[Any] | Tombstone) -> list[tuple[Any, StageMessage[Any] | None, str]]:
        """Take one branch's answer; return the keys that go on now: (key, merged or None, how)."""
        if isinstance(item, Tombstone):
            return self._merged(self.sync.offer(branch, item.key, None))
        return self._merged(self.sync.offer(branch, self.key(item), item))

    def flush(self, ended: set[str] | None = None) -> list[tuple[Any, StageMessage[Any] | None, str]]:
        return self._merged(self.sync.flush(ended))

    def owing(self) -> set[str]:
        return self.sync.owing()

    def _merged(self, released: list[Release[StageMessage[Any]]]) -> list[tuple[Any, StageMessage[Any] | None, str]]:
        return [(r.key, None if r.how == "expired" else self.join.merge(r.key, r.answers), r.how) for r in released]


class GraphRunner:
    """Runs a graph of :class:`Node` and :class:`Join` on the event loop."""

    def __init__(self, nodes: Sequence[Node], joins: Sequence[Join] = (), *, key: KeyFn | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.inputs = _check(nodes, joins)
        self.nodes = {n.name: n for n in nodes}
        self.joins = {j.name: j for j in joins}
        self.key = key or (lambda m: m.item_id)
        self.readers: dict[str, list[str]] = {name: [] for name in self.inputs}
        for name, ins in self.inputs.items():
            for upstream in ins:
                self.readers[upstream].append(name)
        self.node_stats = {n: NodeStats() for n in self.nodes}
        self.join_stats = {j: JoinStats() for j in self.joins}
        self._executor = executor
        self._queues: dict[tuple[str, str], asyncio.Queue[Any]] = {}
        self.outputs: dict[str, list[StageMessage[Any]]] = {n: [] for n, r in self.readers.items() if not r}

    def _key(self, msg: StageMessage[Any]) -> Any:
        return self.key(msg)

    async def run(self, inputs: Iterable[StageMessage[Any]]) -> GraphResult:
        """Every input through the graph; returns what left its sinks and the counts."""
        executor = self._executor or ThreadPoolExecutor(sum(n.workers for n in self.nodes.values()) or 1)
        source = next(n for n in self.nodes.values() if not n.inputs)
        self._queues = {(up, name): asyncio.Queue(self._size(name)) for name, ins in self.inputs.items() for up in ins}
        self._queues[("", source.name)] = asyncio.Queue(self._size(source.name))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(source.name, inputs))
                for node in self.nodes.values():
                    tg.create_task(self._node(node, executor))
                for join in self.joins.values():
                    tg.create_task(self._join(join))
        finally:
            if self._executor is None:
                executor.shutdown(wait=False, cancel_futures=True)
        return GraphResult(self.outputs, self.node_stats, self.join_stats)

    def _size(self, name: str) -> int:
        return self.nodes[name].queue_size if name in self.nodes else self.joins[name].capacity

    async def _feed(self, source: str, inputs: Iterable[StageMessage[Any]]) -> None:
        queue = self._queues[("", source)]
        for msg in inputs:
            await queue.put(msg)
        await queue.put(_END)

    async def _send(self, name: str, item: Any) -> None:
        """To every reader of ``name`` (or to the graph's outputs, for a sink)."""
        readers = self.readers[name]
        if not readers:
            if isinstance(item, StageMessage):
                self.outputs[name].append(item)
            return
        for reader in readers:
            await self._queues[(name, reader)].put(item)

    async def _node(self, node: Node, executor: ThreadPoolExecutor) -> None:
        """A node's workers share its one input (a node reads one input; several are a join's job)."""
        inbox = self._queues[(node.inputs[0], node.name)] if node.inputs else self._queues[("", node.name)]
        ended = asyncio.Event()

        async def work() -> None:
            worker = node.worker()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, worker.setup)
            try:
                while not ended.is_set():
                    item = await inbox.get()
                    if item is _END:
                        ended.set()
                        await inbox.put(_END)  # the other workers see it too
                        return
                    await self._process(node, worker, item, executor)
            finally:
                worker.close()

        async with asyncio.TaskGroup() as tg:
            for _ in range(node.workers):
                tg.create_task(work())
        await self._send(node.name, _END)

    async def _process(self, node: Node, worker: BaseStageWorker, item: Any, executor: ThreadPoolExecutor) -> None:
        if isinstance(item, Tombstone):  # not ours to answer: passed on, so joins below hear it
            await self._send(node.name, item)
            return
        key = self._key(item)
        try:
            if is_async_worker(worker):
                outputs = as_messages(await worker.process(item))  # type: ignore[misc]
            else:
                loop = asyncio.get_running_loop()
                result: Any = await loop.run_in_executor(executor, worker.process, item)
                outputs = as_messages(result)
        except Exception as exc:
            self.node_stats[node.name].failed += 1
            await self._send(node.name, Tombstone(key, node.name, f"failed: {exc}"))
            return
        self.node_stats[node.name].processed += 1
        if not outputs:
            self.node_stats[node.name].dropped += 1
            await self._send(node.name, Tombstone(key, node.name, "dropped"))
        for out in outputs:
            await self._send(node.name, out)

    async def _join(self, join: Join) -> None:
        state = _JoinState(join, self.join_stats[join.name], self.key)
        open_branches = set(join.inputs)
        gets: dict[str, asyncio.Task[Any]] = {}
        try:
            while open_branches:
                # Full: read only the branches that owe a waiting key; the others wait (backpressure).
                wanted = open_branches & state.owing() if len(state.pending) >= join.capacity else open_branches
                for branch in wanted - set(gets):
                    gets[branch] = asyncio.ensure_future(self._queues[(branch, join.name)].get())
                done, _ = await asyncio.wait([gets[b] for b in wanted], return_when=asyncio.FIRST_COMPLETED)
                for branch in [b for b, task in gets.items() if task in done]:
                    item = gets.pop(branch).result()
                    if item is _END:
                        open_branches.discard(branch)
                        released = state.flush(set(join.inputs) - open_branches)
                    else:
                        released = state.offer(branch, item)
                    for _, merged, _how in released:
                        if merged is not None:
                            await self._send(join.name, merged)
            for _, merged, _how in state.flush():
                if merged is not None:
                    await self._send(join.name, merged)
        finally:
            for task in gets.values():
                task.cancel()
        await self._send(join.name, _END)


def run_sequential(nodes: Sequence[Node], joins: Sequence[Join], inputs: Iterable[StageMessage[Any]],
                   key: KeyFn | None = None) -> GraphResult:
    """The same graph without queues: each input through every node in order, each join deciding
    once all its branches have answered that input (the exact case: nothing arrives late here)."""
    runner = GraphRunner(nodes, joins, key=key)
    order = _topological(runner.inputs)
    workers = {name: runner.nodes[name].worker() for name in order if name in runner.nodes}
    for worker in workers.values():
        worker.setup()
    states = {name: _JoinState(j, runner.join_stats[name], runner.key) for name, j in runner.joins.items()}
    try:
        for msg in inputs:
            _one_input(runner, order, workers, states, msg)
    finally:
        for worker in workers.values():
            worker.close()
    for name, state in states.items():
        for _, merged, _ in state.flush():
            if merged is not None and not runner.readers[name]:
                runner.outputs[name].append(merged)
    return GraphResult(runner.outputs, runner.node_stats, runner.join_stats)


def _one_input(runner: GraphRunner, order: list[str], workers: dict[str, BaseStageWorker],
               states: dict[str, _JoinState], msg: StageMessage[Any]) -> None:
    produced: dict[str, list[StageMessage[Any] | Tombstone]] = {}
    for name in order:
        ins = runner.inputs[name]
        if name in states:
            released = [r for branch in ins for item in produced.get(branch, []) for r in states[name].offer(branch, item)]
            produced[name] = [m for _, m, _ in released if m is not None]
        else:
            incoming: list[StageMessage[Any] | Tombstone] = produced.get(ins[0], []) if ins else [msg]
            produced[name] = _run_node(runner, name, workers[name], incoming, runner.key)
        if not runner.readers[name]:
            runner.outputs[name] += [m for m in produced[name] if isinstance(m, StageMessage)]


def _run_node(runner: GraphRunner, name: str, worker: BaseStageWorker, items: list[StageMessage[Any] | Tombstone],
              key: KeyFn) -> list[StageMessage[Any] | Tombstone]:
    out: list[StageMessage[Any] | Tombstone] = []
    stats = runner.node_stats[name]
    for item in items:
        if isinstance(item, Tombstone):
            out.append(item)
            continue
        try:
            result = worker.process(item)
            if is_async_worker(worker):
                result = asyncio.run(result)  # type: ignore[arg-type]
            outputs = as_messages(result)  # type: ignore[arg-type]
        except Exception as exc:
            stats.failed += 1
            out.append(Tombstone(key(item), name, f"failed: {exc}"))
            continue
        stats.processed += 1
        if not outputs:
            stats.dropped += 1
            out.append(Tombstone(key(item), name, "dropped"))
        out.extend(outputs)
    return out


def _topological(inputs: dict[str, tuple[str, ...]]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for upstream in inputs[name]:
                visit(upstream)
            order.append(name)

    for name in inputs:
        visit(name)
    return order
