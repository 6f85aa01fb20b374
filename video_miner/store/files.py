"""Crash-safe and link-safe file writes: write under a temporary name in the same folder, then
rename (a rename replaces a symbolic link at the destination, it never writes through it)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UnsafePath


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=sort_keys))


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no copy of the bytes), or a copy where links are not possible (another filesystem)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a fully written folder into place; a crash leaves either the old or the new one
    (``final.old`` is cleaned up by the next call)."""
    old = final.with_name(final.name + ".old")
    remove_tree(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(staging, final)
    remove_tree(old)


def recover_dir(final: Path) -> None:
    """After a crash between the two renames of :func:`replace_dir`, put the old folder back."""
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():
        os.replace(old, final)


def free_gb(path: Path) -> float:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free / 1e9


def remove_tree(path: Path) -> None:
    """Remove a folder (or file) of ours; a symbolic link in its place is removed itself, never
    followed (``shutil.rmtree`` refuses links, and ignoring that would leave one to write through)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (an :class:`UnsafePath` naming it)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link: video-miner writes nothing through links in its output "
                             "folder", "remove the link, or give another --output") from exc
        raise


def refuse_links(paths: list[Path]) -> None:
    """An :class:`UnsafePath` for the first of ``paths`` that is a symbolic link."""
    for path in paths:
        if path.is_symlink():
            raise UnsafePath(f"{path} is a symbolic link: video-miner writes nothing through links in its output "
                             "folder", "remove the link, or give another --output")


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies inside ``folder``."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a library to write to (by name); renamed over ``path``
    once the block ends, removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
