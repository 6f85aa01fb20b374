from __future__ import annotations

from pathlib import Path
from typing import Any

from video_miner.config import MinerConfig, load_config
from video_miner.run.compose import mine
from video_miner.run.request import MiningReport, RunRequest

from .conftest import MODEL


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


def dataset_files(dataset: Path) -> dict[str, bytes]:
    """Every image and label file of a dataset, by relative path."""
    return {p.relative_to(dataset).as_posix(): p.read_bytes()
            for sub in ("images", "labels") for p in sorted((dataset / sub).rglob("*")) if p.is_file()}
