"""Never lose work: kill -9 at any point, run the same command again, get the same dataset;
status and --retry-failed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import BOTTLE, CARS, MODEL, PERSON, ROOT, VIDEOS
from .helpers import dataset_files
from .http_server import serve


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "video_miner", *args]


def _rows(db: Path) -> dict[str, str]:
    """input -> state, read while the CLI may be writing."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return dict(conn.execute("SELECT input, state FROM videos").fetchall())
    except sqlite3.Error:
        return {}


def _manifest(out: Path) -> list[dict]:
    return sorted((json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()),
                  key=lambda r: r["frame"])


@pytest.fixture(scope="module")
def served():
    files = {"/v/bottle.mp4": BOTTLE, "/v/cars.mp4": CARS, "/v/again.mkv": VIDEOS / "again.mkv"}
    with serve(files) as (base, state):
        yield base, state


def _args(base: str, out: Path) -> list[str]:
    return ["run", f"{base}/v/bottle.mp4", f"{base}/v/cars.mp4", f"{base}/v/again.mkv", str(PERSON),
            str(VIDEOS / "book.mkv"), "--model", str(MODEL), "--classes", "person", "-o", str(out), "-q"]


@pytest.fixture(scope="module")
def reference(served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base, _ = served
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = subprocess.run(_cli(_args(base, out)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.timeout(400)
@pytest.mark.parametrize("kill_when", ["downloaded", "extracted", "filtered", "done"])
def test_kill_9_then_rerun_gives_the_same_dataset(served, reference: Path, tmp_path: Path, kill_when: str) -> None:
    base, state = served
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(_args(base, out)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    # Kill once some video has reached the kill state (or a later one: "filtered" lasts only until
    # collect runs) while other videos are still on their way.
    order = ["downloaded", "extracted", "filtered", "done"]
    target = order.index(kill_when)

    def reached() -> bool:
        states = list(_rows(out / "registry.sqlite").values())
        return any(st in order and order.index(st) >= target for st in states) and \
            any(st != "done" for st in states)

    while not reached():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    downloaded = [src.removeprefix(base) for src, st in _rows(out / "registry.sqlite").items()
                  if src.startswith(base) and st in ("downloaded", "extracted", "filtered", "done")]
    hits_at_kill = dict(state.hits)
    rerun = subprocess.run(_cli(_args(base, out)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert dataset_files(out / "dataset") == dataset_files(reference / "dataset")
    strip = ("source",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in _manifest(out)] == \
        [{k: v for k, v in r.items() if k not in strip} for r in _manifest(reference)]
    # No video was downloaded twice: the re-run asked nothing of the server for those it had.
    for route in downloaded:
        assert state.hits[route] == hits_at_kill[route], route


def test_a_whole_part_file_left_by_a_kill_is_downloaded_again(served, tmp_path: Path) -> None:
    """Killed after the last byte, before yt-dlp renamed its .part: resuming asks the server for a
    range past the end (416); the stage starts that download over instead of failing the video."""
    from .helpers import run

    base, state = served
    url = f"{base}/v/cars.mp4"
    first = run([url], tmp_path / "first", **{"filter.classes": ["car"]})
    assert not first.failures
    (done,) = (tmp_path / "first" / "work" / "videos").iterdir()
    part = tmp_path / "again" / "work" / "videos" / done.name / "cars.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(CARS.read_bytes())
    hits = state.hits["/v/cars.mp4"]
    again = run([url], tmp_path / "again", **{"filter.classes": ["car"]})
    assert not again.failures, [f.line() for f in again.failures]
    assert (part.parent / "cars.mp4").read_bytes() == CARS.read_bytes() and not part.exists()
    assert state.hits["/v/cars.mp4"] > hits + 1  # the refused resume, then the whole file


def test_status_and_retry_failed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    broken = tmp_path / "later.mp4"
    broken.write_text("not yet a video")
    common = ["--model", str(MODEL), "-o", str(out), "-q"]
    first = subprocess.run(_cli(["run", str(VIDEOS / "again.mkv"), str(broken), *common]), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 1
    status = subprocess.run(_cli(["status", "-o", str(out)]), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "corrupt_media" in status.stdout and "later.mp4" in status.stdout
    assert "skip 1 done" in status.stdout and "retry those 1" in status.stdout
    # The user fixes the input; --retry-failed runs only that one.
    broken.write_bytes((VIDEOS / "book.mkv").read_bytes())
    retry = subprocess.run(_cli(["run", str(VIDEOS / "again.mkv"), str(broken), "--retry-failed", *common]),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "videos 2/2 done (1 already done before)" in retry.stdout


def test_changed_settings_are_refused_without_fresh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(out), "-q"]
    assert subprocess.run(_cli(args), cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    changed = subprocess.run(_cli([*args, "--conf", "0.7"]), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2
    assert "--fresh" in changed.stdout + changed.stderr
    fresh = subprocess.run(_cli([*args, "--conf", "0.7", "--fresh"]), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
