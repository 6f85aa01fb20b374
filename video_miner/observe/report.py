"""``video-miner report``: metrics.json as tables, and a timeline PNG of the stages."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..store.files import write_bytes
from .metrics_file import MetricsFile, StageFigures

#: What each stage column shows: (heading, how to read it from a stage's figures).
STAGE_FIELDS: tuple[tuple[str, Callable[[StageFigures], str]], ...] = (
    ("workers", lambda s: str(s.workers)),
    ("in", lambda s: str(s.items_in)),
    ("out", lambda s: str(s.items_out)),
    ("failed", lambda s: str(s.failed)),
    ("dropped", lambda s: str(s.dropped)),
    ("p50 s", lambda s: f"{s.p50_s:.3f}"),
    ("p95 s", lambda s: f"{s.p95_s:.3f}"),
    ("max s", lambda s: f"{s.max_s:.3f}"),
    ("busy", lambda s: f"{s.busy_fraction:.0%}"),
    ("items/s", lambda s: f"{s.throughput_per_s:.2f}"),
    ("queue peak", lambda s: f"{s.queue_high_water}/{s.queue_size}"),
)
#: Below this width the stage table is turned: a row per figure, a column per stage.
WIDE = 120


def _key_value(title: str, items: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for key, value in items.items():  # as plain text: a class name or a source is no markup
        table.add_row(Text(key), Text(str(value)))
    return table


def stage_tables(data: MetricsFile, width: int) -> list[Table]:
    """The stage figures: one wide table, or for a narrow terminal tables turned on their side, as
    many stages to a table as fit, so no heading or cell is ever cut."""
    stages = data.stages
    if width >= WIDE:
        table = Table(title="stages", title_justify="left")
        table.add_column("stage", no_wrap=True)
        for heading, _ in STAGE_FIELDS:
            table.add_column(heading, justify="right", no_wrap=True)
        for name, s in stages.items():
            table.add_row(name, *(read(s) for _, read in STAGE_FIELDS))
        return [table]
    label = max(len(h) for h, _ in STAGE_FIELDS) + 4
    names = list(stages)
    tables: list[list[str]] = []
    chunk: list[str] = []
    used = label
    for name in names:
        cell = max(len(name), 8) + 3
        if chunk and used + cell > width:
            tables.append(chunk)
            chunk, used = [], label
        chunk.append(name)
        used += cell
    tables.append(chunk)
    out = []
    for k, group in enumerate(tables):
        table = Table(title="stages" if k == 0 else None, title_justify="left")
        table.add_column("", no_wrap=True)
        for name in group:
            table.add_column(name, justify="right", no_wrap=True)
        for heading, read in STAGE_FIELDS:
            table.add_row(heading, *(read(stages[name]) for name in group))
        out.append(table)
    return out


def render_tables(console: Console, data: MetricsFile) -> None:
    for table in stage_tables(data, console.width):
        console.print(table)
    console.print(_key_value("totals", data.totals))
    if data.hard_by_class:
        # boxes where the model contradicts itself along a track, per class
        hard = Table(title="hard boxes", title_justify="left")
        hard.add_column("class", no_wrap=True)
        hard.add_column("boxes", justify="right", no_wrap=True)
        for label, count in data.hard_by_class.items():
            hard.add_row(Text(label), str(count))
        console.print(hard)
    if data.detector is not None:
        d = data.detector
        console.print(_key_value("detector", {
            "batches": d.batches, "frames": d.requests,
            "batch size p50 / mean / max": f"{d.batch_size_p50} / {d.batch_size_mean:.1f} / {d.max_batch}",
            "batch fill (mean)": f"{d.batch_fill_mean:.0%}",
            "wait for a batch p50 / p95 s": f"{d.wait_s.p50:.3f} / {d.wait_s.p95:.3f}",
            "frames/s (run / busy)": f"{d.frames_per_s:.1f} / {d.requests_per_busy_s:.1f}",
            "busy": f"{d.busy_fraction:.0%}",
        }))
    if data.models is not None:
        _models(console, data)
    for source, s in (data.live or {}).items():
        console.print(_key_value(f"live: {source}", {
            "state": s.state, "frames received / sampled": f"{s.frames_captured} / {s.frames_sampled}",
            "filtered / dropped / decided": f"{s.frames_filtered} / {s.frames_dropped} / {s.frames_decided}",
            "partial / expired (several models)": f"{s.frames_partial} / {s.frames_expired}",
            "latency p50 / p95 / max s": f"{s.latency_p50_s:.2f} / {s.latency_p95_s:.2f} / {s.latency_max_s:.2f}",
            "reconnects (gap s)": f"{s.reconnects} ({s.gap_seconds:.1f})",
            "new objects tracked": str(s.tracks_new),
        }))
    if data.bottleneck is not None:
        console.print(f"[bold]{data.bottleneck.hint}[/bold]", highlight=False)


def _models(console: Console, data: MetricsFile) -> None:
    """Each model's calls and busy time (its batcher's), then each join that did something."""
    assert data.models is not None
    models = data.models
    table = Table(title=f"models (keep: {models.keep})", title_justify="left")
    for heading in ("model", "kind", "after", "calls", "skipped", "busy s", "failed", "batch p50", "frames/s busy"):
        table.add_column(heading, justify="left" if heading in ("model", "kind", "after") else "right", no_wrap=True)
    for name, m in models.models.items():
        b = m.batches
        table.add_row(Text(name), m.kind, Text(m.after or "-"), str(m.calls), str(m.skipped),
                      f"{b.busy_seconds if b else 0.0:.1f}", str(m.failed), str(b.batch_size_p50 if b else "-"),
                      f"{b.requests_per_busy_s if b else 0.0:.1f}")
    console.print(table)
    for name, j in models.joins.items():
        if j.matched or j.partial or j.expired:
            console.print(_key_value(f"join: {name}", {
                "matched / partial / expired": f"{j.matched} / {j.partial} / {j.expired}",
                "waiting": j.waiting, "wait p50 / p95 s": f"{j.wait_p50_s:.3f} / {j.wait_p95_s:.3f}"}))


def plot_timeline(data: MetricsFile, path: Path, root: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_busy, ax_queue) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    by_stage: dict[str, list[Any]] = {}
    for point in data.timeline:
        by_stage.setdefault(point.stage, []).append(point)
    for stage in data.stages:
        points = by_stage.get(stage, [])
        t = [0.0] + [p.t for p in points]
        ax_busy.step(t, [0] + [p.busy for p in points], where="post", label=stage)
        ax_queue.step(t, [0] + [p.queue for p in points], where="post", label=stage)
    ax_busy.set_ylabel("items in flight")
    ax_queue.set_ylabel("queue depth")
    ax_queue.set_xlabel("seconds since start")
    ax_busy.legend(loc="upper right")
    ax_busy.set_title(textwrap.fill(data.bottleneck.hint if data.bottleneck else "stage timeline", 110), fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, png.getvalue(), root or path.parent)
    return path
