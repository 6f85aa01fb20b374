"""Before the stages: the request checked, the output folder and registry prepared, and the
sources registered, with those to run now picked out."""

from __future__ import annotations

import shutil

from ..config import MinerConfig
from ..errors import ConfigError
from ..inputs.listing import Source
from ..records import State
from ..store.files import recover_dir
from ..store.layout import OutputLayout
from ..store.registry import Registry
from .request import RunRequest


def check_request(request: RunRequest, sources: list[Source]) -> None:
    config = request.config
    open_ended = bool(request.watch) or any(s.kind == "live" for s in sources)
    if not sources and not request.watch:
        raise ConfigError("no inputs: give URLs, paths or a list file (one input per line), or --watch DIR")
    if open_ended and request.engine == "ray":
        raise ConfigError("live sources and --watch run on the local engine for now: drop --engine ray "
                          "(or mine the streams' recordings on the cluster)")
    if open_ended and request.engine == "sequential":
        raise ConfigError("live sources and --watch need the stage pipeline: drop --sequential")
    if request.duration_s is not None and request.duration_s <= 0:
        raise ConfigError(f"--duration must be positive, got {request.duration_s}")
    if config.export.manifest == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ConfigError("export.manifest: parquet needs pyarrow (pip install pyarrow), or use jsonl") from exc


def prepare_output(config: MinerConfig, fresh: bool) -> Registry:
    """The caller holds the output lock."""
    layout = OutputLayout(config.output_dir)
    output = layout.output
    if fresh:
        for name in ("work", "dataset", "dataset.staging", "dataset.old"):
            shutil.rmtree(output / name, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            (output / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    recover_dir(layout.dataset_dir)
    registry = Registry(layout.registry)
    previous = registry.get_meta("config_hash")
    current = config.result_hash()
    if previous is not None and previous != current and registry.videos():
        registry.close()
        raise ConfigError(
            f"{output} was mined with different settings (model, classes, sampling or thresholds changed, or an "
            "earlier video-miner chose frames differently); run with --fresh to start over, or give a new --output"
        )
    registry.set_meta("config_hash", current)
    # A run killed while reading live sources: what it committed is final, what it had not is gone.
    registry.end_live()
    shutil.rmtree(layout.live_dir, ignore_errors=True)
    return registry


def select_sources(sources: list[Source], registry: Registry, config: MinerConfig, retry_failed: bool
                   ) -> tuple[list[Source], int]:
    """Register every source; return those to run now and how many are skipped as done."""
    to_run, skipped = [], 0
    for src in sources:
        registry.upsert_video(src.video_id, input=src.raw, normalized=src.normalized, kind=src.kind, order=src.order,
                              config_hash=config.result_hash())
        row = registry.video(src.video_id)
        assert row is not None
        if src.kind == "invalid":
            registry.mark_failed(src.video_id, src.error_kind or "error", src.error or "invalid input")
            continue
        if src.kind == "live":  # a stream is read again on every run: its new frames append
            to_run.append(src)
        elif row.state is State.DONE:
            skipped += 1
        elif row.state is State.FAILED:
            if retry_failed:
                registry.reset(src.video_id)
                to_run.append(src)
        elif not retry_failed:
            to_run.append(src)
    return to_run, skipped
