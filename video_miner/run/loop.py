"""The stages of one run, with their timers and signals.

On the stage pipeline a run is up to three things at once, in one event loop: the file pipeline
(download -> extract -> filter -> collect) fed by the listed inputs and then by watched folders;
the live pipeline (live_filter -> live_collect) fed by the live sources' reader threads through a
bounded queue that drops when full; and, while either is open-ended, an export every
``live.export_every_s``. Both pipelines share one detector through its batcher. The first Ctrl-C
(or ``--duration``) stops all of them taking new work; what is in flight finishes; a second one
stops at once. ``--sequential`` runs the file pipeline alone, one video (or ``--jobs``) at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from async_pipeline import AsyncPipelineOrchestrator, PipelineEvent, RunResult, SequentialRunner, StageMessage

from ..errors import environment_error
from ..inputs.listing import ORDER_STRIDE, Source
from ..inputs.watch import FolderWatcher
from ..live.hub import LiveHub
from ..observe.metrics import RunMetrics
from ..observe.view import Runner, RunView
from ..records import VideoItem
from ..stages.context import MiningContext
from .engine import Engine
from .prepare import select_sources
from .request import RunRequest

#: Builds the live display for a run: a context manager.
DisplayFactory = Callable[[RunView], AbstractContextManager[Any]]


def message(src: Source) -> StageMessage[VideoItem]:
    return StageMessage(src.video_id, payload=VideoItem(src.video_id, src.kind, src.normalized, src.order))


class RunLoop:
    def __init__(self, request: RunRequest, ctx: MiningContext, engine: Engine, metrics: RunMetrics, view: RunView,
                 sources: list[Source], export: Callable[[], object]) -> None:
        self.request, self.config, self.ctx, self.engine = request, request.config, ctx, engine
        self.metrics, self.view, self.export = metrics, view, export
        self.bulk = [s for s in sources if s.kind != "live"]
        self.live = [s for s in sources if s.kind == "live"]
        self.open_ended = bool(request.watch or self.live)
        self.hub: LiveHub | None = None
        self.watcher: FolderWatcher | None = None
        #: Videos that came from watched folders (the report counts them with the listed ones).
        self.watched: set[str] = set()
        self.stops = 0
        #: Set once the listed live sources are handed to the hub (after the model's warm-up, which
        #: may take a while on a cluster): until then the sources are not all known.
        self.live_listed = asyncio.Event()

    def run(self, display: DisplayFactory | None) -> RunResult | None:
        if self.engine.sequential:
            runner = SequentialRunner(self.engine.file_stages(), jobs=self.request.jobs, on_event=self._on_event,
                                      handle_signals=self.request.handle_signals)
            self._attach(runner)
            if self.request.stop is not None:
                self.request.stop.listen(self.stop)
            with display(self.view) if display else nullcontext():
                return runner.run(message(src) for src in self.bulk) if self.bulk else None
        if not self.bulk and not self.open_ended:
            return None
        return asyncio.run(self._compose(display))

    def _on_event(self, event: PipelineEvent) -> None:
        self.view.progress.on_event(event)
        self.metrics.on_event(event)

    def _attach(self, runner: Runner) -> None:
        self.view.runners.append(runner)
        self.ctx.request_stop = self.view.request_stop
        self.metrics.attach(self.view)
        if self.config.metrics_port is not None:  # scrapes see the stages from the first one on
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)

    async def _compose(self, display: DisplayFactory | None) -> RunResult | None:
        loop = asyncio.get_running_loop()
        bulk = AsyncPipelineOrchestrator(self.engine.file_stages(), on_event=self._on_event,
                                         grace_seconds=self.config.pipeline.grace_seconds)
        self._attach(bulk)
        if self.engine.runs_live:
            hub = self.hub = self.view.hub = LiveHub(self.config, self.ctx.registry, self.ctx.layout, loop)
            self.ctx.go_live = lambda start: hub.add(start.source, start.url, start.options, start.ends_cleanly)
        if self.request.watch:
            self.watcher = FolderWatcher(self.request.watch, self.config.watch,
                                         first_order=(len(self.request.inputs) + 1) * ORDER_STRIDE, stride=ORDER_STRIDE)
        handled = self._handle_signals(loop)
        if self.request.stop is not None:
            self.request.stop.listen(lambda: self._stop_from_thread(loop))
        try:
            with display(self.view) if display else nullcontext():
                return await self._run_all(bulk)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.hub is not None:
                self.hub.stop()
                await asyncio.to_thread(self.hub.join)

    async def _run_all(self, bulk: AsyncPipelineOrchestrator) -> RunResult | None:
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
        return results[0]

    async def _run_bulk(self, bulk: AsyncPipelineOrchestrator) -> RunResult | None:
        try:
            result = await bulk.run(self._bulk_inputs())
            if self.hub is not None:
                await self.live_listed.wait()
            return result
        finally:
            # Only the file pipeline's download stage finds new live sources (yt-dlp's is_live).
            if self.hub is not None:
                self.hub.no_more_sources()

    async def _bulk_inputs(self) -> AsyncIterator[StageMessage[VideoItem]]:
        for src in self.bulk:
            yield message(src)
        if self.watcher is None:
            return
        async for src in self.watcher.sources():
            to_run, _ = select_sources([src], self.ctx.registry, self.config, self.request.retry_failed)
            self.watched.add(src.video_id)
            if to_run:
                self.view.progress.total += 1
                yield message(src)

    async def _run_live(self, hub: LiveHub) -> RunResult | None:
        """The live pipeline, started with the first live source (a listed one, or a URL the
        download stage finds to be live): until then its workers would only hold batches back."""
        engine = self.engine
        try:
            if self.live:
                # Frames are read from the moment a source opens: the model is ready first, so the
                # first frames do not wait seconds for it (a camera's stream has no start to miss).
                await asyncio.to_thread(engine.warm_up_live)
            for src in self.live:
                hub.add(src)
        finally:
            self.live_listed.set()
        if not await hub.first_source():
            return None
        live = AsyncPipelineOrchestrator(engine.live_stages(hub), on_event=hub.on_event,
                                         grace_seconds=self.config.pipeline.grace_seconds, keep_outcomes=False)
        self.view.runners.append(live)
        if self.stops:
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
                await asyncio.to_thread(self.export)
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
        if self.stops == 0:
            self.stop()
        else:
            for runner in self.view.runners:
                if isinstance(runner, AsyncPipelineOrchestrator):
                    runner.abort()

    def _stop_from_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # A signal set after the run ended finds the loop closed: nothing left to stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.stop)

    def stop(self) -> None:
        """Take no new work (inputs, frames, files); what is in flight finishes."""
        self.stops += 1
        self.ctx.env.hosts.stop.set()  # no download waits out a host's pause any more
        if self.watcher is not None:
            self.watcher.stop()
        if self.hub is not None:
            self.hub.stop()
        self.view.request_stop()

