"""``--engine ray``: the same stage classes on a Ray cluster.

On the driver the usual :class:`~async_pipeline.AsyncPipelineOrchestrator` runs, so backpressure,
exact completion, retries, Ctrl-C, the registry, metrics and the export work exactly as locally.
Its download/extract/filter stages are thin proxies: each sends one video's work to Ray (a task
for CPU stages, a long-lived actor holding the model for the filter) and awaits the result; the
number of proxy workers bounds the work in flight per stage. Remotely, the unchanged stage class
runs against a :class:`RemoteContext` whose registry writes are recorded and replayed on the
driver before the next stage sees the video. Files must live where every node reaches them (a
shared path); the collect stage, dedup and export stay on the driver.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from async_pipeline import BaseStageWorker, StageMessage, StageSpec
from async_pipeline.worker import as_messages

from .config import MinerConfig
from .context import DetectionCache, KeptHints, MiningContext, check_free_space, hints_for
from .errors import MinerError, TransientError, environment_error
from .host_gate import HostGate
from .registry import Decision
from .same_content import SameContent
from .shared_storage import SharedStorage
from .stages.collect import CollectStage
from .stages.filter import RESULT, read_result

Op = tuple[str, tuple[Any, ...], dict[str, Any]]


class RecordingRegistry:
    """Stands in for the registry on a Ray worker: answers from the video's row as the driver saw
    it, and records every write for the driver to apply."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.ops: list[Op] = []

    def video(self, video_id: str) -> dict[str, Any] | None:
        return self.rows.get(video_id)

    def _record(self, op: str, *args: Any, **kwargs: Any) -> None:
        self.ops.append((op, args, kwargs))

    def set_state(self, video_id: str, state: Any, **fields: Any) -> None:
        self._record("set_state", video_id, state, **fields)
        self.rows.setdefault(video_id, {}).update({"state": state, **fields})

    def bump_attempts(self, video_id: str) -> None:
        self._record("bump_attempts", video_id)

    def mark_failed(self, video_id: str, error_class: str, message: str) -> None:
        self._record("mark_failed", video_id, error_class, message)

    def upsert_video(self, video_id: str, **kwargs: Any) -> None:
        self._record("upsert_video", video_id, **kwargs)


@dataclass
class RecordingCounters:
    deltas: Counter[str] = field(default_factory=Counter)

    def add(self, **deltas: int) -> None:
        self.deltas.update(deltas)


@dataclass
class RemoteContext:
    """The parts of :class:`MiningContext` a stage uses, for a Ray worker."""

    config: MinerConfig
    output: Path
    registry: RecordingRegistry
    counters: RecordingCounters = field(default_factory=RecordingCounters)
    detections: DetectionCache = field(default_factory=DetectionCache)
    hints: KeptHints | None = None
    same_content: SameContent[Path] = field(default_factory=SameContent)
    stop_requested: bool = False

    def __post_init__(self) -> None:
        self.hints = self.hints or hints_for(self.config)
        # Per task: politeness holds within one worker (a cluster-wide gate would need a Ray actor).
        self.hosts = HostGate(self.config.download.max_per_host, self.config.download.sleep_s)

    go_live = None

    def request_stop(self) -> None:
        self.stop_requested = True

    def environment_fault(self, error: MinerError) -> None:
        self.request_stop()

    def check_free_space(self, writing: Path) -> None:
        check_free_space(self.config, self.output, writing)

    priority = MiningContext.priority
    work = MiningContext.work
    videos_dir = MiningContext.videos_dir
    frames_dir = MiningContext.frames_dir
    candidates_dir = MiningContext.candidates_dir


@dataclass
class RemoteResult:
    outputs: list[StageMessage]
    ops: list[Op]
    counters: dict[str, int]
    stop_requested: bool
    error: MinerError | None


def _stage_class(name: str) -> Any:
    from .stages.download import DownloadStage
    from .stages.extract import ExtractStage
    from .stages.filter import FilterStage

    return {"download": DownloadStage, "extract": ExtractStage, "filter": FilterStage}[name]


def _storage(config: MinerConfig, output: str) -> SharedStorage | None:
    url = config.ray.shared_storage
    return SharedStorage(url, Path(output)) if url else None


def _remote_context(config: MinerConfig, output: str, rows: dict[str, dict[str, Any]]) -> RemoteContext:
    """With shared storage the stage works in this node's scratch folder, else in the shared output."""
    storage = _storage(config, output)
    root = storage.scratch if storage else Path(output)
    root.mkdir(parents=True, exist_ok=True)
    return RemoteContext(config, root, RecordingRegistry(rows))


def _run_remote(stage: Any, ctx: RemoteContext, msg: StageMessage, output: str) -> RemoteResult:
    import ray

    storage = _storage(ctx.config, output)
    error: MinerError | None = None
    outputs: list[StageMessage] = []
    ops = ctx.registry.ops
    try:
        fetched: set[Path] = set()
        if storage is not None:
            msg, fetched = storage.localize(msg)
        outputs = as_messages(stage.process(msg))
        if storage is not None:
            outputs = [storage.publish(m, fetched) for m in outputs]
            ops = [(op, storage.to_driver(args), storage.to_driver(kwargs)) for op, args, kwargs in ops]
    except MinerError as exc:
        error = exc
    except OSError as exc:
        # fsspec raises OSError subclasses for storage trouble (timeouts, throttling): worth a retry.
        error = TransientError(f"shared storage {ctx.config.ray.shared_storage}: {type(exc).__name__}: {exc}")
    finally:
        if storage is not None:
            for m in (msg, *outputs):
                storage.drop_scratch(m)
    node = ray.get_runtime_context().get_node_id()
    outputs = [m.evolve(metadata={"ray_nodes": {**m.metadata.get("ray_nodes", {}), stage_name(stage): node}},
                        attempt=m.attempt) for m in outputs]
    return RemoteResult(outputs, ops, dict(ctx.counters.deltas), ctx.stop_requested, error)


def stage_name(stage: Any) -> str:
    return type(stage).__name__.removesuffix("Stage").lower()


def cpu_stage_task(name: str, config: MinerConfig, output: str, msg: StageMessage,
                   rows: dict[str, dict[str, Any]]) -> RemoteResult:
    """A download or extract stage for one video, as a Ray task."""
    ctx = _remote_context(config, output, rows)
    return _run_remote(_stage_class(name)(ctx), ctx, msg, output)


class FilterActor:
    """Holds one model for its lifetime; runs the filter stage for one video per call."""

    def __init__(self, config: MinerConfig, output: str) -> None:
        from .detector import Detector, SharedDetector
        from .pipeline import detector_spec
        from .stages.filter import FilterStage

        self.output = output
        self.ctx = _remote_context(config, output, {})
        spec = detector_spec(config)
        if not spec.cpu_lanes:  # the cores Ray gave this actor, not all of the node's
            spec = replace(spec, cpu_lanes=max(1, int(config.ray.filter_cpus)))
        # One video per call: its frames fill the actor's batches (the batcher's one client).
        self.detector = SharedDetector(Detector(spec), config.filter.max_wait_ms / 1000)
        self.detector.batcher.start()
        self.detector.batcher.join()
        self.stage = FilterStage(self.ctx, self.detector)  # type: ignore[arg-type]
        self.stage.setup()

    def run(self, msg: StageMessage, rows: dict[str, dict[str, Any]]) -> RemoteResult:
        # One call at a time per actor (Ray's default), so resetting the recorder is safe.
        self.ctx.registry = RecordingRegistry(rows)
        self.ctx.counters = RecordingCounters()
        self.ctx.stop_requested = False
        return _run_remote(self.stage, self.ctx, msg, self.output)


class RayStage(BaseStageWorker):
    """Driver-side proxy: one in-flight video per proxy worker."""

    retry_on = (TransientError,)

    def __init__(self, ctx: MiningContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.max_attempts = ctx.config.download.retries + 1
        self.backoff_s = ctx.config.download.backoff_s
        self.actor: Any = None
        self.remote: Any = None
        self.storage = _storage(ctx.config, str(ctx.output))

    def setup(self) -> None:
        import ray

        ray_cfg = self.ctx.config.ray
        if self.name == "filter":
            gpus = ray_cfg.filter_gpus if ray_cfg.filter_gpus is not None else \
                (1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0)
            actor_cls = ray.remote(FilterActor).options(num_cpus=ray_cfg.filter_cpus, num_gpus=gpus,
                                                        resources=ray_cfg.filter_resources or None,
                                                        max_restarts=3, max_task_retries=3)
            self.actor = actor_cls.remote(self.ctx.config, str(self.ctx.output))
        else:
            self.remote = ray.remote(cpu_stage_task).options(
                num_cpus=ray_cfg.cpus_per_task, max_retries=3, retry_exceptions=False,
                resources=ray_cfg.cpu_resources or None, name=f"{self.name}")

    def close(self) -> None:
        if self.actor is not None:
            import ray

            ray.kill(self.actor)
            self.actor = None

    async def process(self, msg: StageMessage) -> list[StageMessage]:  # type: ignore[override]
        video_id = msg.metadata["video_id"]
        row = self.ctx.registry.video(video_id)
        rows = {video_id: row} if row else {}
        if self.actor is not None:
            ref = self.actor.run.remote(msg, rows)
        else:
            ref = self.remote.remote(self.name, self.ctx.config, str(self.ctx.output), msg, rows)
        result: RemoteResult = await ref
        # Apply the worker's registry writes before the next stage sees the video.
        for op, args, kwargs in result.ops:
            getattr(self.ctx.registry, op)(*args, **kwargs)
        if result.counters:
            self.ctx.counters.add(**result.counters)
        if result.stop_requested:
            self.ctx.request_stop()
        if result.error is not None:
            if environment_error(result.error) is not None:  # the worker's disk, not the video
                self.ctx.environment_fault(result.error)
            raise result.error
        if self.storage is not None:
            self._to_driver(result.outputs)
        return result.outputs

    def _to_driver(self, outputs: list[StageMessage]) -> None:
        """With shared storage: the collect stage and export read the filter's results on this machine."""
        assert self.storage is not None
        for m in outputs:
            if self.name == "filter" and m.input_path is not None:
                self.storage.fetch_to_driver(m.input_path, _files_collect_keeps, RESULT)
            if self.name == "extract" and self.ctx.config.cleanup.videos and m.metadata.get("video_path"):
                # The frames are out: a downloaded video is no longer needed (a user's own file is never touched).
                self.storage.remove(Path(m.metadata["video_path"]))


def _files_collect_keeps(frames_dir: Path) -> list[str]:
    """The frames the collect stage moves into candidates, as the filter's result names them."""
    keep = (Decision.CANDIDATE, Decision.DEFERRED)
    return [r["file"] for r in read_result(frames_dir) if r["decision"] in keep]


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local instance on loopback.
    Returns whether this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Keeps a local instance on 127.0.0.1 instead of the machine's other addresses.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


def build_ray_stages(ctx: MiningContext) -> list[StageSpec]:
    p = ctx.config.pipeline
    return [
        StageSpec("download", lambda: RayStage(ctx, "download"), workers=p.download_workers, queue_size=p.queue_size),
        StageSpec("extract", lambda: RayStage(ctx, "extract"), workers=p.extract_workers, queue_size=p.queue_size),
        StageSpec("filter", lambda: RayStage(ctx, "filter"), workers=p.filter_workers or 1, queue_size=p.queue_size),
        StageSpec("collect", lambda: CollectStage(ctx), workers=1, queue_size=p.queue_size),
    ]
