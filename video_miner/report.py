"""``video-miner report``: metrics.json as tables, and a timeline PNG of the stages."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def render_tables(console: Console, data: dict[str, Any]) -> None:
    table = Table(title="stages")
    cols = ("stage", "workers", "in", "out", "failed", "dropped", "p50 s", "p95 s", "max s", "busy", "items/s",
            "queue peak")
    for col in cols:
        table.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in data["stages"].items():
        table.add_row(name, str(s["workers"]), str(s["items_in"]), str(s["items_out"]), str(s["failed"]),
                      str(s["dropped"]), f"{s['p50_s']:.3f}", f"{s['p95_s']:.3f}", f"{s['max_s']:.3f}",
                      f"{s['busy_fraction']:.0%}", f"{s['throughput_per_s']:.2f}",
                      f"{s['queue_high_water']}/{s['queue_size']}")
    console.print(table)
    totals = Table(title="totals")
    totals.add_column("what")
    totals.add_column("value", justify="right")
    for key, value in data["totals"].items():
        totals.add_row(key, str(value))
    console.print(totals)
    if data.get("bottleneck"):
        console.print(f"[bold]{data['bottleneck']['hint']}[/bold]", highlight=False)


def plot_timeline(data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_busy, ax_queue) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for point in data.get("timeline", []):
        by_stage.setdefault(point["stage"], []).append(point)
    for stage in data["stages"]:
        points = by_stage.get(stage, [])
        t = [0.0] + [p["t"] for p in points]
        ax_busy.step(t, [0] + [p["busy"] for p in points], where="post", label=stage)
        ax_queue.step(t, [0] + [p["queue"] for p in points], where="post", label=stage)
    ax_busy.set_ylabel("items in flight")
    ax_queue.set_ylabel("queue depth")
    ax_queue.set_xlabel("seconds since start")
    ax_busy.legend(loc="upper right")
    bottleneck = data.get("bottleneck") or {}
    ax_busy.set_title(textwrap.fill(bottleneck.get("hint", "stage timeline"), 110), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
