"""Never lose work: kill -9 at any point, run the same command again, get the same dataset;
status and --retry-failed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from .conftest import CARS, MODEL, PERSON, ROOT, VIDEOS
from .helpers import cli_args, cli_here, dataset_files, manifest, run, wait_for, without_source
from .http_server import serve


def _states(db: Path) -> dict[str, str]:
    """input -> state, read while the CLI may be writing."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return dict(conn.execute("SELECT input, state FROM videos").fetchall())
    except sqlite3.Error:
        return {}


@pytest.fixture(scope="module")
def person_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The person video's first 20 s (its packets copied): the longest input here, on its way
    while others are done."""
    from scripts.media import head

    return head(PERSON, tmp_path_factory.mktemp("person") / "person-20s.mp4", 20)


@pytest.fixture(scope="module")
def served(bottle_head: Path):
    files = {"/v/bottle.mp4": bottle_head, "/v/cars.mp4": CARS, "/v/again.mkv": VIDEOS / "again.mkv"}
    with serve(files) as (base, state):
        yield base, state


def _inputs(base: str, person_head: Path) -> list[str]:
    # The person clip is the longest: others are still on their way when one reaches a state.
    return [f"{base}/v/bottle.mp4", f"{base}/v/again.mkv", str(person_head), str(VIDEOS / "book.mkv")]


@pytest.fixture(scope="module")
def reference(served, person_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base, _ = served
    out = tmp_path_factory.mktemp("ref") / "out"
    report = run(_inputs(base, person_head), out)
    assert not report.failures, [f.line() for f in report.failures]
    return out


@pytest.mark.timeout(400)
# (a kill once a video is done while others are not is the "filtered" case's too: collect is quick)
@pytest.mark.parametrize("kill_when", ["downloaded", "extracted", "filtered"])
def test_kill_9_then_rerun_gives_the_same_dataset(served, person_head: Path, reference: Path, tmp_path: Path,
                                                  kill_when: str) -> None:
    base, state = served
    out = tmp_path / "out"
    inputs = _inputs(base, person_head)
    proc = subprocess.Popen(cli_args("run", *inputs, "--model", str(MODEL), "--classes", "person", "-o", str(out),
                                     "-q"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once some video has reached the kill state (or a later one: "filtered" lasts only until
    # collect runs) while other videos are still on their way.
    order = ["downloaded", "extracted", "filtered", "done"]
    target = order.index(kill_when)

    def reached() -> bool:
        states = list(_states(out / "registry.sqlite").values())
        return any(st in order and order.index(st) >= target for st in states) and \
            any(st != "done" for st in states)

    try:
        wait_for(reached, f"a video {kill_when} while others are not done", timeout=240,
                 alive=lambda: proc.poll() is None)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    downloaded = [src.removeprefix(base) for src, st in _states(out / "registry.sqlite").items()
                  if src.startswith(base) and st in ("downloaded", "extracted", "filtered", "done")]
    hits_at_kill = dict(state.hits)
    rerun = run(inputs, out)  # the same command again (here in this process)
    assert not rerun.failures, [f.line() for f in rerun.failures]
    assert dataset_files(out / "dataset") == dataset_files(reference / "dataset")
    assert without_source(manifest(out)) == without_source(manifest(reference))
    # No video was downloaded twice: the re-run asked nothing of the server for those it had.
    for route in downloaded:
        assert state.hits[route] == hits_at_kill[route], route


def test_a_whole_part_file_left_by_a_kill_is_downloaded_again(served, tmp_path: Path) -> None:
    """Killed after the last byte, before yt-dlp renamed its .part: resuming asks the server for a
    range past the end (416); the stage starts that download over instead of failing the video."""
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
    inputs = [str(VIDEOS / "again.mkv"), str(broken)]
    first = run(inputs, out)
    assert [f.kind for f in first.failures] == ["corrupt_media"]
    status = cli_here("status", "-o", str(out))
    assert status.returncode == 0, status.stderr
    assert "corrupt_media" in status.stdout and "later.mp4" in status.stdout
    assert "skip 1 done" in status.stdout and "retry those 1" in status.stdout
    # The user fixes the input; --retry-failed runs only that one.
    broken.write_bytes((VIDEOS / "book.mkv").read_bytes())
    retry = cli_here("run", *inputs, "--retry-failed", "--model", str(MODEL), "-o", str(out), "-q")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "videos 2/2 done (1 already done before)" in retry.stdout


def test_changed_settings_are_refused_without_fresh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(out), "-q"]
    assert not run([str(VIDEOS / "again.mkv")], out).failures
    changed = cli_here(*args, "--conf", "0.7")
    assert changed.returncode == 2
    # It names what changed, from what to what.
    assert "--fresh" in changed.stdout and "filter.conf 0.4 -> 0.7" in changed.stdout, changed.stdout
    # What only the export reads changes without --fresh, and without detecting anything again.
    config = tmp_path / "export-only.yaml"
    config.write_text("dedup:\n  threshold: 2\n  picture_similarity: 0.9\nselect:\n  budget: 1\n")
    again = cli_here(*args, "-c", str(config))
    assert again.returncode == 0, again.stdout
    assert "videos 1/1 done (1 already done before)" in again.stdout and "kept 1," in again.stdout, again.stdout
    # Embeddings are made with the detections: a folder mined without them says so.
    bare = tmp_path / "bare"
    assert not run([str(VIDEOS / "again.mkv")], bare, **{"dedup.semantic": False}).failures
    wants = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(bare), "-q")
    assert wants.returncode == 2 and "without the detector's embeddings" in wants.stdout, wants.stdout
    fresh = cli_here(*args, "--conf", "0.7", "--fresh")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
