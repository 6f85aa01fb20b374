"""Synchronizers: when a key (a frame's time, an item id) answered by several branches can go on.

* ``exact``: a key goes on when every branch has answered it (an answer of None says the branch
  dropped, filtered or failed it, so nothing waits forever for it).
* ``realtime(tolerance, wait_all)``: a key goes on when every branch answered it, or once some
  branch has answered a key newer by more than ``tolerance``: with what it has (``wait_all=False``:
  *partial*) or not at all (``wait_all=True``: *expired*, as is a key some branch dropped), counted
  either way.

A :class:`Synchronizer` is plain state (no threads, no loop): the graph runner's joins use it on
the event loop, and a caller joining futures from several threads holds a lock around it. Every
key is released at most once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .distribution import Distribution

T = TypeVar("T")


@dataclass(frozen=True)
class Sync:
    """How a join decides a key can go on (see the module's docstring)."""

    kind: str = "exact"
    tolerance: float = 0.0
    wait_all: bool = False

    @classmethod
    def exact(cls) -> Sync:
        return cls("exact")

    @classmethod
    def realtime(cls, tolerance: float, wait_all: bool = False) -> Sync:
        return cls("realtime", tolerance, wait_all)


@dataclass
class JoinStats:
    waiting: int = 0
    matched: int = 0
    partial: int = 0
    expired: int = 0
    wait: Distribution = field(default_factory=Distribution)

    def as_dict(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "matched": self.matched, "partial": self.partial, "expired": self.expired,
                "wait_p50_s": round(self.wait.quantile(0.5), 4), "wait_p95_s": round(self.wait.quantile(0.95), 4)}


@dataclass(frozen=True)
class Release(Generic[T]):
    """A key going on: every branch's answer (None where it dropped or failed the key, or did not
    answer in time), and how: ``matched`` (all answered), ``partial`` or ``expired``."""

    key: Any
    answers: dict[str, T | None]
    how: str


class Synchronizer(Generic[T]):
    """The pending keys of one join over ``branches`` and its decisions."""

    def __init__(self, branches: Sequence[str], sync: Sync, stats: JoinStats | None = None) -> None:
        self.branches = tuple(branches)
        self.sync = sync
        self.stats = stats if stats is not None else JoinStats()
        self.pending: dict[Any, dict[str, T | None]] = {}
        self.first_seen: dict[Any, float] = {}
        self.done: set[Any] = set()
        self.newest: dict[str, Any] = {}

    def offer(self, branch: str, key: Any, answer: T | None) -> list[Release[T]]:
        """Take ``branch``'s answer to ``key`` (None: it will not answer); return what goes on now."""
        if key in self.done or self._late(key):  # an answer after its key went on: ignored
            return []
        answers = self.pending.setdefault(key, {})
        self.first_seen.setdefault(key, time.monotonic())
        answers[branch] = answer
        if answer is not None:
            self.newest[branch] = key if branch not in self.newest else max(self.newest[branch], key)
        ready = []
        if len(answers) == len(self.branches):
            ready.append(self._release(key, "matched" if all(a is not None for a in answers.values()) else self.incomplete))
        if self.sync.kind == "realtime":
            ready += self._expire()
        self.stats.waiting = len(self.pending)
        return ready

    @property
    def incomplete(self) -> str:
        """How a key goes on without some branch's answer: dropped (realtime ``wait_all``) or not."""
        return "expired" if self.sync.kind == "realtime" and self.sync.wait_all else "partial"

    def _horizon(self) -> Any:
        return max(self.newest.values()) - self.sync.tolerance if self.newest else None

    def _late(self, key: Any) -> bool:
        """Realtime: a key older than the horizon already went on (or never will)."""
        horizon = self._horizon() if self.sync.kind == "realtime" else None
        return horizon is not None and key < horizon and key not in self.pending

    def _expire(self) -> list[Release[T]]:
        horizon = self._horizon()
        if horizon is None:
            return []
        late = sorted(k for k in self.pending if k < horizon)
        return [self._release(k, self.incomplete) for k in late]

    def _release(self, key: Any, how: str) -> Release[T]:
        answers = self.pending.pop(key)
        self.stats.wait.add(time.monotonic() - self.first_seen.pop(key))
        if self.sync.kind == "exact":  # realtime keys past the horizon are known late by their time
            self.done.add(key)
        setattr(self.stats, how, getattr(self.stats, how) + 1)
        return Release(key, {name: answers.get(name) for name in self.branches}, how)

    def flush(self, ended: set[str] | None = None) -> list[Release[T]]:
        """The keys that can no longer be answered in full: those only ``ended`` branches owe (all
        waiting keys when None, at the end of every input); they go on with what they have (or not)."""
        how = self.incomplete
        stuck = [key for key, answers in self.pending.items()
                 if ended is None or all(name in answers or name in ended for name in self.branches)]
        out = [self._release(key, how) for key in stuck]
        self.stats.waiting = len(self.pending)
        return out

    def owing(self) -> set[str]:
        """Branches that still owe an answer to a waiting key."""
        return {name for answers in self.pending.values() for name in self.branches if name not in answers}
