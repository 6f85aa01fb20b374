"""Where the file pipeline's stages run: the one seam between a run and its engine.

An :class:`Engine` is chosen once per run. :class:`LocalEngine` runs the stages in this process
around one shared detector (on the asyncio orchestrator, or one video at a time with
``--sequential``); :class:`~video_miner.run.ray_engine.RayEngine` runs them on a Ray cluster. Both
run the same stage classes (:mod:`video_miner.stages`) and commit their changes on the driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from async_pipeline import QueuePolicy, StageSpec

from ..detect.detector import Detector, FilesDetector, SharedDetector, on_files, shared_on_files
from ..detect.judge import FrameModels
from ..detect.model_graph import ModelGraph
from ..errors import ConfigError
from ..live.hub import LiveHub
from ..observe.metrics import RunMetrics
from ..stages.base import LIVE_STAGES, LocalStage
from ..stages.collect import CollectStage
from ..stages.context import MiningContext
from ..stages.download import DownloadStage
from ..stages.extract import ExtractStage
from ..stages.filter import FilterStage
from ..stages.live_collect import LiveCollectStage
from ..stages.live_filter import LiveFilterStage


class Engine(ABC):
    """A context manager: entering starts what the stages need (a model, a cluster), leaving stops it."""

    #: Runs one video at a time, without queues (no live sources or watched folders then).
    sequential = False

    def __init__(self, ctx: MiningContext, detector: Detector | None) -> None:
        self.ctx = ctx
        self.detector = detector

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    @abstractmethod
    def file_stages(self) -> list[StageSpec]:
        """download -> extract -> filter -> collect, as this engine runs them."""

    #: Whether it runs live sources and watched folders (the stage pipelines, not ``--sequential``).
    runs_live = True

    def live_stages(self, hub: LiveHub) -> list[StageSpec]:
        """live_filter -> live_collect."""
        raise ConfigError("live sources and --watch need the stage pipeline: drop --sequential")

    def warm_up_live(self) -> None:
        """Make the live filter's model ready before the first source opens (blocking)."""

    def detect_files(self) -> FilesDetector:
        """The filter's model over image files: the export detects the deferred frames it still needs."""
        assert self.detector is not None
        return on_files(self.detector)


class LocalEngine(Engine):
    def __init__(self, ctx: MiningContext, detector: Detector | ModelGraph, metrics: RunMetrics,
                 sequential: bool = False) -> None:
        #: The run's shared detector (or its models, joined per frame): the file and live stages
        #: of this process submit to it.
        self.shared: SharedDetector | ModelGraph
        if isinstance(detector, ModelGraph):
            super().__init__(ctx, None)
            self.shared = detector
            metrics.models = detector
        else:
            super().__init__(ctx, detector)
            self.shared = SharedDetector(detector, ctx.config.filter.max_wait_ms / 1000, on_batch=metrics.on_batch)
            metrics.detector = self.shared.batcher
        self.sequential = sequential
        self.runs_live = not sequential

    @property
    def models(self) -> FrameModels:
        return self.shared

    def __enter__(self) -> LocalEngine:
        self.shared.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.shared.__exit__(kind, exc, tb)

    def file_stages(self) -> list[StageSpec]:
        ctx, shared = self.ctx, self.models
        env, p = ctx.env, ctx.config.pipeline
        # Two batches' worth of videos: one batch runs while the next fills.
        filters = p.filter_workers or 2 * shared.batch_size
        return [
            StageSpec("download", lambda: LocalStage(ctx, DownloadStage(env)), workers=p.download_workers,
                      queue_size=p.queue_size),
            StageSpec("extract", lambda: LocalStage(ctx, ExtractStage(env)), workers=p.extract_workers,
                      queue_size=p.queue_size),
            StageSpec("filter", lambda: LocalStage(ctx, FilterStage(env, shared)), workers=filters,
                      queue_size=p.queue_size, batchers=shared.batchers),
            StageSpec("collect", lambda: LocalStage(ctx, CollectStage(env)), workers=1, queue_size=p.queue_size),
        ]

    def live_stages(self, hub: LiveHub) -> list[StageSpec]:
        ctx, shared, live = self.ctx, self.models, self.ctx.config.live
        return [
            StageSpec(LIVE_STAGES[0], lambda: LiveFilterStage(ctx, shared, hub),
                      workers=live.workers or 2 * shared.batch_size, queue_size=live.queue_size,
                      queue_policy=QueuePolicy(live.queue_policy), batchers=shared.batchers),
            live_collect(ctx, hub),
        ]

    def warm_up_live(self) -> None:
        self.models.warm_up()

    def detect_files(self) -> FilesDetector:
        # The filter's own model(s): the export's frames join the batches of whatever is in flight.
        return shared_on_files(self.shared)


def live_collect(ctx: MiningContext, hub: LiveHub) -> StageSpec:
    """The live pipeline's last stage, on the driver whatever the engine (the registry is there)."""
    return StageSpec(LIVE_STAGES[1], lambda: LiveCollectStage(ctx, hub), workers=1, queue_size=ctx.config.live.queue_size)
