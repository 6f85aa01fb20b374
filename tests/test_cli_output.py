"""A CLI that reads well in any terminal and log: report tables that fit 80 columns, log lines that
never wrap, progress inside a long video, and an install that prints no warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from rich.console import Console

from async_pipeline import StageMessage

from .conftest import MODEL, PERSON, ROOT, VIDEOS
from .helpers import cli_here


def cli(*args: str, columns: int, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "video_miner", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def logged_run(person_head: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A run with stdout a pipe (a log file), in a 40-column 'terminal'. Progress lines come every
    0.2 s and once more when the stages end, so there are some however fast the machine is."""
    out = tmp_path_factory.mktemp("cli") / "a-rather-long-output-folder-name-for-the-log-lines" / "out"
    proc = cli_here("run", str(person_head), str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(out),
                    "--progress-every", "0.2", columns=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_log_lines_never_wrap(logged_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, proc = logged_run
    lines = proc.stdout.splitlines()
    progress = [line for line in lines if line.startswith("download[")]
    assert progress, "a progress line every 0.2 s, and one at the end of the stages"
    assert "videos 2/2" in progress[-1], "the last line says where the stages ended"
    assert all("| videos " in line and "ETA" in line for line in progress), progress
    summary = [line for line in lines if line.startswith("done in")]
    assert len(summary) == 1 and "kept" in summary[0] and "left out" in summary[0] and "filtered out" in summary[0]
    assert any(line.startswith("dataset: ") and line.endswith("data.yaml)") for line in lines)
    # Every line is whole: none starts with a fragment of another.
    starts = {re.match(r"[A-Za-z]*", line).group() for line in lines if line}  # type: ignore[union-attr]
    assert starts <= {"download", "done", "dataset", "WARNING"}, lines


@pytest.mark.parametrize("columns", [80, 200])
def test_report_tables_fit_the_terminal_without_cutting(logged_run: tuple[Path, subprocess.CompletedProcess[str]],
                                                       columns: int) -> None:
    out, _ = logged_run
    proc = cli_here("report", "-o", str(out), columns=columns)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    tables = [line for line in proc.stdout.splitlines() if not line.startswith(("timeline:", "gallery:"))]
    assert max(map(len, tables)) <= columns
    for heading in ("workers", "p95 s", "queue peak", "download", "collect", "batch fill (mean)"):
        assert heading in proc.stdout, heading
    if columns == 200:  # wide: one row per stage, the headings side by side
        assert any("workers" in line and "queue peak" in line for line in tables)


def test_a_long_video_in_flight_shows_how_far_it_is() -> None:
    """The extract stage reports seconds into the video; the live display draws a bar and the ETA
    counts the part of the video already done."""

    from async_pipeline import StageSnapshot
    from video_miner.config import load_config
    from video_miner.observe.progress import done_equivalent, eta, render
    from video_miner.observe.view import RunProgress, RunView
    from video_miner.records import VideoItem
    from video_miner.stages.base import LocalStage
    from video_miner.stages.context import MiningContext, StageEnv
    from video_miner.stages.extract import ExtractStage
    from video_miner.store.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, {"output": tmp, "extract.fps": 0.2})
        registry = Registry(Path(tmp) / "registry.sqlite")
        ctx = MiningContext(StageEnv.of(config, Path(tmp)), registry)
        stage = LocalStage(ctx, ExtractStage(ctx.env))
        reports: list[tuple[str, float, float | None]] = []
        stage.progress_sink = lambda item, done, total: reports.append((item, done, total))
        registry.upsert_video("p", input=str(PERSON), normalized=str(PERSON), kind="local", order=0)
        stage.process(StageMessage("p", PERSON, payload=VideoItem("p", "local", str(PERSON), 0)))
        registry.close()
    assert len(reports) >= 20
    assert all(item == "p" and total is not None and 130 < total < 150 for item, _, total in reports)
    assert [done for _, done, _ in reports] == sorted(done for _, done, _ in reports) and reports[-1][1] > 130

    def stage_at(name: str, busy: int, items_out: int, avg: float, unit: str,
                 in_flight: dict[str, tuple[float, float | None]]) -> StageSnapshot:
        return StageSnapshot(name, workers=2, busy=busy, idle=2 - busy, queue_size=4, queue_depth=0, queue_high_water=0,
                             items_in=items_out + busy, items_out=items_out, dropped=0, failed=0, retries=0,
                             queue_dropped=0, busy_seconds=0.0, setup_seconds=0.0, avg_seconds=avg,
                             processed=items_out, progress_unit=unit, in_flight=in_flight)

    snapshot = {"download": stage_at("download", 0, 3, 0.1, "bytes", {}),
                "extract": stage_at("extract", 1, 1, 2.0, "s", {"long-video": (100.0, 400.0)})}

    class Runner:
        def snapshot(self) -> dict[str, StageSnapshot]:
            return snapshot

        def request_stop(self) -> None:
            return None

    progress = RunProgress(total=4, started_at=time.monotonic() - 30, finished=1)
    view = RunView(ctx.counters, registry, progress=progress, runners=[Runner()])
    console = Console(record=True, width=100)
    console.print(render(view))
    text = console.export_text()
    assert "long-video" in text and "100s/400s" in text and "━" in text
    # One video done, one a quarter into its second of four stages: 1 + (1 + 0.25) / 4.
    assert done_equivalent(progress, snapshot) == pytest.approx(1 + 1.25 / 4)
    assert eta(progress, snapshot).endswith("s")


def test_building_and_installing_prints_no_warnings(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                           str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = (proc.stdout + proc.stderr).lower()
    assert "deprecat" not in output and "warning: " not in output.replace("warning: location", ""), output
    assert list(tmp_path.glob("video_miner-*.whl"))
