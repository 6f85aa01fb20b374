"""The ``video-miner`` command: run, status."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from async_pipeline import PipelineError

from .config import load_config
from .errors import ConfigError, MinerError, ModelError
from .pipeline import MiningReport, RunRequest, mine

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn videos into clean, labelled, deduplicated image datasets.")
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _fail_usage(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(EXIT_USAGE)


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(help="A list file (one input per line) and/or inputs: URLs, paths, "
                                                     "file:// URLs, folders.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The dataset's YAML config.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default out/<name>).")] = None,
    async_mode: Annotated[bool, typer.Option("--async-mode/--sequential",
                                             help="Stage-level pipeline (default) or one video at a time.")] = True,
    jobs: Annotated[int, typer.Option(min=1, help="With --sequential: videos at a time.")] = 1,
    engine: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster (else RAY_ADDRESS, else a "
                                                         "local Ray instance).")] = None,
    shared_storage: Annotated[str | None, typer.Option(help="With --engine ray: an fsspec URL (s3://bucket/prefix) "
                                                            "where nodes exchange work files (no shared filesystem).")]
    = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes to keep, e.g. person,car.")] = None,
    model: Annotated[str | None, typer.Option(help="Detector: any model Ultralytics loads (.pt, .onnx, ...).")] = None,
    conf: Annotated[float | None, typer.Option(help="Minimum detection confidence.")] = None,
    fps: Annotated[float | None, typer.Option(help="Frames sampled per second.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda:0, mps.")] = None,
    fresh: Annotated[bool, typer.Option(help="Start over: forget earlier progress in the output folder.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Retry only the videos that failed before.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    metrics_host: Annotated[str | None, typer.Option(help="Address for --metrics-port (default 127.0.0.1).")] = None,
    profile: Annotated[bool, typer.Option(help="Profile the run; writes profile.pstats/.txt beside metrics.json.")]
    = False,
) -> None:
    """Mine frames showing the wanted classes from videos into a deduplicated, labelled dataset."""
    console = Console()
    overrides: dict[str, Any] = {
        "output": str(output) if output else None,
        "filter.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        "filter.model": model,
        "filter.conf": conf,
        "filter.device": device,
        "extract.fps": fps,
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
        "ray.shared_storage": shared_storage,
    }
    if fps is not None:
        overrides["extract.mode"] = "fps"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Ultralytics logs each model load at INFO on its own handler, and sets that level when first
    # imported: import it, then keep its warnings only.
    from ultralytics.utils import LOGGER as ultralytics_log

    ultralytics_log.setLevel(logging.WARNING)
    # torch and Ultralytics leave hundreds of thousands of long-lived objects that every full garbage
    # collection walks again, and the interpreter's exit once more (bench: ~1 s in all). Frozen, the
    # collector skips them; the objects the run makes are frozen before exit for the same reason.
    gc.freeze()
    try:
        cfg = load_config(config, overrides)
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {engine!r}")
        request = RunRequest(inputs=inputs, config=cfg, jobs=jobs, fresh=fresh, retry_failed=retry_failed,
                             handle_signals=True, ray_address=ray_address,
                             engine="ray" if engine == "ray" else "async" if async_mode else "sequential")
        display = None
        if not quiet:
            from .progress import live_display

            def display(runner, ctx, progress):  # type: ignore[no-untyped-def]
                return live_display(runner, ctx, progress, console)

        if profile:
            from .profiling import profile_all_threads

            with profile_all_threads(cfg.output_dir):
                report = mine(request, display=display)
        else:
            report = mine(request, display=display)
    except (ConfigError, ModelError) as exc:
        # A model that does not load is a setting to fix, like a bad config key.
        raise _fail_usage(console, str(exc)) from None
    except (PipelineError, MinerError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_FAILURES) from None
    gc.freeze()
    _print_summary(console, report)
    raise typer.Exit(EXIT_FAILURES if report.failures else EXIT_OK)


def _print_summary(console: Console, report: MiningReport) -> None:
    e = report.export
    console.print(
        f"[bold]done[/bold] in {report.wall_seconds:.1f}s: videos {report.videos_done}/{report.videos_total} done"
        f" ({report.videos_skipped} already done before), {len(report.failures)} failed | frames {e.frames}: "
        f"kept {e.kept}, duplicates {e.duplicates}, filtered out {e.filtered}",
        highlight=False,
    )
    console.print(f"dataset: {report.output / 'dataset'} (train with: yolo train data={report.output / 'dataset' / 'data.yaml'})",
                  highlight=False, soft_wrap=True)
    if report.stopped:
        console.print("[yellow]stopped early[/yellow]: run the same command again to resume.")
    for source, warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {source}: {warning}", highlight=False, soft_wrap=True)
    for failure in report.failures:
        console.print(f"[red]failed[/red] {failure.line()}", highlight=False, soft_wrap=True)


@app.command()
def status(
    output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")] = Path("out/dataset"),
) -> None:
    """Counts per state, failures grouped by class, and what a re-run would do."""
    from .status import render_status

    console = Console()
    if not (output / "registry.sqlite").exists():
        raise _fail_usage(console, f"{output} holds no video-miner run (no registry.sqlite); pass --output")
    render_status(console, output)


@app.command()
def report(output: Annotated[Path, typer.Option("--output", "-o", help="The run's output folder.")] = Path("out/dataset"),
           png: Annotated[Path | None, typer.Option(help="Where to write the timeline (default <output>/timeline.png).")]
           = None) -> None:
    """The last run's metrics as tables, and a timeline PNG showing the bottleneck."""
    from .metrics import load_metrics
    from .report import plot_timeline, render_tables

    console = Console()
    if not (output / "metrics.json").exists():
        raise _fail_usage(console, f"{output} holds no metrics.json; run video-miner run first or pass --output")
    data = load_metrics(output)
    render_tables(console, data)
    path = plot_timeline(data, png or output / "timeline.png")
    console.print(f"timeline: {path}", highlight=False)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()

