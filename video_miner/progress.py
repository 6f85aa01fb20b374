"""What a person watching a run sees: a rich live table on a terminal, one line every few
seconds otherwise. It only reads the engine's snapshots and the run's counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .context import MiningContext
from .pipeline import Runner, RunProgress

LINE_INTERVAL_S = 5.0


def _eta(progress: RunProgress) -> str:
    elapsed = time.monotonic() - progress.started_at
    done = progress.finished
    if done == 0 or done >= progress.total:
        return "-"
    return f"{elapsed / done * (progress.total - done):.0f}s"


def footer(ctx: MiningContext, progress: RunProgress) -> str:
    c = ctx.counters
    elapsed = time.monotonic() - progress.started_at
    return (
        f"videos {progress.finished}/{progress.total} | frames extracted {c.get('frames_extracted')} "
        f"candidates {c.get('frames_candidates')} deferred {c.get('frames_deferred')} "
        f"filtered out {c.get('frames_filtered')} "
        f"(duplicates resolved at the end) | elapsed {elapsed:.0f}s | ETA {_eta(progress)}"
    )


def stage_table(snapshot: dict[str, dict[str, Any]], elapsed: float) -> Table:
    table = Table(title="video-miner", expand=False)
    for col in ("stage", "busy/workers", "queue", "done", "failed", "avg ms", "items/s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in snapshot.items():
        rate = s["processed"] / elapsed if elapsed > 0 else 0.0
        table.add_row(name, f"{s['busy']}/{s['workers']}", f"{s['queue_depth']}/{s['queue_size']}",
                      str(s["items_out"]), str(s["failed"]), f"{s['avg_seconds'] * 1000:.0f}", f"{rate:.2f}")
    return table


def one_line(snapshot: dict[str, dict[str, Any]], ctx: MiningContext, progress: RunProgress) -> str:
    stages = " ".join(f"{n}[{s['busy']}/{s['workers']} q{s['queue_depth']} ok{s['items_out']} x{s['failed']}]"
                      for n, s in snapshot.items())
    return f"{stages} | {footer(ctx, progress)}"


@contextmanager
def live_display(runner: Runner, ctx: MiningContext, progress: RunProgress, console: Console) -> Iterator[None]:
    if console.is_terminal:
        def render() -> Group:
            return Group(stage_table(runner.snapshot(), time.monotonic() - progress.started_at),
                         Text(footer(ctx, progress)))

        with Live(get_renderable=render, console=console, refresh_per_second=4, transient=False):
            yield
        return
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(LINE_INTERVAL_S):
            console.print(one_line(runner.snapshot(), ctx, progress), soft_wrap=True)

    thread = threading.Thread(target=report, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
