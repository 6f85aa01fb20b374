"""``video-miner status``: what the registry says about a run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..records import UNFINISHED, State, VideoRow
from ..store.layout import OutputLayout
from ..store.registry import Registry


def render_status(console: Console, output: Path) -> None:
    registry = Registry(OutputLayout(output).registry, readonly=True)
    try:
        videos = [v for v in registry.videos() if v.state != State.SKIPPED]
    finally:
        registry.close()
    counts: defaultdict[str, int] = defaultdict(int)
    for v in videos:
        counts[v.state] += 1
    table = Table(title=f"videos in {output}")
    table.add_column("state")
    table.add_column("videos", justify="right")
    for state in State:
        if counts.get(state.value):
            table.add_row(state.value, str(counts[state.value]))
    console.print(table)

    failures: dict[str, list[VideoRow]] = defaultdict(list)
    for v in videos:
        if v.state == State.FAILED:
            failures[v.error_class or "error"].append(v)
    if failures:
        ft = Table(title="failures by class")
        for col in ("class", "videos", "example"):
            ft.add_column(col)
        for kind, rows in sorted(failures.items(), key=lambda kv: -len(kv[1])):
            ex = rows[0]
            ft.add_row(kind, str(len(rows)), f"{ex.input}: {ex.error_message}")
        console.print(ft)
    done = counts.get(State.DONE.value, 0)
    failed = counts.get(State.FAILED.value, 0)
    unfinished = sum(counts.get(s.value, 0) for s in UNFINISHED)
    console.print(
        f"a re-run of the same command would skip {done} done video(s), resume {unfinished} unfinished "
        f"and leave {failed} failed one(s) alone; --retry-failed would retry those {failed}.",
        highlight=False,
    )
    kept = sum(v.n_kept for v in videos)
    dups = sum(v.n_duplicates for v in videos)
    console.print(f"frames: extracted {sum(v.n_extracted for v in videos)}, kept {kept}, duplicates {dups}",
                  highlight=False)
