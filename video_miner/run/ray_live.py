"""Live sources on ``--engine ray``: the readers and the registry stay on the driver (a camera is
read where the run was started, as ``--watch`` watches there), each sampled frame's picture goes to
a live filter actor on the cluster that holds the model (or a ``models:`` list's models, joined
with the realtime synchronizer as locally) and answers with the decided frame; the live collect
stage commits it on the driver. The live queue's drop policy, the realtime join, tracks and the
export at any moment work as on the local engine.

The actor takes as many frames at once as the live pipeline has filter workers
(``max_concurrency``), so concurrent frames share its detector's batches. A killed actor is
restarted by Ray and the frame's call retried (``max_restarts``, ``max_task_retries``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from async_pipeline import BaseStageWorker, StageMessage, StageOutput

from ..config import MinerConfig
from ..detect.detector import Detector, SharedDetector, detector_spec
from ..detect.hints import DetectionCache
from ..detect.judge import FrameJudge
from ..detect.model_graph import ModelGraph
from ..live.hub import LiveHub
from ..records import FrameRecord, LiveFrame
from ..stages.context import MiningContext
from ..stages.live_filter import record_decision


def actor_config(config: MinerConfig) -> MinerConfig:
    """A filter actor's settings: its inference lanes on the cores Ray gave it, not all the node's."""
    if config.filter.cpu_lanes:
        return config
    return config.model_copy(update={"filter": config.filter.model_copy(
        update={"cpu_lanes": max(1, int(config.ray.filter_cpus))})})


def actor_gpus(config: MinerConfig) -> float:
    """GPUs per filter actor: ``ray.filter_gpus``, else a whole one where the cluster has any."""
    import ray

    if config.ray.filter_gpus is not None:
        return config.ray.filter_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


class LiveFilterActor:
    """Holds the model for the run's live frames; decides one frame per call (several at once)."""

    def __init__(self, config: MinerConfig) -> None:
        config = actor_config(config)
        models: SharedDetector | ModelGraph
        if config.models:
            models = ModelGraph(config)
        else:
            models = SharedDetector(Detector(detector_spec(config)), config.filter.max_wait_ms / 1000)
        models.__enter__()
        self.models = models
        # No near-duplicate deferral: the hints of what is kept live on the driver (every frame
        # that passes the prefilters is detected; byte-identical ones share a detection).
        self.judge = FrameJudge(models, DetectionCache(), None, config.filter.no_class_reason(), live=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="video-miner-live-"))

    def ready(self) -> str:
        """Warm the model up (the first frames do not wait for it); the id of the node it is on."""
        import ray

        self.models.warm_up()
        return str(ray.get_runtime_context().get_node_id())

    def decide(self, frame: FrameRecord, picture: bytes, order: int, video_id: str) -> FrameRecord:
        path = self.scratch / f"{uuid.uuid4().hex}.jpg"
        path.write_bytes(picture)
        try:
            ticket = self.judge.start(frame, path, order, video_id)
            while ticket is not None:
                self.models.wait([ticket.future])
                ticket = self.judge.finish(ticket, order, video_id)
        finally:
            path.unlink(missing_ok=True)
        return frame

    def close(self) -> None:
        self.models.__exit__(None, None, None)
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_live_actor(config: MinerConfig, workers: int) -> Any:
    """The live filter actor, placed and sized as the file filter's (``ray.filter_*``)."""
    import ray

    ray_cfg = config.ray
    actor_cls = ray.remote(LiveFilterActor).options(
        num_cpus=ray_cfg.filter_cpus, num_gpus=actor_gpus(config), resources=ray_cfg.filter_resources or None,
        max_concurrency=max(1, workers), max_restarts=3, max_task_retries=3)
    return actor_cls.remote(config)


class RayLiveFilter(BaseStageWorker):
    """Driver-side proxy of the live filter: one frame in flight per proxy worker."""

    def __init__(self, ctx: MiningContext, hub: LiveHub, actor: Any) -> None:
        self.ctx, self.hub, self.actor = ctx, hub, actor

    async def process(self, msg: StageMessage[LiveFrame]) -> StageOutput:
        assert msg.input_path is not None
        live = msg.item
        picture = await asyncio.to_thread(msg.input_path.read_bytes)
        decided: FrameRecord = await self.actor.decide.remote(live.frame, picture, live.order, live.video_id)
        live = replace(live, frame=decided)
        record_decision(self.ctx, self.hub, live)
        return msg.evolve(payload=live, timestamp=msg.timestamp)
