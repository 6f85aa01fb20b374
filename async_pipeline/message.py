"""The unit of work that flows between stages: paths and small metadata, never pixels."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

P = TypeVar("P")


@dataclass(frozen=True)
class StageMessage(Generic[P]):
    """One item (or one fan-out part of it) on its way through the pipeline.

    Messages are immutable so that a retry re-runs a stage on exactly the message it failed on;
    stages derive the next message with :meth:`evolve`. ``payload`` is the application's own typed
    record of the item (the engine never looks inside it); ``metadata`` is for loose extras.
    """

    item_id: str
    input_path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    attempt: int = 1
    payload: P | None = None

    def evolve(self, **changes: Any) -> StageMessage[P]:
        """A copy with ``changes`` applied; ``metadata`` is merged, not replaced."""
        if "metadata" in changes:
            changes["metadata"] = {**self.metadata, **changes["metadata"]}
        changes.setdefault("timestamp", time.time())
        changes.setdefault("attempt", 1)
        return replace(self, **changes)

    @property
    def item(self) -> P:
        """The payload, which the application always sets."""
        if self.payload is None:
            raise ValueError(f"message {self.item_id!r} carries no payload")
        return self.payload
