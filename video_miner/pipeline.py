"""One mining run: prepare the output folder and registry, run the stages on the engine, then
resolve duplicates and export. The CLI is a thin layer over :func:`mine`."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

from async_pipeline import (
    AsyncPipelineOrchestrator,
    PipelineEvent,
    RunResult,
    SequentialRunner,
    StageMessage,
    StageSpec,
)

from .config import MinerConfig
from .context import MiningContext
from .detector import Detector, DetectorSpec, SharedDetector
from .errors import ConfigError
from .export import ExportSummary, Labeller, build_dataset
from .fsutil import recover_dir
from .inputs import Source, expand_sources, read_input_lines
from .metrics import RunMetrics
from .registry import UNFINISHED, Registry, State
from .stages.collect import CollectStage
from .stages.download import DownloadStage
from .stages.extract import ExtractStage
from .stages.filter import FilterStage

Engine = Literal["async", "sequential", "ray"]
STAGES = ("download", "extract", "filter", "collect")


class Runner(Protocol):
    def snapshot(self) -> dict[str, dict[str, Any]]: ...
    def request_stop(self) -> None: ...


@dataclass
class RunRequest:
    inputs: list[str]
    config: MinerConfig
    engine: Engine = "async"
    jobs: int = 1
    fresh: bool = False
    retry_failed: bool = False
    handle_signals: bool = False
    #: With engine "ray": the cluster to join (else RAY_ADDRESS, else a local instance).
    ray_address: str | None = None


@dataclass
class Failure:
    video_id: str
    input: str
    kind: str
    message: str

    def line(self) -> str:
        return f"{self.input}: {self.kind}: {self.message}"


@dataclass
class MiningReport:
    output: Path
    videos_total: int
    videos_done: int
    videos_skipped: int
    failures: list[Failure]
    export: ExportSummary
    counters: dict[str, int]
    wall_seconds: float
    stopped: bool
    #: (input, warning) for videos that completed with a problem, e.g. a truncated file.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    result: RunResult | None = None


@dataclass
class RunProgress:
    """Video-level progress the display reads: fed by the engine's events."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    #: Videos that left the pipeline (done, dropped or failed). One int: reads and writes are atomic.
    finished: int = 0

    def on_event(self, event: PipelineEvent) -> None:
        if event.kind == "item_done":
            self.finished += 1


#: Builds the live display: given the runner, the context and the progress, a context manager.
DisplayFactory = Callable[[Runner, MiningContext, RunProgress], AbstractContextManager[Any]]


def prepare_output(config: MinerConfig, fresh: bool) -> Registry:
    output = config.output_dir
    if fresh:
        for name in ("work", "dataset", "dataset.staging", "dataset.old"):
            shutil.rmtree(output / name, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            (output / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    recover_dir(output / "dataset")
    registry = Registry(output / "registry.sqlite")
    previous = registry.get_meta("config_hash")
    current = config.result_hash()
    if previous is not None and previous != current and registry.videos():
        registry.close()
        raise ConfigError(
            f"{output} was mined with different settings (model, classes, sampling or thresholds changed, or an "
            "earlier video-miner chose frames differently); run with --fresh to start over, or give a new --output"
        )
    registry.set_meta("config_hash", current)
    return registry


def _select(sources: list[Source], registry: Registry, config: MinerConfig, retry_failed: bool) -> tuple[list[Source], int]:
    """Register every source; return those to run now and how many are skipped as done."""
    to_run, skipped = [], 0
    for src in sources:
        registry.upsert_video(src.video_id, input=src.raw, normalized=src.normalized, kind=src.kind, order=src.order,
                              config_hash=config.result_hash())
        row = registry.video(src.video_id)
        assert row is not None
        state = State(row["state"])
        if src.kind == "invalid":
            registry.mark_failed(src.video_id, src.error_kind or "error", src.error or "invalid input")
            continue
        if state is State.DONE:
            skipped += 1
        elif state is State.FAILED:
            if retry_failed:
                registry.reset(src.video_id)
                to_run.append(src)
        elif not retry_failed:
            to_run.append(src)
    return to_run, skipped


def detector_spec(config: MinerConfig, model: str | None = None, conf: float | None = None) -> DetectorSpec:
    f = config.filter
    return DetectorSpec(model or f.model, tuple(f.classes), f.conf if conf is None else conf, f.iou, f.imgsz, f.device,
                        f.half, f.min_box_area, f.batch_size, f.cpu_lanes)


def _labeller(config: MinerConfig) -> Labeller | None:
    if not config.label.model:
        return None
    return _on_files(Detector(detector_spec(config, config.label.model, config.label.conf)))


def _on_files(detector: Detector) -> Labeller:
    """``detector`` over image files, in batches."""

    def label(paths: list[Path]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        size = detector.batch_size
        for start in range(0, len(paths), size):
            images = []
            for p in paths[start:start + size]:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            out.extend(detector.detect(images))
        return out

    return label


def build_stages(ctx: MiningContext, detector: SharedDetector) -> list[StageSpec]:
    p = ctx.config.pipeline
    # Two batches' worth of videos: one batch runs while the next fills.
    filters = p.filter_workers or 2 * detector.batch_size
    return [
        StageSpec("download", lambda: DownloadStage(ctx), workers=p.download_workers, queue_size=p.queue_size),
        StageSpec("extract", lambda: ExtractStage(ctx), workers=p.extract_workers, queue_size=p.queue_size),
        StageSpec("filter", lambda: FilterStage(ctx, detector), workers=filters, queue_size=p.queue_size,
                  batchers=(detector.batcher,)),
        StageSpec("collect", lambda: CollectStage(ctx), workers=1, queue_size=p.queue_size),
    ]


def _messages(sources: list[Source]) -> Iterator[StageMessage]:
    for src in sources:
        yield StageMessage(src.video_id, metadata={"video_id": src.video_id, "kind": src.kind, "source": src.normalized,
                                                   "order": src.order})


def mine(request: RunRequest, display: DisplayFactory | None = None, metrics: RunMetrics | None = None) -> MiningReport:
    """Run one mining job. ``metrics`` (one is made if not given) hears every engine event and
    writes metrics.json; with ``metrics_port`` set it serves Prometheus while the run goes."""
    started = time.monotonic()
    config = request.config
    sources = expand_sources(read_input_lines(request.inputs))
    if not sources:
        raise ConfigError("no inputs: give URLs, paths or a list file (one input per line)")
    spec = detector_spec(config)
    if config.export.manifest == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ConfigError("export.manifest: parquet needs pyarrow (pip install pyarrow), or use jsonl") from exc
    detector = Detector(spec)  # fails fast on a bad model or unknown class, before any download (warm-up comes later)
    labeller = _labeller(config)
    registry = prepare_output(config, request.fresh)
    run_metrics: RunMetrics | None = None
    started_ray = False
    try:
        ctx = MiningContext(config=config, registry=registry, output=config.output_dir)
        to_run, skipped = _select(sources, registry, config, request.retry_failed)
        progress = RunProgress(total=len(to_run))
        run_metrics = metrics or RunMetrics()

        def on_event(event: PipelineEvent) -> None:
            progress.on_event(event)
            run_metrics.on_event(event)

        if request.engine == "ray":
            from .ray_engine import build_ray_stages, start_ray
            from .shared_storage import open_filesystem

            if config.ray.shared_storage:
                open_filesystem(config.ray.shared_storage)  # an unknown protocol or missing package fails here

            started_ray = start_ray(request.ray_address)
            specs = build_ray_stages(ctx)
            shared = None
        else:
            shared = SharedDetector(detector, config.filter.max_wait_ms / 1000, on_batch=run_metrics.on_batch)
            run_metrics.detector = shared.batcher
            specs = build_stages(ctx, shared)
        runner: AsyncPipelineOrchestrator | SequentialRunner
        if request.engine == "sequential":
            runner = SequentialRunner(specs, jobs=request.jobs, on_event=on_event, handle_signals=request.handle_signals)
        else:
            runner = AsyncPipelineOrchestrator(specs, on_event=on_event, grace_seconds=config.pipeline.grace_seconds,
                                               handle_signals=request.handle_signals)
        ctx.request_stop = runner.request_stop
        run_metrics.attach(runner, ctx)
        if config.metrics_port is not None:
            run_metrics.serve(config.metrics_host, config.metrics_port)
        result: RunResult | None = None
        stages_started = time.monotonic()
        with display(runner, ctx, progress) if display else nullcontext(), \
                shared.batcher if shared is not None else nullcontext():
            if to_run:
                if isinstance(runner, SequentialRunner):
                    result = runner.run(_messages(to_run))
                else:
                    result = asyncio.run(runner.run(_messages(to_run)))
        stages_wall = time.monotonic() - stages_started
        # The filter's own model (the start-up check loaded it on this machine) detects the few
        # deferred frames the dedup still needs.
        summary = build_dataset(registry, config, config.output_dir, labeller, _on_files(detector), detector.batch_size)
        ctx.counters.add(frames_kept=summary.kept, frames_duplicates=summary.duplicates,
                         frames_to_detector=summary.detected_at_export)
        ids = {s.video_id for s in sources}
        rows = [r for r in registry.videos() if r["video_id"] in ids or r["parent"] in ids]
        failures = [Failure(r["video_id"], r["input"], r["error_class"] or "error", r["error_message"] or "")
                    for r in rows if r["state"] == State.FAILED]
        unfinished = [r for r in rows if r["state"] in UNFINISHED and r["kind"] != "invalid"]
        counters = ctx.counters.as_dict()
        if result is not None:  # a re-run with nothing to do keeps the last real run's metrics
            run_metrics.write(config.output_dir / "metrics.json", {
                "videos": len(rows), "videos_done": sum(r["state"] == State.DONE for r in rows),
                "videos_failed": len(failures), "frames": summary.frames, "kept": summary.kept,
                "duplicates": summary.duplicates, "filtered": summary.filtered,
                "frames_to_detector": counters.get("frames_to_detector", 0),
                "frames_deferred": counters.get("frames_deferred", 0),
                "bytes_downloaded": counters.get("bytes_downloaded", 0),
                "wall_seconds": round(time.monotonic() - started, 3), "stages_seconds": round(stages_wall, 3),
            }, stages_wall)
        return MiningReport(
            output=config.output_dir,
            videos_total=len([r for r in rows if r["state"] != State.SKIPPED]),
            videos_done=len([r for r in rows if r["state"] == State.DONE]),
            videos_skipped=skipped,
            failures=failures + [Failure(r["video_id"], r["input"], "unfinished", "stopped before it finished; "
                                         "run the same command again to resume") for r in unfinished],
            export=summary,
            counters=counters,
            wall_seconds=time.monotonic() - started,
            stopped=bool(result and result.stopped),
            warnings=[(r["input"], r["warning"]) for r in rows if r["warning"] and r["state"] == State.DONE],
            result=result,
        )
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        if run_metrics is not None:
            run_metrics.close()
        registry.close()
