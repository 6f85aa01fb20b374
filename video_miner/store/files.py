"""Every file video-miner writes, and every file of its own it reads back, goes through here.

Writes stay inside a ``root`` (the output folder, an export's ``--dest``, the textfile's folder):
every folder between the root and the file is a real folder (made here if missing, never a
symbolic link), the file itself is created under a temporary name in its folder and renamed over
the target (a crash leaves the old file or the new one, and a link at the target is replaced, its
own target never written), and anything at the target that is not a regular file or a link (a
FIFO, a socket, a device, a folder) is refused with one line. Appends, which cannot rename, refuse
a link. Files are created with the user's umask, like the
images beside them. Reads of files the output folder holds (records, manifests) refuse links and
non-regular files too, and are bounded in size.

Everything refused is an :class:`~video_miner.errors.UnsafePath`: one line and exit 2.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ..errors import UnsafePath

_LINK_HINT = "remove the link, or give another --output"


def _refuse_link(path: Path) -> UnsafePath:
    return UnsafePath(f"{path} is a symbolic link: video-miner writes nothing through links in its folders",
                      _LINK_HINT)


def _refuse_kind(path: Path, mode: int) -> UnsafePath:
    what = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode) else
            "not a regular file")
    return UnsafePath(f"{path} is {what}, not a regular file: video-miner writes and reads only regular files",
                      "remove it or give another path")


def file_mode() -> int:
    """Permissions for a new file as the user's umask says (``open`` would give them; ``mkstemp``
    gives 0600). Read from /proc where it is (no race with other threads), else set and restored."""
    with suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def make_dirs(folder: Path, root: Path) -> Path:
    """``folder`` and every folder from ``root`` down to it, made if missing; a link or a
    non-folder anywhere below ``root`` is refused. ``root`` itself is the user's to choose."""
    try:
        rel = folder.relative_to(root)
    except ValueError:
        raise UnsafePath(f"{folder} is not inside {root}", "a bug: run again with --debug and report it") from None
    root.mkdir(parents=True, exist_ok=True)
    current = root
    for part in rel.parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"{folder}: a path with {part!r} in it", "give a plain folder name")
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current)
                continue
            except FileExistsError:  # made meanwhile by another thread
                st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise _refuse_link(current)
        if not stat.S_ISDIR(st.st_mode):
            raise _refuse_kind(current, st.st_mode)
    return folder


def check_target(path: Path, replaced: bool = False) -> bool:
    """Whether a regular file is at ``path`` (False: nothing is, or a link a rename will replace
    when ``replaced``); a link otherwise, or anything else, is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        if replaced:
            return False
        raise _refuse_link(path)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse_kind(path, st.st_mode)
    return True


@contextmanager
def writing(path: Path, root: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """An open file for ``path`` (under ``root``): written under a temporary name, renamed into
    place when the block ends, removed if it fails."""
    make_dirs(path.parent, root)
    check_target(path, replaced=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, root: Path) -> None:
    with writing(path, root, binary=True) as fh:
        fh.write(data)


def write_text(path: Path, text: str, root: Path) -> None:
    with writing(path, root) as fh:
        fh.write(text)


def write_json(path: Path, obj: Any, root: Path, sort_keys: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=sort_keys), root)


@contextmanager
def target(path: Path, root: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a library that writes by name (pstats); renamed over
    ``path`` once the block ends, removed if it fails."""
    make_dirs(path.parent, root)
    check_target(path, replaced=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def place(src: Path, dst: Path, root: Path) -> None:
    """``src`` (a file of ours) at ``dst``: a hard link (no copy of the bytes) or, across
    filesystems, a copy; a regular file already there is replaced, anything else refused."""
    make_dirs(dst.parent, root)
    if check_target(dst, replaced=True) and os.path.samefile(src, dst):
        return
    source = os.lstat(src)
    if not stat.S_ISREG(source.st_mode):
        raise _refuse_link(src) if stat.S_ISLNK(source.st_mode) else _refuse_kind(src, source.st_mode)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError:
            _copy_nofollow(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_nofollow(src: Path, dst: Path) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            while chunk := os.read(fin, 1 << 20):
                os.write(fout, chunk)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def write_new(path: Path, data: bytes) -> None:
    """A new file in a folder this run made (a sampled frame): created only if nothing is there,
    never through a link (the folder was checked when it was made)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def move(src: Path, dst: Path, root: Path) -> None:
    """Rename a file of ours to ``dst`` (under ``root``), never over a link or a non-regular file."""
    make_dirs(dst.parent, root)
    check_target(dst, replaced=True)
    os.replace(src, dst)


def append_line(path: Path, line: str, root: Path) -> None:
    """One line at the end of an append-only record (the caller holds what orders the appends)."""
    make_dirs(path.parent, root)
    check_target(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse_kind(path, st.st_mode)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """A file of the output folder, read without following a link and refusing anything larger than
    ``max_bytes`` (an edited or planted file is untrusted input)."""
    fd = _open_regular(path)
    try:
        st = os.fstat(fd)
        if st.st_size > max_bytes:
            raise UnsafePath(f"{path} is {st.st_size} bytes, more than the {max_bytes} a file of this kind holds",
                             "it is not one video-miner wrote: remove it")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse_link(path) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _refuse_kind(path, st.st_mode)
    return fd


def iter_lines(path: Path, max_line: int) -> Iterator[str]:
    """The lines of a file of ours, one at a time (a manifest of a million frames is never held
    whole); a line longer than ``max_line`` is skipped, never read into memory whole."""
    with os.fdopen(_open_regular(path), "r", encoding="utf-8", errors="replace", newline="\n") as fh:
        while line := fh.readline(max_line):
            if not line.endswith("\n") and len(line) == max_line:
                while (rest := fh.readline(max_line)) and not rest.endswith("\n"):
                    pass  # the rest of an overlong line
                continue
            yield line.rstrip("\n")


def read_json(path: Path, max_bytes: int = 1 << 30) -> Any:
    return json.loads(read_bytes(path, max_bytes))


def read_records(path: Path, max_bytes: int = 1 << 30) -> tuple[list[Any], list[str]]:
    """The JSON lines of an append-only record, and what was wrong with it: a torn last line (a
    crash mid-append) or a damaged line is left out and said, never a reason to stop."""
    if not check_target(path):
        return [], []
    text = read_bytes(path, max_bytes).decode("utf-8", errors="replace")
    records, problems = [], []
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            last = k == len(lines) - 1
            problems.append(f"{path}: line {k + 1} is {'torn (a crash mid-write)' if last else 'damaged'}: left out")
    return records, problems


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
            raise _refuse_link(path) from exc
        raise


def refuse_links(paths: list[Path]) -> None:
    """An :class:`UnsafePath` for the first of ``paths`` that is a symbolic link."""
    for path in paths:
        if path.is_symlink():
            raise _refuse_link(path)


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies inside ``folder``."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def contained(relative: str, folder: Path) -> Path | None:
    """``folder / relative`` when ``relative`` (read from a manifest, the registry, a record) is a
    plain relative path that stays inside ``folder`` with links resolved; None otherwise."""
    parts = relative.replace("\\", "/").split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in relative:
        return None
    path = folder.joinpath(*parts)
    return path if is_inside(path, folder) else None
