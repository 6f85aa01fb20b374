"""Inputs with byte-identical content (one file under two names, in two folders, listed twice under
different URLs) are decoded once per run: the later ones take the first one's frames.

Decoding is deterministic, so the frames, their measures and the prefilters' decisions would be
the same: only the work is saved. Matching is exact: a cheap key (size, first and last MiB) finds
the candidates, a full byte comparison confirms them.
"""

from __future__ import annotations

import filecmp
import hashlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
_EDGE = 1 << 20


def content_key(path: Path) -> str:
    """Size and a hash of the first and last MiB: equal for identical files, rarely for others."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        digest.update(fh.read(_EDGE))
        if size > _EDGE:
            fh.seek(max(_EDGE, size - _EDGE))
            digest.update(fh.read(_EDGE))
    return f"{size}:{digest.hexdigest()}"


@dataclass
class _First(Generic[T]):
    path: Path
    result: Future[T | None] = field(default_factory=Future)


@dataclass
class SameContent(Generic[T]):
    """One run's table of contents seen: the first file with a content does the work, later ones
    wait for its result. Thread-safe; a waiter blocks only while the first one is still working."""

    _first: dict[str, _First[T]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, path: Path) -> tuple[str, Future[T | None] | None]:
        """(key, None) when ``path`` is the first of its content: do the work, then :meth:`settle`.
        Else (key, the first one's future result; None in it if the first one failed)."""
        key = content_key(path)
        with self._lock:
            first = self._first.get(key)
            if first is None:
                self._first[key] = _First(path)
                return key, None
        try:
            same = first.path == path or filecmp.cmp(first.path, path, shallow=False)
        except OSError:  # the first one's file is already cleaned up: nothing to compare with
            same = False
        return key, first.result if same else None

    def settle(self, key: str, path: Path, result: T | None) -> None:
        """The first one's result (None: failed, later files do their own work)."""
        with self._lock:
            first = self._first.get(key)
        if first is not None and first.path == path and not first.result.done():
            first.result.set_result(result)
