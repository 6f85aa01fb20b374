"""``--engine ray``: the same stage classes on a Ray cluster.

On the driver the usual :class:`~async_pipeline.AsyncPipelineOrchestrator` runs, so backpressure,
exact completion, retries, Ctrl-C, the registry, metrics and the export work exactly as locally.
Its download/extract/filter stages are thin proxies: each sends one video's work to Ray (a task
for CPU stages, a long-lived actor holding the model, or a ``models:`` list's models joined per
frame, for the filter; a shots model loads in the extract task that needs it) and awaits the
:class:`~video_miner.stages.base.StageResult`; the number of proxy workers bounds the work in flight
per stage. Remotely the unchanged stage class runs with a :class:`StageEnv` of its own; its changes
come back typed and the driver commits them (:func:`~video_miner.stages.base.settle`) before the
next stage sees the video. Files live where every node reaches them (a shared path, or an fsspec
URL through :mod:`video_miner.run.shared_storage`); the collect stage, dedup and export stay on the
driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from async_pipeline import QueuePolicy, StageSpec

from ..config import MinerConfig
from ..detect.detector import Detector, FilesDetector, SharedDetector, detector_spec, shared_on_files
from ..detect.model_graph import ModelGraph
from ..errors import TransientError
from ..live.hub import LiveHub
from ..records import VideoRow, VideoUpdate
from ..stages.base import LIVE_STAGES, EngineStage, LocalStage, Message, MinerStage, StageResult, execute, settle
from ..stages.changes import StageChanges
from ..stages.collect import CollectStage
from ..stages.context import MiningContext, StageEnv
from ..stages.download import DownloadStage
from ..stages.extract import ExtractStage
from ..stages.filter import FilterStage
from ..store.layout import RESULT, read_result
from .engine import Engine, live_collect
from .ray_live import RayLiveFilter, actor_config, actor_gpus, start_live_actor
from .shared_storage import SharedStorage

log = logging.getLogger(__name__)
CPU_STAGES: dict[str, type[DownloadStage] | type[ExtractStage]] = {"download": DownloadStage, "extract": ExtractStage}


def _storage(config: MinerConfig, output: str) -> SharedStorage | None:
    url = config.ray.shared_storage
    return SharedStorage(url, Path(output)) if url else None


def _env(config: MinerConfig, output: str) -> StageEnv:
    """With shared storage the stage works in this node's scratch folder, else in the shared output."""
    storage = _storage(config, output)
    root = storage.scratch if storage else Path(output)
    root.mkdir(parents=True, exist_ok=True)
    return StageEnv.of(config, root)


def _to_driver(storage: SharedStorage, changes: StageChanges) -> StageChanges:
    """The changes with paths in this node's scratch folder named as the driver names them."""
    def moved(update: VideoUpdate) -> VideoUpdate:
        return replace(update, path=storage.to_driver(update.path)) if update.path else update

    return replace(changes, updates=[(vid, moved(update)) for vid, update in changes.updates])


def _run_remote(stage: MinerStage, msg: Message, row: VideoRow | None, output: str) -> StageResult:
    import ray

    storage = _storage(stage.env.config, output)
    result = StageResult()
    try:
        fetched: set[Path] = set()
        if storage is not None:
            msg, fetched = storage.localize(msg)
        result = execute(stage, msg, row)
        if storage is not None:
            result.outputs = [storage.publish(m, fetched) for m in result.outputs]
            result.changes = _to_driver(storage, result.changes)
    except OSError as exc:
        # fsspec raises OSError subclasses for storage trouble (timeouts, throttling): worth a retry.
        result = StageResult([], result.changes, TransientError(
            f"shared storage {stage.env.config.ray.shared_storage}: {type(exc).__name__}: {exc}"))
    finally:
        if storage is not None:
            for m in (msg, *result.outputs):
                storage.drop_scratch(m)
    node = ray.get_runtime_context().get_node_id()
    result.outputs = [m.evolve(payload=replace(m.item, nodes=(*m.item.nodes, (stage.name, node))), attempt=m.attempt)
                      for m in result.outputs]
    return result


def cpu_stage_task(name: str, config: MinerConfig, output: str, msg: Message, row: VideoRow | None) -> StageResult:
    """A download or extract stage for one video, as a Ray task."""
    return _run_remote(CPU_STAGES[name](_env(config, output)), msg, row, output)


class FilterActor:
    """Holds the model (or a ``models:`` list's models, joined per frame as locally) for its
    lifetime; runs the filter stage for one video per call."""

    def __init__(self, config: MinerConfig, output: str) -> None:
        self.output = output
        models: SharedDetector | ModelGraph
        config = actor_config(config)
        if config.models:
            models = ModelGraph(config)
        else:
            models = SharedDetector(Detector(detector_spec(config)), config.filter.max_wait_ms / 1000)
        models.__enter__()
        # One video per call: its frames fill the actor's batches (each batcher's one client).
        for batcher in models.batchers:
            batcher.join()
        self.detector = models
        self.stage = FilterStage(_env(config, output), models)
        self.stage.setup()

    def run(self, msg: Message, row: VideoRow | None) -> StageResult:
        return _run_remote(self.stage, msg, row, self.output)


class RayStage(EngineStage):
    """Driver-side proxy: one in-flight video per proxy worker; the subclass says where its work
    runs (a task, an actor) and what the driver needs of an output when the nodes share files
    through storage."""

    name = ""

    def __init__(self, ctx: MiningContext) -> None:
        super().__init__(ctx)
        self.storage = _storage(ctx.config, str(ctx.output))

    @abstractmethod
    def _submit(self, msg: Message, row: VideoRow | None) -> Any:
        """Start the work remotely: a Ray object ref of its :class:`StageResult`."""

    def _on_driver(self, out: Message) -> None:
        """With shared storage: what the driver needs of ``out`` before the next stage."""

    async def process(self, msg: Message) -> list[Message]:
        row = self.ctx.registry.video(msg.item.video_id)
        result: StageResult = await self._submit(msg, row)
        outputs = settle(self.ctx, msg, result, self.max_attempts)
        if self.storage is not None:
            for out in outputs:
                self._on_driver(out)
        return outputs


class RayTaskStage(RayStage):
    """A download or extract stage: each video a Ray task on any node with CPUs for it."""

    def __init__(self, ctx: MiningContext, name: str) -> None:
        super().__init__(ctx)
        self.name = name
        self.remote: Any = None

    def setup(self) -> None:
        import ray

        ray_cfg = self.ctx.config.ray
        self.remote = ray.remote(cpu_stage_task).options(
            num_cpus=ray_cfg.cpus_per_task, max_retries=3, retry_exceptions=False,
            resources=ray_cfg.cpu_resources or None, name=self.name)

    def _submit(self, msg: Message, row: VideoRow | None) -> Any:
        return self.remote.remote(self.name, self.ctx.config, str(self.ctx.output), msg, row)


class RayExtractStage(RayTaskStage):
    def __init__(self, ctx: MiningContext) -> None:
        super().__init__(ctx, "extract")

    def _on_driver(self, out: Message) -> None:
        if self.ctx.config.cleanup.videos and out.item.video_path:
            # The frames are out: a downloaded video is no longer needed (a user's own file is never touched).
            assert self.storage is not None
            self.storage.remove(Path(out.item.video_path))


class RayFilterStage(RayStage):
    """The filter: a long-lived actor holding the model(s), one per proxy worker."""

    name = "filter"

    def __init__(self, ctx: MiningContext) -> None:
        super().__init__(ctx)
        self.actor: Any = None

    def setup(self) -> None:
        import ray

        ray_cfg = self.ctx.config.ray
        actor_cls = ray.remote(FilterActor).options(num_cpus=ray_cfg.filter_cpus, num_gpus=actor_gpus(self.ctx.config),
                                                    resources=ray_cfg.filter_resources or None,
                                                    max_restarts=3, max_task_retries=3)
        self.actor = actor_cls.remote(self.ctx.config, str(self.ctx.output))

    def close(self) -> None:
        if self.actor is not None:
            import ray

            ray.kill(self.actor)
            self.actor = None

    def _submit(self, msg: Message, row: VideoRow | None) -> Any:
        return self.actor.run.remote(msg, row)

    def _on_driver(self, out: Message) -> None:
        # The collect stage and the export read the filter's results on this machine.
        assert self.storage is not None
        if out.input_path is not None:
            self.storage.fetch_to_driver(out.input_path, _files_collect_keeps, RESULT)


def _files_collect_keeps(frames_dir: Path) -> list[str]:
    """The frames the collect stage moves into candidates, as the filter's result names them."""
    return [f.file for f in read_result(frames_dir) if f.keeps_file]


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local instance on loopback.
    Returns whether this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Keeps a local instance on 127.0.0.1 instead of the machine's other addresses.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray runs its workers at nice 15; here they do all the mining, so they run at the
        # driver's priority, as the local engine's threads do (niced, any other busy process on
        # the machine left them a few percent of a core).
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 _system_config={"worker_niceness": 0})
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


class RayEngine(Engine):
    def __init__(self, ctx: MiningContext, detector: Detector | ModelGraph, address: str | None) -> None:
        # With a models: list the driver keeps its own graph for the export's deferred frames only.
        super().__init__(ctx, None if isinstance(detector, ModelGraph) else detector)
        self.graph = detector if isinstance(detector, ModelGraph) else None
        self.address = address
        self._started = False
        self._live_actor: Any = None

    def __enter__(self) -> RayEngine:
        from ..download.remote import open_filesystem

        if self.ctx.config.ray.shared_storage:
            open_filesystem(self.ctx.config.ray.shared_storage)  # an unknown protocol or missing package fails here
        self._started = start_ray(self.address)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.graph is not None:
            self.graph.__exit__(kind, exc, tb)
        if self._live_actor is not None:
            import ray

            # Its models closed and scratch folder removed, then the actor goes (a hung one too).
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self._live_actor.close.remote(), timeout=30)
            ray.kill(self._live_actor)
            self._live_actor = None
        if self._started:
            import ray

            ray.shutdown()

    def detect_files(self) -> FilesDetector:
        if self.graph is None:
            return super().detect_files()
        self.graph.__enter__()
        return shared_on_files(self.graph)

    def _live_workers(self) -> int:
        return self.ctx.config.live.workers or 8

    def live_filter(self) -> Any:
        """The run's live filter actor (:mod:`.ray_live`), started the first time it is asked for."""
        if self._live_actor is None:
            self._live_actor = start_live_actor(self.ctx.config, self._live_workers())
        return self._live_actor

    def warm_up_live(self) -> None:
        import ray

        node = ray.get(self.live_filter().ready.remote())
        log.info("live frames are decided on Ray node %s", node)

    def live_stages(self, hub: LiveHub) -> list[StageSpec]:
        ctx, live, actor = self.ctx, self.ctx.config.live, self.live_filter()
        return [
            StageSpec(LIVE_STAGES[0], lambda: RayLiveFilter(ctx, hub, actor), workers=self._live_workers(),
                      queue_size=live.queue_size, queue_policy=QueuePolicy(live.queue_policy)),
            live_collect(ctx, hub),
        ]

    def file_stages(self) -> list[StageSpec]:
        ctx, p = self.ctx, self.ctx.config.pipeline
        return [
            StageSpec("download", lambda: RayTaskStage(ctx, "download"), workers=p.download_workers,
                      queue_size=p.queue_size),
            StageSpec("extract", lambda: RayExtractStage(ctx), workers=p.extract_workers, queue_size=p.queue_size),
            StageSpec("filter", lambda: RayFilterStage(ctx), workers=p.filter_workers or 1, queue_size=p.queue_size),
            StageSpec("collect", lambda: LocalStage(ctx, CollectStage(ctx.env)), workers=1, queue_size=p.queue_size),
        ]

