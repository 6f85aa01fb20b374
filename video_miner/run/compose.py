"""One mining run: lock and prepare the output folder and registry, run the stages on the engine
chosen for the request, then resolve duplicates, export and report. The CLI is a thin layer over
:func:`mine`."""

from __future__ import annotations

import sqlite3
import time

from ..detect.detector import Detector, FilesDetector, detector_spec, on_files
from ..detect.model_graph import ModelGraph
from ..inputs.listing import Source, expand_sources, read_input_lines
from ..observe.metrics import RunEnd, RunMetrics
from ..observe.publish import Publisher
from ..observe.view import RunProgress, RunView
from ..records import UNFINISHED
from ..redact import Redactor
from ..stages.context import MiningContext, StageEnv
from ..store.lock import OutputLock
from .engine import Engine, LocalEngine
from .finish import Exporter, RunOutcome, report
from .loop import DisplayFactory, RunLoop
from .prepare import check_request, prepare_output, select_sources
from .request import MiningReport, RunRequest


def mine(request: RunRequest, display: DisplayFactory | None = None, metrics: RunMetrics | None = None) -> MiningReport:
    """Run one mining job. ``metrics`` (one is made if not given) hears every engine event and
    writes metrics.json; with ``metrics_port`` set it serves Prometheus while the run goes; with a
    Pushgateway or a textfile set, the figures go there while it runs and when it ends, however."""
    started = time.monotonic()
    config = request.config
    sources = expand_sources(read_input_lines(request.inputs))
    check_request(request, sources)
    metrics = metrics or RunMetrics()
    # Before anything is loaded or written: a second run on the same folder stops here at once.
    with OutputLock(config.output_dir, request.command, Redactor.with_extra(config.secret_params)):
        # A bad model or an unknown class fails here, before any download.
        detector = ModelGraph(config) if config.models else Detector(detector_spec(config))
        labeller, previous = _label_model(request), _previous_model(request)
        registry = prepare_output(config, request.fresh)
        ctx = MiningContext(StageEnv.of(config, config.output_dir), registry)
        publisher = Publisher(config, metrics)
        end: RunEnd | None = None
        try:
            exporter = Exporter(ctx, labeller, batch=detector.batch_size, previous=previous)
            with publisher.periodically():
                report = _run(request, ctx, sources, detector, exporter, metrics, display, started)
            end = RunEnd(report.videos_done, len(report.failures), report.export.kept, success=not report.failures)
            return report
        finally:
            # Whatever happened (failed videos, Ctrl-C, a full disk): the outcome is pushed and written.
            metrics.finish(end or _interrupted(ctx))
            publisher.publish()
            metrics.close(config.metrics.linger_s)
            registry.close()


def _run(request: RunRequest, ctx: MiningContext, sources: list[Source], detector: Detector | ModelGraph,
         exporter: Exporter, metrics: RunMetrics, display: DisplayFactory | None, started: float) -> MiningReport:
    """The stages on the engine the request chose, then the export and the report."""
    to_run, skipped = select_sources(sources, ctx.registry, ctx.config, request.retry_failed)
    engine = _engine(request, ctx, detector, metrics)
    view = RunView(ctx.counters, ctx.registry, RunProgress(total=sum(s.kind != "live" for s in to_run),
                                                           open_ended=bool(request.watch)))
    loop = RunLoop(request, ctx, engine, metrics, view, to_run, exporter.export)
    try:
        with engine:
            exporter.detect = engine.detect_files()
            stages_started = time.monotonic()
            result = loop.run(display)
            stages_wall = time.monotonic() - stages_started
            if ctx.fault is not None:
                # The disk is full (or worse): no export; the last dataset stays as it was.
                raise ctx.fault
            summary = exporter.export()
        return report(ctx, metrics, sources, RunOutcome(result, summary, stages_wall, started, skipped,
                                                        loop.stops > 0, loop.watched))
    finally:
        if loop.hub is not None:
            loop.hub.cleanup()


def _interrupted(ctx: MiningContext) -> RunEnd:
    """A run that ended without its report (a fault, Ctrl-C twice): what the registry says."""
    try:
        counts = ctx.registry.counts_by_state()
    except (OSError, sqlite3.Error):  # the registry is what failed: nothing more to say
        counts = {}
    unfinished = sum(counts.get(state.value, 0) for state in UNFINISHED)
    return RunEnd(counts.get("done", 0), counts.get("failed", 0) + unfinished, ctx.counters.get("frames_kept"),
                  success=False)


def _engine(request: RunRequest, ctx: MiningContext, detector: Detector | ModelGraph, metrics: RunMetrics) -> Engine:
    """The one place the engine is chosen."""
    if request.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(ctx, detector, request.ray_address)
    return LocalEngine(ctx, detector, metrics, sequential=request.engine == "sequential")


def _previous_model(request: RunRequest) -> FilesDetector | None:
    """The round before's model over files (``select.previous_model``), its classes the filter's;
    loaded before anything runs, as the filter's, so a bad file fails at once."""
    config = request.config
    path = config.select.previous_model
    if path is None:
        return None
    return on_files(Detector(detector_spec(config, path, config.filter.conf)))


def _label_model(request: RunRequest) -> FilesDetector | None:
    label = request.config.label
    if not label.model:
        return None
    return on_files(Detector(detector_spec(request.config, label.model, label.conf)))
