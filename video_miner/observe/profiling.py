"""``--profile``: cProfile over every thread of the run (stages work in pool threads, where a
main-thread profiler would see nothing), merged into one pstats file and a text summary."""

from __future__ import annotations

import cProfile
import io
import pstats
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..store.files import target, write_text


@contextmanager
def profile_all_threads(output: Path) -> Iterator[None]:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:
        # Runs once per new thread, on its first event: hand the thread to its own profiler.
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()

    main = cProfile.Profile()
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main)
        with lock:
            for profile in profiles:
                stats.add(profile)
        with target(output / "profile.pstats", output) as path:
            stats.dump_stats(path)
        text = io.StringIO()
        pstats.Stats(str(output / "profile.pstats"), stream=text).sort_stats("cumulative").print_stats(60)
        write_text(output / "profile.txt", text.getvalue(), output)
