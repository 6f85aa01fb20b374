"""What many tests need, in one place: a run of the product in this process or as the CLI, the
dataset's manifest and the registry's rows as the product's own typed records, loopback ports, and
waiting on a condition with a deadline instead of sleeping a guessed time."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from video_miner.config import MinerConfig, load_config
from video_miner.errors import MinerError
from video_miner.observe.metrics_file import MetricsFile, read_metrics
from video_miner.records import FrameRow, VideoRow
from video_miner.run.compose import mine
from video_miner.run.request import MiningReport, RunRequest
from video_miner.store.manifest import ManifestRecord, read_manifest
from video_miner.store.registry import Registry

from .conftest import MODEL, ROOT


def make_config(output: Path, **overrides: Any) -> MinerConfig:
    base: dict[str, Any] = {
        "output": str(output),
        "filter.model": str(MODEL),
        "filter.classes": ["person"],
        "filter.conf": 0.4,
        "download.socket_timeout": 3,
        "download.backoff_s": 0.05,
    }
    base.update(overrides)
    if base.get("models"):  # each model lists its own classes
        base.pop("filter.classes", None)
    return load_config(None, base)


def run(inputs: list[str], output: Path, engine: str = "async", **overrides: Any) -> MiningReport:
    fresh = overrides.pop("fresh", False)
    retry_failed = overrides.pop("retry_failed", False)
    jobs = overrides.pop("jobs", 1)
    return mine(RunRequest(inputs=inputs, config=make_config(output, **overrides), engine=engine,  # type: ignore[arg-type]
                           jobs=jobs, fresh=fresh, retry_failed=retry_failed))


def cli(*args: str, cwd: Path = ROOT, timeout: float = 300, columns: int | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``video-miner ARGS`` in a child process, as a user types it; stdout and stderr captured."""
    extra = {"COLUMNS": str(columns)} if columns is not None else {}
    # This checkout's code, whatever the folder it runs in.
    extra["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "video_miner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **extra, **(env or {})})


def cli_here(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``video-miner ARGS`` run in this process (typer's test runner), for what a child adds
    nothing to: exit codes, the lines printed, the files written. Seconds cheaper than :func:`cli`
    (no interpreter, torch or model start-up); what only a process shows (signals, kill -9, peak
    memory, library chatter on the real stdout) stays with :func:`cli`."""
    import gc

    from typer.testing import CliRunner

    from video_miner.cli import app

    saved = os.environ.get("VIDEO_MINER_DEBUG")
    freeze = gc.freeze
    gc.freeze = lambda: None  # the CLI freezes what it loaded; a test process goes on making objects
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)
    finally:
        gc.freeze = freeze
        if saved is None:
            os.environ.pop("VIDEO_MINER_DEBUG", None)
        else:
            os.environ["VIDEO_MINER_DEBUG"] = saved
    return subprocess.CompletedProcess(["video-miner", *args], result.exit_code, result.stdout, "")


def cli_args(*args: str) -> list[str]:
    """The command line of ``video-miner ARGS`` (for a child the test starts and stops itself)."""
    return [sys.executable, "-m", "video_miner", *args]


def dataset_files(dataset: Path) -> dict[str, bytes]:
    """Every image and label file of a dataset, by relative path."""
    return {p.relative_to(dataset).as_posix(): p.read_bytes()
            for sub in ("images", "labels") for p in sorted((dataset / sub).rglob("*")) if p.is_file()}


def metrics(output: Path) -> MetricsFile:
    """The run's metrics.json through the product's own reader."""
    return read_metrics(output / "metrics.json")


def manifest(output: Path) -> list[ManifestRecord]:
    """The dataset's manifest (jsonl or parquet), one typed row per sampled frame, in its order."""
    return read_manifest(output / "dataset")


def by_frame(rows: list[ManifestRecord]) -> dict[str, ManifestRecord]:
    return {r.frame: r for r in rows}


def kept(rows: list[ManifestRecord]) -> list[ManifestRecord]:
    return [r for r in rows if r.decision == "kept"]


def without_source(rows: list[ManifestRecord]) -> list[dict[str, Any]]:
    """Manifest rows as JSON without the input's name: runs of the same videos under other names
    (a URL and a path, another temporary folder) compare equal."""
    return [{k: v for k, v in r.as_json().items() if k != "source"} for r in rows]


def videos(output: Path) -> list[VideoRow]:
    """The registry's videos (read-only: works beside a run that is writing)."""
    registry = Registry(output / "registry.sqlite", readonly=True)
    try:
        return registry.videos()
    finally:
        registry.close()


def done_videos(output: Path) -> int:
    """Videos done so far, read beside a run that may be creating the registry (0 until it can be read)."""
    try:
        return sum(r.state == "done" for r in videos(output)) if (output / "registry.sqlite").exists() else 0
    except (sqlite3.Error, MinerError):
        return 0


def frames(output: Path) -> list[FrameRow]:
    """The registry's frames of done videos."""
    registry = Registry(output / "registry.sqlite", readonly=True)
    try:
        return registry.done_frames()
    finally:
        registry.close()


#: The labelling tools' interpreter (FiftyOne, label-studio-sdk, labelformat pin versions the miner's
#: own environment cannot share): ``bash scripts/setup.sh --test`` makes it.
TOOLS = Path(os.environ.get("VIDEO_MINER_TOOLS_PYTHON", ROOT / ".venv-tools" / "bin" / "python"))


def with_tool(script: str, *args: str) -> Any:
    """The JSON a script of tests/ prints when the tools' interpreter runs it with ``args``."""
    import json

    import pytest

    if not TOOLS.exists():
        pytest.skip(f"{TOOLS} is missing: `bash scripts/setup.sh --test` makes the labelling tools' venv "
                    "(FiftyOne, label-studio-sdk, labelformat)")
    done = subprocess.run([str(TOOLS), str(ROOT / "tests" / script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120, alive: Callable[[], bool] | None = None
             ) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds (a bound
    for a hung run, never a measure of speed), or as soon as ``alive()`` says the thing waited on is
    gone."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive is None or alive(), f"ended before {what}"
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.05)
