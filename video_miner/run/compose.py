"""One mining run: lock and prepare the output folder and registry, run the stages on the engine
chosen for the request, then resolve duplicates, export and report. The CLI is a thin layer over
:func:`mine`."""

from __future__ import annotations

import time

from ..detect.detector import Detector, FilesDetector, detector_spec, on_files
from ..inputs.listing import expand_sources, read_input_lines
from ..observe.metrics import RunMetrics
from ..observe.view import RunProgress, RunView
from ..stages.context import MiningContext, StageEnv
from ..store.lock import OutputLock
from .engine import Engine, LocalEngine
from .finish import Exporter, RunOutcome, report
from .loop import DisplayFactory, RunLoop
from .prepare import check_request, prepare_output, select_sources
from .request import MiningReport, RunRequest


def mine(request: RunRequest, display: DisplayFactory | None = None, metrics: RunMetrics | None = None) -> MiningReport:
    """Run one mining job. ``metrics`` (one is made if not given) hears every engine event and
    writes metrics.json; with ``metrics_port`` set it serves Prometheus while the run goes."""
    started = time.monotonic()
    config = request.config
    sources = expand_sources(read_input_lines(request.inputs))
    check_request(request, sources)
    metrics = metrics or RunMetrics()
    # Before anything is loaded or written: a second run on the same folder stops here at once.
    with OutputLock(config.output_dir, request.command):
        detector = Detector(detector_spec(config))  # a bad model or unknown class fails before any download
        labeller = _label_model(request)
        registry = prepare_output(config, request.fresh)
        ctx = MiningContext(StageEnv.of(config, config.output_dir), registry)
        try:
            to_run, skipped = select_sources(sources, registry, config, request.retry_failed)
            engine = _engine(request, ctx, detector, metrics)
            view = RunView(ctx.counters, registry, RunProgress(total=sum(s.kind != "live" for s in to_run),
                                                               open_ended=bool(request.watch)))
            exporter = Exporter(ctx, labeller, batch=detector.batch_size)
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
                metrics.close()
        finally:
            registry.close()


def _engine(request: RunRequest, ctx: MiningContext, detector: Detector, metrics: RunMetrics) -> Engine:
    """The one place the engine is chosen."""
    if request.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(ctx, detector, request.ray_address)
    return LocalEngine(ctx, detector, metrics, sequential=request.engine == "sequential")


def _label_model(request: RunRequest) -> FilesDetector | None:
    label = request.config.label
    if not label.model:
        return None
    return on_files(Detector(detector_spec(request.config, label.model, label.conf)))
