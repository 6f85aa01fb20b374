"""``video-miner status``: what the registry says about a run (read-only: works while a run goes).
Inputs are shown with their secrets masked and as plain text, whatever their names hold."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..records import UNFINISHED, State, VideoRow
from ..redact import Redactor, cell, printable
from ..store.layout import OutputLayout
from ..store.registry import Registry

#: Registry meta: the extra query parameters the run was told to mask (``secret_params``).
SECRET_PARAMS_META = "secret_params"


def render_status(console: Console, output: Path, failed_only: bool = False) -> None:
    registry = Registry(OutputLayout(output).registry, readonly=True)
    try:
        videos = [v for v in registry.videos() if v.state != State.SKIPPED]
        redactor = Redactor.with_extra(json.loads(registry.get_meta(SECRET_PARAMS_META) or "[]"))
    finally:
        registry.close()
    failed = [v for v in videos if v.state == State.FAILED]
    if failed_only:
        for v in failed:  # one per line, tab-separated: class, message, input (as failures.tsv)
            console.print(Text("\t".join(cell(x) for x in (v.error_class or "error",
                                                                redactor.text(v.error_message or ""),
                                                                redactor.url(v.input)))), soft_wrap=True)
        return
    counts: defaultdict[str, int] = defaultdict(int)
    for v in videos:
        counts[v.state] += 1
    table = Table(title=Text(f"videos in {printable(str(output))}"))
    table.add_column("state")
    table.add_column("videos", justify="right")
    for state in State:
        if counts.get(state.value):
            table.add_row(state.value, str(counts[state.value]))
    console.print(table)
    if failed:
        console.print(_failure_table(failed, redactor))
    done = counts.get(State.DONE.value, 0)
    unfinished = sum(counts.get(s.value, 0) for s in UNFINISHED)
    console.print(
        f"a re-run of the same command would skip {done} done video(s), resume {unfinished} unfinished "
        f"and leave {len(failed)} failed one(s) alone; --retry-failed would retry those {len(failed)}.",
        highlight=False, markup=False,
    )
    kept = sum(v.n_kept for v in videos)
    dups = sum(v.n_duplicates for v in videos)
    console.print(f"frames: extracted {sum(v.n_extracted for v in videos)}, kept {kept}, duplicates {dups}",
                  highlight=False, markup=False)
    if failed:
        console.print("every failure: video-miner status --failed", highlight=False, markup=False)


def _failure_table(failed: list[VideoRow], redactor: Redactor) -> Table:
    by_kind: dict[str, list[VideoRow]] = defaultdict(list)
    for v in failed:
        by_kind[v.error_class or "error"].append(v)
    table = Table(title="failures by class")
    for col in ("class", "videos", "example"):
        table.add_column(col)
    for kind, rows in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        ex = rows[0]
        example = printable(f"{redactor.url(ex.input)}: {redactor.text(ex.error_message or '')}")
        # Text cells: never read as markup, whatever the input's name holds.
        table.add_row(Text(printable(kind)), str(len(rows)), Text(example))
    return table
