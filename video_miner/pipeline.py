"""One mining run: lock and prepare the output folder and registry, run the stages on the engine,
then resolve duplicates and export. The CLI is a thin layer over :func:`mine`.

On the local engine a run is up to three things at once, in one event loop: the file pipeline
(download -> extract -> filter -> collect) fed by the listed inputs and then by watched folders;
the live pipeline (live_filter -> live_collect) fed by the live sources' reader threads through a
bounded queue that drops when full; and, while either is open-ended, an export every
``live.export_every_s``. Both pipelines share one detector through its batcher. The first Ctrl-C
(or ``--duration``) stops all of them taking new work; what is in flight finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

from async_pipeline import (
    AsyncPipelineOrchestrator,
    PipelineEvent,
    QueuePolicy,
    RunResult,
    SequentialRunner,
    StageMessage,
    StageSpec,
)

from .config import MinerConfig
from .context import MiningContext
from .detector import Detector, DetectorSpec, SharedDetector
from .errors import ConfigError, environment_error
from .export import ExportSummary, Labeller, build_dataset
from .fsutil import recover_dir
from .inputs import ORDER_STRIDE, Source, expand_sources, read_input_lines
from .metrics import RunMetrics
from .registry import UNFINISHED, Registry, State
from .run_lock import OutputLock
from .sources.hub import LiveHub
from .sources.watch import FolderWatcher
from .stages.collect import CollectStage
from .stages.download import DownloadStage
from .stages.extract import ExtractStage
from .stages.filter import FilterStage
from .stages.live_collect import LiveCollectStage
from .stages.live_filter import LiveFilterStage

Engine = Literal["async", "sequential", "ray"]
STAGES = ("download", "extract", "filter", "collect")
LIVE_STAGES = ("live_filter", "live_collect")


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
    #: Folders that keep receiving videos: the run goes on until stopped (or ``duration_s``).
    watch: list[Path] = field(default_factory=list)
    #: Stop taking new work after this many seconds (live sources, watched folders).
    duration_s: float | None = None
    #: The command line, shown to a second run on the same output folder.
    command: list[str] | None = None


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
    #: Per live source: frames captured, dropped, decided, latency (metrics.json's "live").
    live: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunProgress:
    """Video-level progress the display reads: fed by the engine's events."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    #: Videos that left the pipeline (done, dropped or failed). One int: reads and writes are atomic.
    finished: int = 0
    #: No total is known: watched folders add videos as they come.
    open_ended: bool = False

    def on_event(self, event: PipelineEvent) -> None:
        if event.kind == "item_done":
            self.finished += 1


@dataclass
class RunView:
    """What observers (the live display, metrics) read of a run: its pipelines' stages merged,
    its progress, and the live sources' figures."""

    ctx: MiningContext
    progress: RunProgress
    runners: list[Runner] = field(default_factory=list)
    hub: LiveHub | None = None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for runner in self.runners:
            merged.update(runner.snapshot())
        return merged

    def request_stop(self) -> None:
        for runner in self.runners:
            runner.request_stop()

    def live(self) -> dict[str, dict[str, Any]]:
        return {s.source: s.as_dict() for s in self.hub.stats.values()} if self.hub is not None else {}


#: Builds the live display for a run: a context manager.
DisplayFactory = Callable[[RunView], AbstractContextManager[Any]]


def prepare_output(config: MinerConfig, fresh: bool) -> Registry:
    """The caller holds the output lock."""
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
    # A run killed while reading live sources: what it committed is final, what it had not is gone.
    registry.end_live()
    shutil.rmtree(output / "work" / "live", ignore_errors=True)
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
        if src.kind == "live":  # a stream is read again on every run: its new frames append
            to_run.append(src)
        elif state is State.DONE:
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


def _shared_on_files(shared: SharedDetector) -> Labeller:
    """The shared detector over image files: the export's few deferred frames join the batches of
    whatever else is in flight (live frames keep coming while a periodic export runs)."""

    def label(paths: list[Path]) -> list[list[dict[str, Any]]]:
        def load(p: Path) -> Image.Image:
            with Image.open(p) as im:
                return im.convert("RGB")

        shared.batcher.join()
        try:
            return shared.batcher.map(load(p) for p in paths)
        finally:
            shared.batcher.leave()

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


def build_live_stages(ctx: MiningContext, detector: SharedDetector, hub: LiveHub) -> list[StageSpec]:
    live = ctx.config.live
    return [
        StageSpec(LIVE_STAGES[0], lambda: LiveFilterStage(ctx, detector, hub),
                  workers=live.workers or 2 * detector.batch_size, queue_size=live.queue_size,
                  queue_policy=QueuePolicy(live.queue_policy), batchers=(detector.batcher,)),
        StageSpec(LIVE_STAGES[1], lambda: LiveCollectStage(ctx), workers=1, queue_size=live.queue_size),
    ]


def _message(src: Source) -> StageMessage:
    return StageMessage(src.video_id, metadata={"video_id": src.video_id, "kind": src.kind, "source": src.normalized,
                                                "order": src.order})


def _messages(sources: list[Source]) -> Iterator[StageMessage]:
    return (_message(src) for src in sources)


def _check_request(request: RunRequest, sources: list[Source]) -> None:
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


def mine(request: RunRequest, display: DisplayFactory | None = None, metrics: RunMetrics | None = None) -> MiningReport:
    """Run one mining job. ``metrics`` (one is made if not given) hears every engine event and
    writes metrics.json; with ``metrics_port`` set it serves Prometheus while the run goes."""
    started = time.monotonic()
    config = request.config
    sources = expand_sources(read_input_lines(request.inputs))
    _check_request(request, sources)
    # Before anything is loaded or written: a second run on the same folder stops here at once.
    with OutputLock(config.output_dir, request.command):
        detector = Detector(detector_spec(config))  # a bad model or unknown class fails before any download
        labeller = _labeller(config)
        registry = prepare_output(config, request.fresh)
        try:
            return _Run(request, sources, registry, detector, labeller, metrics or RunMetrics(), started).go(display)
        finally:
            registry.close()


class _Run:
    """One run's parts, wired together: see the module's docstring."""

    def __init__(self, request: RunRequest, sources: list[Source], registry: Registry, detector: Detector,
                 labeller: Labeller | None, metrics: RunMetrics, started: float) -> None:
        self.request, self.config = request, request.config
        self.sources, self.registry, self.detector, self.labeller = sources, registry, detector, labeller
        self.metrics, self.started = metrics, started
        self.ctx = MiningContext(config=self.config, registry=registry, output=self.config.output_dir)
        self.to_run, self.skipped = _select(sources, registry, self.config, request.retry_failed)
        self.bulk = [s for s in self.to_run if s.kind != "live"]
        self.live = [s for s in self.to_run if s.kind == "live"]
        self.open_ended = bool(request.watch or self.live)
        self.progress = RunProgress(total=len(self.bulk), open_ended=bool(request.watch))
        self.view = RunView(self.ctx, self.progress)
        self.shared: SharedDetector | None = None
        self.hub: LiveHub | None = None
        self.watcher: FolderWatcher | None = None
        self._export_lock = threading.Lock()
        self._stops = 0
        self._watched: set[str] = set()

    # ---- the run ----------------------------------------------------------------------------
    def go(self, display: DisplayFactory | None) -> MiningReport:
        started_ray = False
        try:
            if self.request.engine == "ray":
                started_ray = self._prepare_ray()
            else:
                self.shared = SharedDetector(self.detector, self.config.filter.max_wait_ms / 1000,
                                             on_batch=self.metrics.on_batch)
                self.metrics.detector = self.shared.batcher
            stages_started = time.monotonic()
            with self.shared.batcher if self.shared is not None else nullcontext():
                result = self._stages(display)
                stages_wall = time.monotonic() - stages_started
                if self.ctx.fault is not None:
                    # The disk is full (or worse): no export; the last dataset stays as it was.
                    raise self.ctx.fault
                summary = self._export()
            return self._report(result, summary, stages_wall)
        finally:
            if self.hub is not None:
                self.hub.cleanup()
            if started_ray:
                import ray

                ray.shutdown()
            self.metrics.close()

    def _prepare_ray(self) -> bool:
        from .ray_engine import start_ray
        from .shared_storage import open_filesystem

        if self.config.ray.shared_storage:
            open_filesystem(self.config.ray.shared_storage)  # an unknown protocol or missing package fails here
        return start_ray(self.request.ray_address)

    def _on_event(self, event: PipelineEvent) -> None:
        self.progress.on_event(event)
        self.metrics.on_event(event)

    def _stages(self, display: DisplayFactory | None) -> RunResult | None:
        if self.request.engine == "sequential":
            assert self.shared is not None
            runner = SequentialRunner(build_stages(self.ctx, self.shared), jobs=self.request.jobs,
                                      on_event=self._on_event, handle_signals=self.request.handle_signals)
            self._attach(runner)
            with display(self.view) if display else nullcontext():
                return runner.run(_messages(self.bulk)) if self.bulk else None
        if not self.bulk and not self.open_ended:
            return None
        return asyncio.run(self._compose(display))

    def _bulk_specs(self) -> list[StageSpec]:
        if self.request.engine == "ray":
            from .ray_engine import build_ray_stages

            return build_ray_stages(self.ctx)
        assert self.shared is not None
        return build_stages(self.ctx, self.shared)

    def _attach(self, runner: Runner) -> None:
        self.view.runners.append(runner)
        self.ctx.request_stop = self.view.request_stop
        self.metrics.attach(self.view, self.ctx)
        if self.config.metrics_port is not None:  # scrapes see the stages from the first one on
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)

    async def _compose(self, display: DisplayFactory | None) -> RunResult | None:
        loop = asyncio.get_running_loop()
        grace = self.config.pipeline.grace_seconds
        bulk = AsyncPipelineOrchestrator(self._bulk_specs(), on_event=self._on_event, grace_seconds=grace)
        self._attach(bulk)
        if self.request.engine != "ray":
            self.hub = LiveHub(self.ctx, loop)
            self.view.hub = self.hub
            self.ctx.go_live = self.hub.add
        if self.request.watch:
            self.watcher = FolderWatcher(self.request.watch, self.config.watch,
                                         first_order=(len(self.request.inputs) + 1) * ORDER_STRIDE, stride=ORDER_STRIDE)
        handled = self._handle_signals(loop)
        try:
            with display(self.view) if display else nullcontext():
                async with asyncio.TaskGroup() as tg:
                    work: list[asyncio.Task[RunResult | None]] = [tg.create_task(self._run_bulk(bulk))]
                    if self.hub is not None:
                        work.append(tg.create_task(self._run_live(self.hub)))
                    helpers = []
                    if self.request.duration_s is not None:
                        helpers.append(tg.create_task(self._stop_after(self.request.duration_s)))
                    if self.open_ended:
                        helpers.append(tg.create_task(self._export_every(self.config.live.export_every_s)))
                    results = await asyncio.gather(*work)
                    for helper in helpers:
                        helper.cancel()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.hub is not None:
                self.hub.stop()
                await asyncio.to_thread(self.hub.join)
        return results[0]

    async def _run_bulk(self, bulk: AsyncPipelineOrchestrator) -> RunResult | None:
        try:
            return await bulk.run(self._bulk_inputs())
        finally:
            # Only the file pipeline's download stage finds new live sources (yt-dlp's is_live).
            if self.hub is not None:
                self.hub.no_more_sources()

    async def _bulk_inputs(self) -> AsyncIterator[StageMessage]:
        for src in self.bulk:
            yield _message(src)
        if self.watcher is None:
            return
        async for src in self.watcher.sources():
            to_run, _ = _select([src], self.registry, self.config, self.request.retry_failed)
            self._watched.add(src.video_id)
            if to_run:
                self.progress.total += 1
                yield _message(src)

    async def _run_live(self, hub: LiveHub) -> RunResult | None:
        """The live pipeline, started with the first live source (a listed one, or a URL the
        download stage finds to be live): until then its workers would only hold batches back."""
        assert self.shared is not None
        if self.live:
            # Frames are read from the moment a source opens: the model is ready first, so the
            # first frames do not wait seconds for it (a camera's stream has no start to miss).
            await asyncio.to_thread(self.shared.warm_up)
        for src in self.live:
            hub.add(src)
        if not await hub.first_source():
            return None
        live = AsyncPipelineOrchestrator(build_live_stages(self.ctx, self.shared, hub), on_event=hub.on_event,
                                         grace_seconds=self.config.pipeline.grace_seconds, keep_outcomes=False)
        self.view.runners.append(live)
        if self._stops:
            live.request_stop()
        try:
            return await live.run(hub.frames())
        finally:
            await hub.drain()

    async def _stop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop()

    async def _export_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self._export)
            except Exception as exc:
                fault = environment_error(exc, self.config.output_dir)
                if fault is None:
                    raise
                self.ctx.environment_fault(fault)

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        handled: list[signal.Signals] = []
        if self.request.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal)
                    handled.append(sig)
        return handled

    def _on_signal(self) -> None:
        if self._stops == 0:
            self.stop()
        else:
            for runner in self.view.runners:
                if isinstance(runner, AsyncPipelineOrchestrator):
                    runner.abort()

    def stop(self) -> None:
        """Take no new work (inputs, frames, files); what is in flight finishes."""
        self._stops += 1
        self.ctx.hosts.stop.set()  # no download waits out a host's pause any more
        if self.watcher is not None:
            self.watcher.stop()
        if self.hub is not None:
            self.hub.stop()
        self.view.request_stop()

    # ---- after the stages -------------------------------------------------------------------
    def _export(self) -> ExportSummary:
        """The dataset from everything done so far (also every live.export_every_s while open-ended)."""
        # The filter's own model (the start-up check loaded it on this machine) detects the few
        # deferred frames the dedup still needs.
        detect = _shared_on_files(self.shared) if self.shared is not None else _on_files(self.detector)
        with self._export_lock:
            return build_dataset(self.registry, self.config, self.config.output_dir, self.labeller, detect,
                                 self.detector.batch_size)

    def _report(self, result: RunResult | None, summary: ExportSummary, stages_wall: float) -> MiningReport:
        config, registry, ctx = self.config, self.registry, self.ctx
        ctx.counters.add(frames_kept=summary.kept, frames_duplicates=summary.duplicates,
                         frames_to_detector=summary.detected_at_export)
        ids = {s.video_id for s in self.sources}
        # The listed inputs, watched files, playlist entries; a live source's segments are not videos.
        rows = [r for r in registry.videos() if r["video_id"] in ids or (r["parent"] in ids and r["kind"] != "live")
                or r["video_id"] in self._watched]
        failures = [Failure(r["video_id"], r["input"], r["error_class"] or "error", r["error_message"] or "")
                    for r in rows if r["state"] == State.FAILED]
        unfinished = [r for r in rows if r["state"] in UNFINISHED and r["kind"] not in ("invalid", "live")]
        counters = ctx.counters.as_dict()
        live = self.view.live()
        if result is not None or live:  # a re-run with nothing to do keeps the last real run's metrics
            self.metrics.write(config.output_dir / "metrics.json", {
                "videos": len(rows), "videos_done": sum(r["state"] == State.DONE for r in rows),
                "videos_failed": len(failures), "frames": summary.frames, "kept": summary.kept,
                "duplicates": summary.duplicates, "filtered": summary.filtered,
                "frames_to_detector": counters.get("frames_to_detector", 0),
                "frames_deferred": counters.get("frames_deferred", 0),
                "bytes_downloaded": counters.get("bytes_downloaded", 0),
                "wall_seconds": round(time.monotonic() - self.started, 3), "stages_seconds": round(stages_wall, 3),
            }, stages_wall, live=live)
        return MiningReport(
            output=config.output_dir,
            videos_total=len([r for r in rows if r["state"] != State.SKIPPED and r["kind"] != "live"]),
            videos_done=len([r for r in rows if r["state"] == State.DONE and r["kind"] != "live"]),
            videos_skipped=self.skipped,
            failures=failures + [Failure(r["video_id"], r["input"], "unfinished", "stopped before it finished; "
                                         "run the same command again to resume") for r in unfinished],
            export=summary,
            counters=counters,
            wall_seconds=time.monotonic() - self.started,
            stopped=bool(result and result.stopped) or self._stops > 0,
            warnings=[(r["input"], r["warning"]) for r in rows if r["warning"] and r["state"] == State.DONE],
            result=result,
            live=live,
        )
