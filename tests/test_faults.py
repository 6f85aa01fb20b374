"""Faults around a run: a second run on the same folder, a full disk (a real small tmpfs, and an
injected ENOSPC at each write site), a damaged registry and its repair, a read-only filesystem.
Each checks the line printed, the exit code, and that a re-run gives the identical dataset."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from video_miner.errors import DiskFull, environment_error
from video_miner.store.registry import Registry

from .conftest import MODEL, ROOT, VIDEOS
from .helpers import cli_args, cli_here, dataset_files, done_videos, manifest, run, wait_for, without_source


@pytest.fixture(scope="module")
def small(bottle_head: Path) -> list[Path]:
    """Three short videos, two showing a person."""
    return [VIDEOS / "again.mkv", VIDEOS / "book.mkv", bottle_head]


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture(scope="module")
def reference(small: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    report = run([str(p) for p in small], out)
    assert not report.failures and report.export.kept > 0
    return out


def same_dataset(out: Path, reference: Path) -> None:
    assert dataset_files(out / "dataset") == dataset_files(reference / "dataset")
    assert without_source(manifest(out)) == without_source(manifest(reference))


@contextmanager
def tmpfs(path: Path, size: str, options: str = "") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{',' + options if options else ''}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the injected ENOSPC tests cover the "
                    "write sites")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ---- one run per output folder ---------------------------------------------------------------
@pytest.mark.timeout(300)
def test_a_second_run_on_the_same_folder_exits_2_naming_the_first(small: list[Path], reference: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", *map(str, small), "--model", str(MODEL), "-o", str(out), "-q"]
    # The first run also watches an empty folder: it goes on until the test stops it, however fast
    # it mines its inputs.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = subprocess.Popen(cli_args(*args, "--watch", str(inbox)), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (out / "registry.sqlite").exists(), "the first run's registry", alive=lambda: first.poll() is None)
    second = cli_here(*args)  # a lock is per open file: this process is another run as much as a child is
    assert first.poll() is None
    assert second.returncode == 2
    line = one_line_error(second)
    assert f"pid {first.pid}" in line and "in use by another video-miner run" in line and "video-miner run" in line
    # status works beside the run, read-only.
    status = cli_here("status", "-o", str(out))
    assert status.returncode == 0, status.stdout + status.stderr
    wait_for(lambda: done_videos(out) == len(small), "the first run's inputs mined", alive=lambda: first.poll() is None)
    first.send_signal(signal.SIGINT)
    assert first.wait(240) == 0, first.stdout.read() if first.stdout else ""
    same_dataset(out, reference)


@pytest.mark.timeout(300)
def test_kill_9_leaves_no_stale_lock(small: list[Path], reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", *map(str, small), "--model", str(MODEL), "-o", str(out), "-q"]
    first = subprocess.Popen(cli_args(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (out / "registry.sqlite").exists(), "the first run's registry", alive=lambda: first.poll() is None)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    again = cli_here(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    same_dataset(out, reference)


# ---- a full disk --------------------------------------------------------------------------------
@pytest.mark.timeout(400)
def test_a_really_full_disk_stops_with_one_line_and_a_rerun_finishes(small: list[Path], reference: Path,
                                                                     tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "300k") as disk:
        out = disk / "out"
        args = ["run", *map(str, small), "--model", str(MODEL), "-o", str(out), "-q"]
        config = tmp_path / "c.yaml"
        config.write_text("download:\n  min_free_gb: 0\n")
        full = cli_here(*args, "-c", str(config))
        assert full.returncode == 1, full.stdout + full.stderr
        line = one_line_error(full)
        assert "disk full" in line and "free there" in line and "run the same command again" in line
        assert str(disk) in line
        # Not the videos' fault: none is failed, so a plain re-run takes them all up again.
        reg = Registry(out / "registry.sqlite", readonly=True)
        assert not [r for r in reg.videos() if r.state == "failed"]
        reg.close()
        subprocess.run(["mount", "-o", "remount,size=300m", str(disk)], check=True)
        again = cli_here(*args, "-c", str(config))
        assert again.returncode == 0, again.stdout + again.stderr
        same_dataset(out, reference)


def _enospc(path: str = "x") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def _sqlite_full() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database or disk is full")


def _after(calls: int, error: Callable[[], BaseException], real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, until its ``calls``-th call, which raises ``error``."""
    count = [0]

    def patched(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] >= calls:
            raise error()
        return real(*args, **kwargs)

    return patched


def _ytdlp_enospc() -> BaseException:
    from yt_dlp.utils import DownloadError

    # What yt-dlp reports when its .part file cannot be written.
    return DownloadError("ERROR: unable to write data: [Errno 28] No space left on device")


#: site -> (module, class or "", attribute, error, on which call it strikes)
SITES: dict[str, tuple[str, str, str, Callable[[], BaseException], int]] = {
    "download": ("yt_dlp", "YoutubeDL", "extract_info", _ytdlp_enospc, 1),
    "extract": ("video_miner.media.writer", "FrameWriter", "keep", _enospc, 5),
    "filter": ("video_miner.stages.filter", "", "write_result", _enospc, 2),
    "collect": ("video_miner.store.registry", "Registry", "complete_video", _sqlite_full, 2),
    "registry": ("video_miner.store.registry", "Registry", "update", _sqlite_full, 4),
    "export": ("video_miner.dataset.writers", "", "place", _enospc, 3),
    "metrics": ("video_miner.observe.metrics_file", "", "write_json", _enospc, 1),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("site", sorted(SITES))
def test_disk_full_at_each_write_site(site: str, small: list[Path], reference: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC where each stage (and the export, registry, metrics) writes: one line naming the
    disk, videos left unfinished (never failed), the previous dataset intact, and a plain re-run
    gives the dataset an undisturbed run gives."""
    import importlib

    from .http_server import serve

    module, cls, attribute, error, call = SITES[site]
    owner: Any = importlib.import_module(module)
    if cls:
        owner = getattr(owner, cls)
    out = tmp_path / "out"
    with serve({"/v/bottle.mp4": small[-1]}) as (base, _):
        inputs = [str(p) for p in small]
        expected = reference
        if site == "download":  # a downloaded input: its own undisturbed run to compare with
            inputs[-1] = f"{base}/v/bottle.mp4"
            expected = tmp_path / "expected"
            run(inputs, expected)
        before = None
        if site == "export":  # a dataset already there, which a failed export must leave as it is
            run(inputs[:2], out)
            before = dataset_files(out / "dataset")
        monkeypatch.setattr(owner, attribute, _after(call, error, getattr(owner, attribute)))
        with pytest.raises(Exception) as raised:
            run(inputs, out)
        monkeypatch.undo()
        fault = environment_error(raised.value, out)
        assert isinstance(fault, DiskFull), repr(raised.value)
        message = str(fault)
        assert "\n" not in message and "disk full" in message and "free there" in message
        reg = Registry(out / "registry.sqlite", readonly=True)
        failed = [r.video_id for r in reg.videos() if r.state == "failed"]
        reg.close()
        assert not failed, failed
        if before is not None:
            assert dataset_files(out / "dataset") == before, "the previous dataset stays as it was"
            assert not (out / "dataset.staging").exists()
        again = run(inputs, out)
    assert not again.failures, [f.line() for f in again.failures]
    assert dataset_files(out / "dataset") == dataset_files(expected / "dataset")


# ---- a damaged registry -------------------------------------------------------------------------
def _damage(db: Path) -> None:
    """A torn write: garbage over a page in the middle of the file."""
    data = bytearray(db.read_bytes())
    assert len(data) > 4 * 4096
    data[2 * 4096:2 * 4096 + 3000] = os.urandom(3000)
    db.write_bytes(bytes(data))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage", ["torn", "lost"])
def test_a_damaged_registry_is_reported_and_repair_gives_the_same_dataset(small: list[Path], reference: Path,
                                                                          tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    args = ["run", *map(str, small), "--model", str(MODEL), "-o", str(out), "-q"]
    assert not run([str(p) for p in small], out).failures  # as the same command would (the CLI's defaults)
    before = dataset_files(out / "dataset")
    db = out / "registry.sqlite"
    # Checkpointed, so the damage is in the file SQLite reads.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "torn":
        _damage(db)
        damaged = db.read_bytes()
        for command in (args, ["status", "-o", str(out)]):
            proc = cli_here(*command)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            line = one_line_error(proc)
            assert "is damaged" in line and f"video-miner repair -o {out}" in line and "nothing was deleted" in line
        assert db.read_bytes() == damaged, "nothing is written to a damaged registry"
        debug = cli_here("--debug", *args)
        assert "Traceback" in debug.stdout + debug.stderr
    else:
        for suffix in ("", "-wal", "-shm"):
            (out / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    fixed = cli_here("repair", "-o", str(out))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "3 videos done" in fixed.stdout
    if damage == "torn":
        kept_aside = list(out.glob("registry.damaged-*/registry.sqlite"))
        assert kept_aside and kept_aside[0].read_bytes() == damaged
    again = cli_here(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(3 already done before)" in again.stdout
    assert dataset_files(out / "dataset") == before
    same_dataset(out, reference)


def test_repair_resumes_what_the_files_prove_and_reruns_the_rest(small: list[Path], reference: Path,
                                                                 tmp_path: Path) -> None:
    """A video whose extraction committed (frames.json) resumes from there after a repair."""
    out = tmp_path / "out"
    run([str(VIDEOS / "again.mkv")], out, **{"cleanup.frames": False})
    (out / "registry.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (out / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    # Pretend book.mkv was extracted when the registry was lost: its committed extraction is on disk.
    from video_miner.config import ExtractConfig
    from video_miner.inputs.listing import expand_sources
    from video_miner.media.decode import extract_frames
    from video_miner.store.layout import write_index

    book = expand_sources([str(VIDEOS / "book.mkv")])[0]
    frames = out / "work" / "frames" / book.video_id
    write_index(frames, extract_frames(VIDEOS / "book.mkv", frames, book.video_id, ExtractConfig(), 1).index(book.video_id))
    proc = cli_here("repair", "-o", str(out))
    assert proc.returncode == 0 and "1 videos done" in proc.stdout and "1 extracted" in proc.stdout, proc.stdout
    report = run([str(p) for p in small], out)
    assert not report.failures and report.videos_skipped == 1
    same_dataset(out, reference)


# ---- environment faults never print a traceback -------------------------------------------------
def test_a_read_only_output_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", "ro") as ro:
        proc = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(ro / "out"), "-q")
        assert proc.returncode == 1
        assert "read-only filesystem" in one_line_error(proc)


def test_permission_denied_is_one_line(tmp_path: Path) -> None:
    import typer
    from rich.console import Console

    from video_miner.cli import user_errors

    console = Console(record=True, width=80)
    with pytest.raises(typer.Exit) as exit_info, user_errors(console, tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out"))
    text = console.export_text()
    assert exit_info.value.exit_code == 1 and "Traceback" not in text
    assert text.count("\n") == 1 and "permission denied" in text and "--output" in text


def test_a_missing_input_is_still_the_inputs_failure_not_a_fault(tmp_path: Path) -> None:
    """A missing input fails with its class and the run goes on: only the machine's faults stop it."""
    report = run([str(tmp_path / "nope.mp4"), str(VIDEOS / "again.mkv")], tmp_path / "out")
    assert [f.kind for f in report.failures] == ["not_found"]
    assert report.videos_done == 1
