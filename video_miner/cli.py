"""The ``video-miner`` command: run, status, report, repair, doctor.

Every command ends with one line and an exit code, never a traceback, for anything a user can fix
(a setting, an input, the disk, a second run on the same folder, a damaged registry): 0 when all
went well, 1 when some videos failed or the machine got in the way, 2 for what must be fixed before
a run can start. ``--debug`` (or ``VIDEO_MINER_DEBUG=1``) adds the traceback, for bug reports.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from async_pipeline import PipelineError

from .config import MinerConfig, load_config
from .errors import ConfigError, MinerError, ModelError, RegistryDamaged, UnsafePath, environment_error
from .redact import RedactingFilter, plain
from .store.lock import OutputBusy

if TYPE_CHECKING:  # the run's modules load torch: only a command that runs one imports them
    from .run.request import Failure, MiningReport, RunRequest

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn videos into clean, labelled, deduplicated image datasets.")
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
#: Failures that must be fixed before a run can start.
USAGE_ERRORS = (ConfigError, ModelError, OutputBusy, RegistryDamaged, UnsafePath)
T = TypeVar("T")


@app.callback()
def main_options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (for bug reports); also "
                                                                      "VIDEO_MINER_DEBUG=1.")] = False) -> None:
    if debug:
        os.environ["VIDEO_MINER_DEBUG"] = "1"


#: glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def _few_malloc_arenas() -> None:
    """Filter workers decode frames in many threads and the detector's thread frees them: with a
    malloc arena per thread (glibc's default, up to 8 per core) memory fragments across arenas and
    peak RSS grows with the videos in flight (bench: 1.76 GiB for 50 videos, 1.35 with two arenas).
    Has no effect off glibc, or when MALLOC_ARENA_MAX is set."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).mallopt(_M_ARENA_MAX, 2)


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Ultralytics logs each model load at INFO on its own handler, and sets that level when first
    # imported: import it, then keep its warnings only.
    from ultralytics.utils import LOGGER as ultralytics_log

    ultralytics_log.setLevel(logging.WARNING)
    # Whatever logs a URL (yt-dlp, a stream's reader, FFmpeg's messages) logs it without its secrets.
    for handler in (*logging.getLogger().handlers, *ultralytics_log.handlers):
        handler.addFilter(RedactingFilter())


def _debug() -> bool:
    return os.environ.get("VIDEO_MINER_DEBUG", "") not in ("", "0")


def _error(console: Console, message: str, code: int) -> typer.Exit:
    if _debug() and sys.exc_info()[1] is not None:  # some errors are found, not raised: no traceback
        console.print_exception()
    # A line per setting when a config has several problems; each as plain text (a URL in it may
    # hold "[/x]", a name an escape sequence).
    for k, line in enumerate(message.splitlines() or [""]):
        console.print(("[red]error:[/red] " if k == 0 else "  ") + plain(line), soft_wrap=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def user_errors(console: Console, where: Path | None = None) -> Iterator[None]:
    """Turn whatever a command raises into one line and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except USAGE_ERRORS as exc:
        raise _error(console, str(exc), EXIT_USAGE) from None
    except PipelineError as exc:
        fault = environment_error(exc.cause, where)
        raise _error(console, str(fault or exc), EXIT_FAILURES) from None
    except MinerError as exc:
        raise _error(console, str(exc), EXIT_FAILURES) from None
    except (OSError, sqlite3.Error) as exc:
        fault = environment_error(exc, where)
        if fault is None:
            raise _error(console, _words(exc), EXIT_FAILURES) from None
        raise _error(console, str(fault), EXIT_USAGE if isinstance(fault, USAGE_ERRORS) else EXIT_FAILURES) from None
    except KeyboardInterrupt:
        raise _error(console, "interrupted; run the same command again to resume", 130) from None
    except Exception as exc:
        raise _error(console, f"unexpected error: {exc or 'no message'} (a bug: run again with --debug and report "
                              "the traceback)", EXIT_FAILURES) from None


def _words(exc: OSError | sqlite3.Error) -> str:
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"cannot read or write{where}: {exc.strerror or exc}"
    return f"the registry refused a change ({exc}); a bug: run again with --debug and report the traceback"


#: ``--debug`` after a command, as before it.
Debug = Annotated[bool, typer.Option("--debug", help="Tracebacks, for bug reports.")]

#: run's option panels, in the order --help shows them.
INPUTS, MODEL_PANEL, SELECTION, OUTPUT, METRICS, ENGINE = ("Inputs", "Model", "Sampling and selection", "Output",
                                                          "Metrics", "Engine")


@app.command()
def run(
    inputs: Annotated[list[str] | None, typer.Argument(metavar="INPUT...", help="Inputs (URLs, paths, folders, "
                                                       "rtsp:// streams, /dev/video0) and/or list files of them.",
                                                       show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", metavar="YAML", rich_help_panel=INPUTS,
                                                help="The dataset's config.")] = None,
    watch: Annotated[list[Path] | None, typer.Option(metavar="DIR", rich_help_panel=INPUTS,
                                                     help="Mine every video that appears in DIR (repeatable), "
                                                          "until Ctrl-C or --duration.")] = None,
    duration: Annotated[float | None, typer.Option(metavar="S", rich_help_panel=INPUTS,
                                                   help="Stop taking new work after S seconds; export.")] = None,
    cookies_from_browser: Annotated[str | None, typer.Option(metavar="BROWSER", rich_help_panel=INPUTS,
                                                             help="yt-dlp: this browser's cookies (firefox, "
                                                                  "chrome+gnomekeyring:Profile 1, ...).")]
    = None,
    model: Annotated[str | None, typer.Option(metavar="MODEL", rich_help_panel=MODEL_PANEL,
                                              help="Any model Ultralytics loads (.pt, .onnx, ...).")] = None,
    classes: Annotated[str | None, typer.Option(metavar="A,B", rich_help_panel=MODEL_PANEL,
                                                help="Classes to keep, e.g. person,car.")] = None,
    conf: Annotated[float | None, typer.Option(metavar="X", rich_help_panel=MODEL_PANEL,
                                               help="Minimum detection confidence.")] = None,
    device: Annotated[str | None, typer.Option(metavar="DEV", rich_help_panel=MODEL_PANEL,
                                               help="auto, cpu, cuda, cuda:N, mps.")] = None,
    previous_model: Annotated[str | None, typer.Option(
        metavar="MODEL", rich_help_panel=MODEL_PANEL,
        help="The round before's model: frames where it and --model disagree are hard (select.previous_model).")]
    = None,
    fps: Annotated[float | None, typer.Option(metavar="N", rich_help_panel=SELECTION,
                                              help="Frames sampled per second.")] = None,
    budget: Annotated[int | None, typer.Option(min=1, metavar="N", rich_help_panel=SELECTION,
                                               help="Keep the N frames that cover the rest best (select.budget).")]
    = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="DIR", rich_help_panel=OUTPUT,
                                                help="Output folder (default out/<name>).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", rich_help_panel=OUTPUT,
                                        help="Forget earlier progress in the output folder.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", rich_help_panel=OUTPUT,
                                               help="Retry only the videos that failed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", rich_help_panel=OUTPUT,
                                          help="Say what the dataset would gain and lose with these settings, "
                                               "from what is already mined, and why; write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT, help="No progress display.")]
    = False,
    progress_every: Annotated[float, typer.Option(min=0.05, metavar="S", rich_help_panel=OUTPUT,
                                                  help="Not a terminal: a progress line every S seconds.")] = 5.0,
    profile: Annotated[bool, typer.Option("--profile", rich_help_panel=OUTPUT,
                                          help="Profile; writes profile.pstats/.txt.")] = False,
    debug: Annotated[bool, typer.Option("--debug", rich_help_panel=OUTPUT, help="Tracebacks, for bug reports.")]
    = False,
    metrics_port: Annotated[int | None, typer.Option(metavar="PORT", rich_help_panel=METRICS,
                                                     help="Serve Prometheus metrics on this port.")] = None,
    metrics_host: Annotated[str | None, typer.Option(metavar="HOST", rich_help_panel=METRICS,
                                                     help="Address for --metrics-port (127.0.0.1).")] = None,
    metrics_linger: Annotated[float | None, typer.Option(metavar="S", rich_help_panel=METRICS,
                                                         help="Serve the final values S seconds more.")] = None,
    pushgateway: Annotated[str | None, typer.Option(metavar="URL", rich_help_panel=METRICS,
                                                    help="Push to this Pushgateway while running and at the end.")]
    = None,
    metrics_textfile: Annotated[Path | None, typer.Option(metavar="FILE", rich_help_panel=METRICS,
                                                          help="Write them for node_exporter's textfile collector.")]
    = None,
    sequential: Annotated[bool, typer.Option("--sequential", rich_help_panel=ENGINE,
                                             help="One video at a time, no stage pipeline.")] = False,
    async_mode: Annotated[bool, typer.Option("--async-mode", hidden=True, help="The stage pipeline (the default).")]
    = True,
    jobs: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=ENGINE,
                                      help="With --sequential: videos at a time.")] = 1,
    engine: Annotated[str, typer.Option(metavar="NAME", rich_help_panel=ENGINE,
                                        help="local (this machine) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[str | None, typer.Option(metavar="ADDR", rich_help_panel=ENGINE,
                                                    help="With --engine ray: the cluster (else RAY_ADDRESS).")] = None,
    shared_storage: Annotated[str | None, typer.Option(metavar="URL", rich_help_panel=ENGINE,
                                                       help="With --engine ray: where nodes exchange work files "
                                                            "(s3://..., no shared filesystem).")] = None,
) -> None:
    """Mine frames showing the wanted classes from videos into a deduplicated, labelled dataset."""
    main_options(debug)
    _few_malloc_arenas()
    from .run.request import RunRequest

    console = Console()
    overrides: dict[str, Any] = {
        "output": str(output) if output else None,
        "filter.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        "filter.model": model, "filter.conf": conf, "filter.device": device,
        "extract.fps": fps, "extract.mode": "fps" if fps is not None else None,
        "metrics_port": metrics_port, "metrics_host": metrics_host, "metrics.linger_s": metrics_linger,
        "metrics.pushgateway": pushgateway, "metrics.textfile": str(metrics_textfile) if metrics_textfile else None,
        "ray.shared_storage": shared_storage, "download.cookies_from_browser": cookies_from_browser,
        "select.budget": budget, "select.previous_model": previous_model,
    }
    _quiet_logs()
    # torch and Ultralytics leave hundreds of thousands of long-lived objects that every full garbage
    # collection walks again, and the interpreter's exit once more (bench: ~1 s in all). Frozen, the
    # collector skips them; the objects the run makes are frozen before exit for the same reason.
    gc.freeze()
    with user_errors(console, output):
        cfg = load_config(config, overrides)
        if dry_run:
            _dry_run(console, cfg)
            raise typer.Exit(EXIT_OK)
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {engine!r}")
        request = RunRequest(inputs=inputs or [], config=cfg, jobs=jobs, fresh=fresh, retry_failed=retry_failed,
                             handle_signals=True, ray_address=ray_address, watch=list(watch or []),
                             duration_s=duration, command=["video-miner", *sys.argv[1:]],
                             engine="ray" if engine == "ray" else "sequential" if sequential else "async")
        report = _mine(console, request, None if quiet else progress_every, profile)
    gc.freeze()
    _print_summary(console, report)
    raise typer.Exit(EXIT_FAILURES if report.failures else EXIT_OK)


def _dry_run(console: Console, cfg: MinerConfig) -> None:
    """``run --dry-run``: the export's choice with ``cfg`` over the registry, against the dataset."""
    from .dataset.export import plan_export
    from .run.prepare import check_settings
    from .store.registry import Registry

    output = cfg.output_dir
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    if not (output / "registry.sqlite").is_file():
        raise ConfigError(f"{output} holds no video-miner run yet; a dry run answers from what is mined")
    registry = Registry(output / "registry.sqlite", readonly=True)
    try:
        check_settings(registry, cfg, output)
        plan = plan_export(registry, cfg, output)
    finally:
        registry.close()
    if plan.undetected:
        say(f"{plan.undetected} frames would be detected first (deferred ones by the detector, frames "
            "select.previous_model has not seen by it): what they change cannot be said without them; run without "
            "--dry-run")
        return
    for frame, was in plan.joining:
        say(f"[green]+[/green] {plain(frame)} would be kept (now: {plain(was)})")
    for frame, decision, why in plan.leaving:
        say(f"[red]-[/red] {plain(frame)} would be {plain(decision)}: {plain(why)}")
    say(f"dry run: {len(plan.joining)} frames would join the dataset, {len(plan.leaving)} would leave it; "
        "nothing was written")


def _mine(console: Console, request: RunRequest, progress_every: float | None, profile: bool) -> MiningReport:
    """The run, with the live display unless quiet (``progress_every`` None), profiled if asked."""
    from .observe.profiling import profile_all_threads
    from .observe.progress import live_display
    from .observe.view import RunView
    from .run.compose import mine

    display: Callable[[RunView], Any] | None = None
    if progress_every is not None:
        every = progress_every

        def display(view: RunView) -> Any:
            return live_display(view, console, every)

    with profile_all_threads(request.config.output_dir) if profile else contextlib.nullcontext():
        return mine(request, display=display)


def _print_summary(console: Console, report: MiningReport) -> None:
    e = report.export
    # soft_wrap: each is one line in a log file, whatever the width, so grep finds it whole.
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    say(f"[bold]done[/bold] in {report.wall_seconds:.1f}s: videos {report.videos_done}/{report.videos_total} done"
        f" ({report.videos_skipped} already done before), {len(report.failures)} failed | frames {e.frames}: "
        f"kept {e.kept}, duplicates {e.duplicates}, left out {e.left_out}, filtered out {e.filtered}"
        + (f" | tracks {e.tracks}, hard {e.hard}" if e.tracks or e.hard else "")
        + (" (" + ", ".join(f"{plain(c)} {n}" for c, n in e.hard_by_class.items()) + ")" if e.hard_by_class else "")
        + (f" | {e.disagree} frames the previous model disagrees on" if e.disagree else ""))
    for source, s in report.live.items():
        say(f"live {plain(source)}: {s.state}, frames {s.frames_captured} received, {s.frames_sampled} sampled, "
            f"{s.frames_dropped} dropped, {s.frames_decided} decided, latency p50 {s.latency_p50_s:.2f}s "
            f"p95 {s.latency_p95_s:.2f}s, {s.reconnects} reconnects"
            + (f", {s.tracks_new} new objects tracked" if s.tracks_new else ""))
    dataset = report.output / "dataset"
    say(f"dataset: {plain(str(dataset))} (train with: yolo train data={plain(str(dataset / 'data.yaml'))})")
    if report.stopped:
        say("[yellow]stopped early[/yellow]: run the same command again to resume.")
    for source, warning in report.warnings[:SUMMARY_LINES]:
        say(f"[yellow]warning[/yellow] {plain(source)}: {plain(warning)}")
    if len(report.warnings) > SUMMARY_LINES:
        say(f"[yellow]warning[/yellow] ... {len(report.warnings) - SUMMARY_LINES} more: video-miner status -o "
            f"{plain(str(report.output))}")
    _print_failures(say, report)


#: Failures (and warnings) printed one by one; past this many they are grouped by class.
SUMMARY_LINES = 10
#: Inputs named for each class of a grouped summary.
EXAMPLES = 3


def _print_failures(say: Callable[[str], None], report: MiningReport) -> None:
    failures = report.failures
    if len(failures) <= SUMMARY_LINES:
        for failure in failures:
            say(f"[red]failed[/red] {plain(failure.line())}")
    else:
        by_kind: dict[str, list[Failure]] = {}
        for failure in failures:
            by_kind.setdefault(failure.kind, []).append(failure)
        for kind, group in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            examples = "; ".join(f"{f.input}: {f.message}" for f in group[:EXAMPLES])
            say(f"[red]failed[/red] {len(group)} {plain(kind)}, e.g. {plain(examples)}")
    if failures and report.failures_file is not None:
        say(f"every failed input, with its class and message: {plain(str(report.failures_file))} "
            f"(or video-miner status --failed -o {plain(str(report.output))})")


@app.command("export")
def export_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="label-studio, cvat, hf, fiftyone or mot (tracks).")],
    dest: Annotated[Path | None, typer.Option(help="Where to write it: a new or empty folder, or an earlier export "
                                                   "of this dataset (default <output>/exports/<format>/all, or "
                                                   "/batch-NNNN with --new-only).")] = None,
    new_only: Annotated[bool, typer.Option(help="Only the frames kept since the last export of this format.")] = False,
    image_root: Annotated[str | None, typer.Option(help="Label Studio: the URL prefix its images are served from "
                                                        "(default /data/local-files/?d=images).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help=(
        "At most this many frames, those most worth a review first: where select.previous_model disagrees, "
        "then where the model contradicts itself along a track, then the least confident; the rest wait for "
        "the next --new-only batch."))] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help=(
        "Say which frames the export would hand over, and why each comes where it does; write nothing."))] = False,
    debug: Debug = False,
) -> None:
    """The dataset for a labelling tool or a trainer: Label Studio tasks with pre-annotations, CVAT
    (COCO 1.0 and CVAT XML), FiftyOne, Hugging Face Parquet. Every export records what it handed over."""
    main_options(debug)
    from .dataset.handover import export, plan, why_first

    console = Console()
    _need_run(console, output, "dataset")
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    if dry_run:
        with user_errors(console, output):
            planned, number = plan(output, fmt, new_only, limit)
        where = f"batch {number}" if new_only else "all"
        say(f"{len(planned.frames)} frames would go to {fmt} ({where}); nothing written")
        for frame in planned.frames:
            say(f"  {plain(frame.row.frame)}: {plain(why_first(frame))}")
        return
    with user_errors(console, output):
        batch = export(output, fmt, dest, new_only, image_root, limit)
    for note in batch.notes:
        say(f"[yellow]warning[/yellow] {plain(note)}")
    if batch.dest is None:
        say(f"nothing new for {fmt} since its last export: no batch written")
    else:
        say(f"{len(batch.frames)} frames for {fmt}: {plain(str(batch.dest))}")


@app.command("import")
def import_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")],
    fmt: Annotated[str, typer.Option("--format", help=(
        "label-studio (its JSON export), cvat ('CVAT for images 1.1' XML), coco (COCO 1.0 JSON), "
        "fiftyone (an exported dataset: samples.json, boxes in ground_truth) or yolo (a labels folder)."))],
    source: Annotated[Path | None, typer.Argument(
        help="The tool's export: its file, or the folder it unpacked to (not with --url).")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="A running Label Studio server to read project --project from, instead of a file: its "
                      "token in LABEL_STUDIO_API_KEY (never printed).")] = None,
    project: Annotated[int | None, typer.Option("--project", help="The Label Studio project's id (with --url).")] = None,
    debug: Debug = False,
) -> None:
    """Reviewed labels back from a labelling tool: each frame's latest review is recorded (every
    revision is kept; the model's boxes too) and wins from the next export on; a skipped task
    rejects its frame; classes a reviewer added join the dataset's. Run the same `video-miner run`
    command again to rebuild the dataset with them. CVAT: an image tag `rejected` rejects the
    frame; FiftyOne: a sample tag `rejected`."""
    main_options(debug)
    from .dataset.label_studio_api import TOKEN_ENV
    from .dataset.review import read_reviews, read_server_reviews
    from .store.lock import OutputLock
    from .store.registry import Registry

    console = Console()
    _need_run(console, output, "dataset")
    # Under the output's lock, as repair takes it: while a run holds the folder, import stops at
    # once with a line naming that run (its export would race the new revisions).
    with user_errors(console, output), OutputLock(output):
        if source is not None and url is None and project is None:
            imported = read_reviews(output, fmt, source)
        elif source is None and url is not None and project is not None and fmt == "label-studio":
            imported = read_server_reviews(output, url, project, os.environ.get(TOKEN_ENV))
        else:
            raise ConfigError("import reads either a tool's export (--format FORMAT SOURCE) or a Label Studio "
                              "server (--format label-studio --url URL --project ID): give one of them")
        registry = Registry(output / "registry.sqlite")
        try:
            added = registry.add_reviews(imported.reviews)
        finally:
            registry.close()
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    for note in imported.notes:
        say(f"[yellow]warning[/yellow] {plain(note)}")
    rejected = sum(r.rejected for r in imported.reviews)
    say(f"{len(imported.reviews)} reviewed frames read ({rejected} rejected), {added} new revisions recorded"
        + ("; run the same `video-miner run` command again to rebuild the dataset with them" if added else ""))


@app.command()
def review(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")],
    debug: Debug = False,
) -> None:
    """How wrong the mining model was, against the reviewed labels: precision, recall and AP50 per
    class, the classes reviewers changed, the frames they corrected most; and review.png."""
    main_options(debug)
    from rich.table import Table

    from .dataset.review import compare, plot_review
    from .store.registry import Registry

    console = Console()
    _need_run(console, output, "registry.sqlite")
    with user_errors(console, output):
        registry = Registry(output / "registry.sqlite", readonly=True)
        try:
            reviews = registry.latest_reviews()
            model = {r.key: [d for d in r.detections if d.conf > 0] for r in registry.done_frames() if r.key in reviews}
        finally:
            registry.close()
        if not reviews:
            raise ConfigError(f"{output} holds no reviews yet: video-miner import one from a labelling tool first")
        result = compare(model, reviews)
        path = plot_review(result, output / "review.png", output)
    table = Table(title=f"{result.frames} reviewed frames ({result.rejected} rejected); mAP50 {result.map50:.3f}")
    for column in ("class", "reviewed boxes", "model boxes", "precision", "recall", "AP50"):
        table.add_column(column)
    for c in result.classes:
        table.add_row(plain(c.label), str(c.reviewed), str(c.found), f"{c.precision:.3f}", f"{c.recall:.3f}",
                      f"{c.ap50:.3f}")
    console.print(table)
    for (was, now), n in sorted(result.confusions.items(), key=lambda kv: -kv[1]):
        console.print(f"re-classed: {plain(was)} -> {plain(now)}: {n}", highlight=False, soft_wrap=True)
    for frame, n in result.most_corrected:
        console.print(f"corrected: {plain(frame)}: {n}", highlight=False, soft_wrap=True)
    console.print(f"plot: {path}", highlight=False, soft_wrap=True)


@app.command("diff")
def diff_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="label-studio, cvat, hf, fiftyone or mot (tracks).")] = "label-studio",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: added and removed frames.")] = False,
    debug: Debug = False,
) -> None:
    """What the dataset gained and lost since the last export of a format: frames kept since, and
    frames handed over then that are no longer kept (now a duplicate of a better copy, say)."""
    main_options(debug)
    import json

    from .dataset.handover import diff

    console = Console()
    _need_run(console, output, "dataset")
    with user_errors(console, output):
        changes = diff(output, fmt)
    if as_json:
        sys.stdout.write(json.dumps(changes.as_json()) + "\n")
        return
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    for note in changes.notes:
        say(f"[yellow]warning[/yellow] {plain(note)}")
    for row in changes.added:
        say(f"+ {plain(row.frame)}")
    for key, why in changes.removed:
        say(f"- {plain(key)}: {plain(why)}")
    say(f"{len(changes.added)} added, {len(changes.removed)} removed since the last {fmt} export")


def _need_run(console: Console, output: Path, file: str) -> None:
    if not (output / file).exists():
        what = "no registry.sqlite" if file == "registry.sqlite" else f"no {file}"
        raise _error(console, f"{output} holds no video-miner run ({what}); run video-miner run first or pass --output",
                     EXIT_USAGE)


@app.command()
def status(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")] = Path("out/dataset"),
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed inputs, a line each (class, message, "
                                                          "input; tab-separated).")] = False,
    debug: Debug = False,
) -> None:
    """Counts per state, failures grouped by class, and what a re-run would do (read-only: works
    while a run is going)."""
    main_options(debug)
    from .observe.status import render_status

    console = Console()
    _need_run(console, output, "registry.sqlite")
    with user_errors(console, output):
        render_status(console, output, failed_only=failed)


@app.command()
def report(output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")] = Path("out/dataset"),
           png: Annotated[Path | None, typer.Option(help="Where to write the timeline (default <output>/timeline.png).")]
           = None,
    debug: Debug = False,
) -> None:
    """The last run's metrics as tables, a timeline PNG showing the bottleneck, and gallery.html:
    the dataset to look at in a browser (offline: open the file)."""
    main_options(debug)
    from .dataset.gallery import write_gallery
    from .observe.metrics_file import read_metrics
    from .observe.report import plot_timeline, render_tables

    console = Console()
    _need_run(console, output, "metrics.json")
    with user_errors(console, output):
        data = read_metrics(output / "metrics.json")
        render_tables(console, data)
        path = plot_timeline(data, png or output / "timeline.png", None if png else output)
        console.print(f"timeline: {path}", highlight=False, soft_wrap=True)
        if (output / "dataset").is_dir():
            console.print(f"gallery: {write_gallery(output)}", highlight=False, soft_wrap=True)


@app.command()
def repair(output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")],
    debug: Debug = False,
) -> None:
    """Rebuild a damaged or lost registry from the files on disk (the damaged one is kept aside).
    Videos the files prove done stay done; the rest resume or run again with the same command."""
    main_options(debug)
    from .store.lock import OutputLock
    from .store.repair import repair as rebuild

    console = Console()
    if not output.is_dir():
        raise _error(console, f"{output} is not a folder; pass the run's --output", EXIT_USAGE)
    with user_errors(console, output), OutputLock(output):
        result = rebuild(output)
    for line in result.refused:
        console.print(f"[yellow]refused[/yellow] {plain(line)}", soft_wrap=True, highlight=False)
    resumable = ", ".join(f"{n} {state}" for state, n in result.resumable.items()) or "none"
    moved = f"the damaged registry is in {plain(str(result.moved_to))}; " if result.moved_to else ""
    console.print(f"repaired: {moved}{result.done} videos done (from the dataset's manifest), resumable: {resumable}; "
                  "run the same command again to finish and export", soft_wrap=True, highlight=False)


@app.command()
def doctor(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The dataset's YAML config.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder to check.")] = None,
    model: Annotated[str | None, typer.Option(help="Detector to check (else the config's).")] = None,
    classes: Annotated[str | None, typer.Option(help="Classes to check (else the config's).")] = None,
    engine: Annotated[str, typer.Option(help="local or ray: check what that engine needs.")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster to check (its nodes, "
                                                         "resources, and the storage from every node); else "
                                                         "RAY_ADDRESS.")] = None,
    debug: Debug = False,
) -> None:
    """Check what a run needs (yt-dlp and its JavaScript runtime, the model and its classes, the
    device, the output disk, Ray and storage when asked for; a running cluster's nodes, resources
    and storage from every node) and say how to fix each problem. Exit 0 when a run can go, 1 otherwise."""
    main_options(debug)
    from rich.markup import escape

    from .observe.doctor import FAIL, WARN, diagnose, ready

    console = Console()
    _quiet_logs()
    with user_errors(console, output):
        cfg = load_config(config, {"output": str(output) if output else None, "filter.model": model,
                                   "filter.classes": [c.strip() for c in classes.split(",")] if classes else None})
        checks = diagnose(cfg, ray_wanted=engine == "ray")
        if engine == "ray" and ready(checks):
            checks += _cluster_checks(cfg, ray_address)
    colour = {FAIL: "red", WARN: "yellow"}
    for check in checks:
        style = colour.get(check.status, "green")
        console.print(f"[{style}]{check.status:>4}[/{style}] {escape(check.name)}: {escape(check.detail)}"
                      + (f" [bold]->[/bold] {escape(check.fix)}" if check.fix else ""), soft_wrap=True, highlight=False)
    good = ready(checks)
    console.print("ready to run" if good else "not ready: fix the failures above", highlight=False)
    raise typer.Exit(EXIT_OK if good else EXIT_FAILURES)


def _cluster_checks(config: MinerConfig, address: str | None) -> list[Any]:
    """The running cluster's checks, when one is named (doctor never starts a cluster to check it)."""
    from .observe.doctor import WARN, Check

    if address is None and not os.environ.get("RAY_ADDRESS"):
        return [Check("cluster", WARN, "no cluster named: its nodes, resources and storage are not checked",
                      "give --ray-address (or set RAY_ADDRESS) to check a running cluster")]
    import ray

    from .observe.cluster import check_nodes
    from .run.ray_engine import start_ray

    started = start_ray(address)
    try:
        return check_nodes(config)
    finally:
        if started:
            ray.shutdown()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
