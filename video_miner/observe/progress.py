"""What a person watching a run sees: a rich live table on a terminal (stages, the videos in flight
with how far each is, the live sources), one line every few seconds otherwise (never wrapped, so
logs grep). It only reads the run's view: engine snapshots, counters, live-source figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from async_pipeline import StageSnapshot

from ..live.stats import LiveSnapshot
from ..redact import printable
from ..stages.base import FILE_STAGES
from .view import RunProgress, RunView

#: How often a log line is printed when stdout is not a terminal (``--progress-every``).
LINE_INTERVAL_S = 5.0
#: Videos in flight shown with a bar (the rest are counted).
MAX_BARS = 6


Snapshot = dict[str, StageSnapshot]


def _in_flight(snapshot: Snapshot) -> list[tuple[str, str, float, float | None, str]]:
    """(stage, item, done, total, unit) for every item a stage reported progress on."""
    return [(stage, item, done, total, s.progress_unit)
            for stage, s in snapshot.items() for item, (done, total) in s.in_flight.items()]


def done_equivalent(progress: RunProgress, snapshot: Snapshot) -> float:
    """Videos finished, plus the part of each video in flight that is behind it: a video in the
    k-th of n stages, ``f`` of the way through it, counts (k + f) / n."""
    done = float(progress.finished)
    for k, stage in enumerate(FILE_STAGES):
        s = snapshot.get(stage)
        if not s:
            continue
        for done_part, total in s.in_flight.values():
            fraction = min(1.0, done_part / total) if total else 0.0
            done += (k + fraction) / len(FILE_STAGES)
        done += (s.busy - len(s.in_flight)) * (k + 0.5) / len(FILE_STAGES)
    return done


def eta(progress: RunProgress, snapshot: Snapshot) -> str:
    if progress.open_ended:
        return "-"
    elapsed = time.monotonic() - progress.started_at
    done = done_equivalent(progress, snapshot)
    if done <= 0 or progress.finished >= progress.total:
        return "-"
    return f"{elapsed / done * max(0.0, progress.total - done):.0f}s"


def footer(view: RunView, snapshot: Snapshot) -> str:
    c, progress = view.counters, view.progress
    elapsed = time.monotonic() - progress.started_at
    total = "?" if progress.open_ended else str(progress.total)
    return (
        f"videos {progress.finished}/{total} | frames extracted {c.get('frames_extracted')} "
        f"candidates {c.get('frames_candidates')} deferred {c.get('frames_deferred')} "
        f"filtered out {c.get('frames_filtered')} | elapsed {elapsed:.0f}s | ETA {eta(progress, snapshot)}"
    )


def stage_table(snapshot: Snapshot, elapsed: float) -> Table:
    table = Table(title="video-miner", expand=False)
    for col in ("stage", "busy", "queue", "done", "fail", "ms/item", "items/s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in snapshot.items():
        rate = s.processed / elapsed if elapsed > 0 else 0.0
        table.add_row(name, f"{s.busy}/{s.workers}", f"{s.queue_depth}/{s.queue_size}", str(s.items_out),
                      str(s.failed), f"{s.avg_seconds * 1000:.0f}", f"{rate:.2f}")
    return table


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 1e6:.1f} MB"
    if unit == "s":
        return f"{value:.0f}s"
    return f"{value:g}"


def flight_table(snapshot: Snapshot) -> Table | None:
    """One row per video in flight in a stage that reports progress: a bar and how far it is."""
    rows = _in_flight(snapshot)
    if not rows:
        return None
    table = Table(show_header=False, box=None, padding=(0, 1), expand=False)
    for _ in range(4):
        table.add_column()
    for stage, item, done, total, unit in rows[:MAX_BARS]:
        bar = ProgressBar(total=total or None, completed=done, width=20)
        amount = f"{_amount(done, unit)}/{_amount(total, unit)}" if total else _amount(done, unit)
        table.add_row(stage, Text(printable(item)[:28]), bar, amount)
    if len(rows) > MAX_BARS:
        table.add_row("", f"... {len(rows) - MAX_BARS} more", "", "")
    return table


def live_table(live: dict[str, LiveSnapshot]) -> Table | None:
    """Per live source: its state, frames at each step, latency from capture to decision."""
    if not live:
        return None
    table = Table(title="live sources", expand=False)
    # Several models: frames decided without a slow one's answer, or dropped waiting for it.
    joined = any(s.frames_partial or s.frames_expired for s in live.values())
    columns = ("source", "state", "got", "sampl", "drop", "done", *(("part", "exp") if joined else ()), "p50 s", "p95 s")
    for col in columns:
        table.add_column(col, justify="left" if col in ("source", "state") else "right")
    for source, s in live.items():
        sync = (str(s.frames_partial), str(s.frames_expired)) if joined else ()
        # Text, not a string: a source's name is never read as markup.
        table.add_row(Text(printable(source)[-24:]), s.state, str(s.frames_captured), str(s.frames_sampled),
                      str(s.frames_dropped), str(s.frames_decided), *sync, f"{s.latency_p50_s:.2f}",
                      f"{s.latency_p95_s:.2f}")
    return table


def render(view: RunView) -> RenderableType:
    snapshot = view.snapshot()
    parts: list[RenderableType] = [stage_table(snapshot, time.monotonic() - view.progress.started_at)]
    for extra in (flight_table(snapshot), live_table(view.live())):
        if extra is not None:
            parts.append(extra)
    parts.append(Text(footer(view, snapshot)))
    return Group(*parts)


def one_line(view: RunView) -> str:
    """The whole state in one line, for logs: stages, live sources, footer."""
    snapshot = view.snapshot()
    stages = " ".join(f"{n}[{s.busy}/{s.workers} q{s.queue_depth} ok{s.items_out} x{s.failed}]"
                      for n, s in snapshot.items())
    flight = " ".join(f"{stage}:{item[:20]}:{done / total:.0%}" for stage, item, done, total, _ in _in_flight(snapshot)
                      if total)
    live = " ".join(f"live[{printable(source)[-20:]} {s.state} got{s.frames_captured} drop{s.frames_dropped} "
                    + (f"part{s.frames_partial} exp{s.frames_expired} " if s.frames_partial or s.frames_expired else "")
                    + f"p95 {s.latency_p95_s:.2f}s]" for source, s in view.live().items())
    return " | ".join(part for part in (stages, flight, live, footer(view, snapshot)) if part)


@contextmanager
def every(seconds: float, action: Callable[[], None]) -> Iterator[None]:
    """Call ``action`` every ``seconds`` in a thread of its own while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            action()

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def live_display(view: RunView, console: Console, every_s: float = LINE_INTERVAL_S) -> Iterator[None]:
    """The live table on a terminal; else a log line every ``every_s`` seconds, and one more when
    the stages end (so even a run shorter than the period logs where it got to)."""
    if console.is_terminal:
        with Live(get_renderable=lambda: render(view), console=console, refresh_per_second=4, transient=False):
            yield
        return

    def line() -> None:
        # soft_wrap: a log line stays one line, however long, so grep finds it whole.
        console.print(one_line(view), soft_wrap=True, highlight=False, markup=False)

    with every(every_s, line):
        yield
    line()
