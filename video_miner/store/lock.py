"""One run per output folder: an exclusive OS lock (``flock``) on ``<output>/.video-miner.lock``,
held for the whole run. The kernel drops it when the process ends, kill -9 included, so a lock is
never left stale. The file says who holds it (pid, host, start time, command) for the error a
second run prints; it is only information, the lock is what counts.

Works wherever ``flock`` is honoured across processes: local filesystems, and NFSv4 on Linux
(which maps it to a byte-range lock on the server). On filesystems that keep locks local to one
host (some FUSE mounts, NFS without a lock manager) two hosts could both take it: see the README.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import MinerError
from ..redact import DEFAULT, Redactor
from .files import open_nofollow
from .layout import LOCK

LOCK_NAME = LOCK


class OutputBusy(MinerError):
    kind = "output_busy"


class OutputLock:
    def __init__(self, output: Path, command: list[str] | None = None, redactor: Redactor = DEFAULT) -> None:
        self.path = output / LOCK_NAME
        self.command = command if command is not None else sys.argv
        self.redactor = redactor
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(self._busy_message()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                # Camera URLs and signed links on the command line: their secrets are not kept here.
                "command": self.redactor.text(" ".join(self.command))}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            # Unlocked by closing; the file stays (removing it would race a run that just opened it).
            os.close(self._fd)
            self._fd = None

    def holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _busy_message(self) -> str:
        h = self.holder()
        who = (f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('started', '?')}: "
               f"{h.get('command', '?')}") if h else "another process"
        return (f"{self.path.parent} is in use by another video-miner run ({who}); wait for it to finish or stop it, "
                "or give another --output (status and report work meanwhile)")


class RecordLock:
    """Orders the appends to an append-only record (an export format's ``handed.jsonl``): a second
    export waits for the first and numbers its batch after it. ``flock`` on ``<folder>/.lock``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RecordLock:
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
