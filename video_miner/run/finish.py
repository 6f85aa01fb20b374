"""After the stages (and every ``live.export_every_s`` while a run is open-ended): the export, and
the run's report with its metrics.json."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from async_pipeline import RunResult

from ..dataset import handover
from ..dataset.export import ExportSummary, build_dataset
from ..detect.detector import FilesDetector
from ..inputs.listing import Source
from ..observe.metrics import RunMetrics
from ..records import UNFINISHED, State, VideoRow
from ..redact import Redactor, cell
from ..stages.context import MiningContext
from ..store.files import write_text
from ..store.layout import FAILURES, OutputLayout
from .request import Failure, MiningReport


@dataclass
class Exporter:
    """Builds the dataset from everything done so far; one export at a time."""

    ctx: MiningContext
    #: A second model that labels the kept frames (``label.model``).
    labeller: FilesDetector | None
    #: The filter's model over files, for the deferred frames the dedup still needs.
    detect: FilesDetector | None = None
    batch: int = 8
    #: The round before's model (``select.previous_model``), for the frames it has not seen.
    previous: FilesDetector | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def export(self) -> ExportSummary:
        with self._lock:
            summary = build_dataset(self.ctx.registry, self.ctx.config, self.ctx.output, self.labeller, self.detect,
                                    self.batch, self.previous)
            for fmt in self.ctx.config.export.formats:
                if fmt in handover.FORMATS:  # for labelling tools: every kept frame, recorded as handed over
                    handover.export(self.ctx.output, fmt)
            return summary


@dataclass
class RunOutcome:
    """What the run did, for its report."""

    result: RunResult | None
    summary: ExportSummary
    stages_wall: float
    started: float
    skipped: int
    stopped: bool
    #: Videos that came from watched folders.
    watched: set[str] = field(default_factory=set)


def report(ctx: MiningContext, metrics: RunMetrics, sources: list[Source], done: RunOutcome) -> MiningReport:
    """The run's report; metrics.json too, unless the run had nothing to do (a re-run keeps the
    last real run's)."""
    summary = done.summary
    ctx.counters.add(frames_kept=summary.kept, frames_duplicates=summary.duplicates,
                     frames_to_detector=summary.detected_at_export)
    rows = _videos_of(ctx, sources, done.watched)
    redact = Redactor.with_extra(ctx.config.secret_params)
    failures = [Failure(r.video_id, redact.url(r.input), r.error_class or "error", redact.text(r.error_message or ""))
                for r in rows if r.state == State.FAILED]
    unfinished = [Failure(r.video_id, redact.url(r.input), "unfinished", "stopped before it finished; run the same "
                          "command again to resume")
                  for r in rows if r.state in UNFINISHED and r.kind not in ("invalid", "live")]
    failures_file = write_failures(ctx.layout, failures + unfinished)
    counters = ctx.counters.as_dict()
    live = metrics.live()
    if done.result is not None or live:
        metrics.write(ctx.output / "metrics.json", _totals(rows, failures, summary, counters, done), done.stages_wall,
                      live=live, hard_by_class=summary.hard_by_class)
    videos = [r for r in rows if r.kind != "live"]
    return MiningReport(
        output=ctx.output,
        videos_total=sum(r.state != State.SKIPPED for r in videos),
        videos_done=sum(r.state == State.DONE for r in videos),
        videos_skipped=done.skipped,
        failures=failures + unfinished,
        export=summary,
        counters=counters,
        wall_seconds=time.monotonic() - done.started,
        stopped=bool(done.result and done.result.stopped) or done.stopped,
        warnings=[(redact.url(r.input), redact.text(r.warning)) for r in rows if r.warning and r.state == State.DONE],
        result=done.result,
        live=live,
        failures_file=failures_file,
    )


def write_failures(layout: OutputLayout, failures: list[Failure]) -> Path | None:
    """``failures.tsv``: class, message, input, a line each (tabs and line breaks in them shown
    escaped); None, and no file, when nothing failed."""
    path = layout.output / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return None
    lines = ["class\tmessage\tinput"] + ["\t".join(cell(v) for v in (f.kind, f.message, f.input)) for f in failures]
    write_text(path, "\n".join(lines) + "\n", layout.output)
    return path


def _videos_of(ctx: MiningContext, sources: list[Source], watched: set[str]) -> list[VideoRow]:
    """The run's videos: the listed inputs, watched files, playlist entries (a live source's
    segments are not videos)."""
    ids = {s.video_id for s in sources}
    return [r for r in ctx.registry.videos()
            if r.video_id in ids or (r.parent in ids and r.kind != "live") or r.video_id in watched]


def _totals(rows: list[VideoRow], failures: list[Failure], summary: ExportSummary, counters: dict[str, int],
            done: RunOutcome) -> dict[str, int | float]:
    return {
        "videos": len(rows), "videos_done": sum(r.state == State.DONE for r in rows),
        "videos_failed": len(failures), "frames": summary.frames, "kept": summary.kept,
        "duplicates": summary.duplicates, "left_out": summary.left_out, "filtered": summary.filtered,
        "frames_to_detector": counters.get("frames_to_detector", 0),
        "frames_deferred": counters.get("frames_deferred", 0),
        "bytes_downloaded": counters.get("bytes_downloaded", 0),
        **({"tracks": summary.tracks, "hard": summary.hard} if summary.tracks or summary.hard else {}),
        "wall_seconds": round(time.monotonic() - done.started, 3), "stages_seconds": round(done.stages_wall, 3),
    }
