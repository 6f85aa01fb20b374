"""``--watch DIR``: a folder that keeps receiving videos (the NAS the cameras dump clips into).

The files already there are sources at once; then the OS tells us (inotify through ``watchfiles``)
of every file that appears or changes, recursively. Network filesystems (NFS, SMB, sshfs, ...) tell
nothing of what other machines write, so a folder on one is polled instead (``watch.force_polling``
overrides the choice). A file is mined once it is complete: its size and time stamp stayed the same
for ``watch.settle_s``. Names being written under a temporary name (``.part``, ``.tmp``, ...) are
skipped: the rename to the final name is an event like any other. Whether a file was mined before
is the registry's business (a restart skips what is done)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import Change, awatch

from ..config import WatchConfig
from ..store.files import is_inside
from .listing import Source, is_listed_video, source_for_path

log = logging.getLogger(__name__)
#: How often a polled folder is listed.
POLL_MS = 1000
#: Filesystems whose changes made by other machines raise no inotify event here.
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
                                 "beegfs", "afs", "davfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse",
                                 "fuse.glusterfs", "fuse.cephfs", "fuse.davfs2", "fuse.juicefs", "fuse.mountpoint-s3"})


def filesystem_type(path: Path, mounts: str) -> str | None:
    """The type of the filesystem holding ``path``, from a ``/proc/self/mounts`` text."""
    found: tuple[int, str | None] = (-1, None)
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and tabs in mount points are octal escapes there (\040).
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if path.is_relative_to(point) and len(point.parts) > found[0]:
            found = (len(point.parts), fields[2])
    return found[1]


def needs_polling(roots: list[Path], mounts_file: Path = Path("/proc/self/mounts")) -> bool:
    """Whether any of ``roots`` is on a network filesystem (False where mounts cannot be read)."""
    try:
        mounts = mounts_file.read_text()
    except OSError:
        return False
    return any(filesystem_type(root, mounts) in NETWORK_FILESYSTEMS for root in roots)


class FolderWatcher:
    """New complete videos under ``roots`` as :class:`~video_miner.inputs.Source`\\ s, for as long
    as the run goes (until :meth:`stop`)."""

    def __init__(self, roots: list[Path], config: WatchConfig, first_order: int, stride: int) -> None:
        self.roots = [r.expanduser().resolve() for r in roots]
        self.config = config
        self.first_order, self.stride = first_order, stride
        self._stop = asyncio.Event()
        self._ready: asyncio.Queue[Source] = asyncio.Queue()
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._sent: set[Path] = set()

    def wanted(self, path: Path) -> bool:
        if any(path.name.endswith(s) for s in self.config.temporary_suffixes):
            return False
        root = next((r for r in self.roots if path.is_relative_to(r)), None)
        if root is None or not is_listed_video(path, root):
            return False
        # Anyone who can drop a file here can drop a link to /etc/passwd or another folder's videos.
        return self.config.follow_symlinks or is_inside(path, root)

    def _order(self, path: Path) -> int:
        for k, root in enumerate(self.roots):
            if path.is_relative_to(root):
                return self.first_order + k * self.stride
        return self.first_order

    def stop(self) -> None:
        self._stop.set()

    async def sources(self) -> AsyncIterator[Source]:
        """Every complete video, the ones already there first (sorted), then as they come."""
        for root in self.roots:
            if not root.is_dir():
                raise NotADirectoryError(f"--watch {root}: not a folder")
        watcher = asyncio.ensure_future(self._watch())
        try:
            settle_ns = self.config.settle_s * 1e9
            for root in self.roots:
                for path in sorted(p for p in root.rglob("*") if p.is_file() and self.wanted(p)):
                    # Untouched for settle_s already: complete. Else it may be being written now.
                    young = time.time_ns() - path.stat().st_mtime_ns < settle_ns
                    self._schedule(path, delay=self.config.settle_s if young else 0.0)
            while not self._stop.is_set():
                got = asyncio.ensure_future(self._ready.get())
                stopped = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait({got, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not got.done():
                    got.cancel()
                    break
                yield got.result()
        finally:
            self._stop.set()
            for timer in self._timers.values():
                timer.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        def wanted(change: Change, path: str) -> bool:
            return change != Change.deleted and (self.wanted(Path(path)) or Path(path).is_dir())

        polling = self.config.force_polling if self.config.force_polling is not None else needs_polling(self.roots)
        if polling:
            log.info("watch: polling %s (a network filesystem: no file events from other machines)",
                     ", ".join(map(str, self.roots)))
        async for changes in awatch(*self.roots, watch_filter=wanted, stop_event=self._stop, recursive=True,
                                    force_polling=polling, poll_delay_ms=POLL_MS):
            for _, name in sorted(changes, key=lambda c: c[1]):
                path = Path(name)
                if path.is_dir():
                    # A folder moved in says only that it came, not what it holds; files written
                    # into a new folder before the OS watched it said nothing either.
                    for inner in sorted(p for p in path.rglob("*") if p.is_file() and self.wanted(p)):
                        self._schedule(inner, delay=self.config.settle_s)
                else:
                    self._schedule(path, delay=self.config.settle_s)

    def _schedule(self, path: Path, delay: float) -> None:
        """Look at ``path`` again in ``delay`` seconds; a change meanwhile starts the wait over."""
        if path in self._sent:
            return
        if (old := self._timers.pop(path, None)) is not None:
            old.cancel()
        try:
            stat = path.stat()
        except OSError:
            return  # gone again (a temporary file renamed away)
        loop = asyncio.get_running_loop()
        self._timers[path] = loop.call_later(max(delay, 0.0), self._settled, path, (stat.st_size, stat.st_mtime_ns), delay)

    def _settled(self, path: Path, seen: tuple[int, int], delay: float) -> None:
        self._timers.pop(path, None)
        try:
            stat = path.stat()
        except OSError:
            return
        now = (stat.st_size, stat.st_mtime_ns)
        if now != seen or stat.st_size == 0:
            # Still being written: wait for it to settle.
            self._schedule(path, max(delay, self.config.settle_s, 0.05))
            return
        self._sent.add(path)
        log.info("watch: %s is complete", path)
        self._ready.put_nowait(source_for_path(path, self._order(path)))
