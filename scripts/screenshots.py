"""The README's two pictures, taken for real: the live table of a run reading two camera streams
(FFmpeg on 127.0.0.1) beside files, and the gallery of that run, both shot by headless Chromium.

    YOLO_OFFLINE=1 .venv/bin/python scripts/screenshots.py   # writes docs/live-table.png, docs/gallery.png
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
VIDEOS = SHARED / "data" / "videos"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@contextmanager
def recorder(at_s: float) -> Iterator[tuple[Any, dict[str, str]]]:
    """A display that draws the live table into a recording console and keeps the first drawing,
    made ``at_s`` seconds into the run, as SVG."""
    from rich.console import Console

    from video_miner.observe.progress import every, render

    kept: dict[str, str] = {}

    def display(view: Any) -> Any:
        def draw() -> None:
            if "svg" not in kept:
                console = Console(record=True, width=112, force_terminal=True, color_system="truecolor")
                console.print(render(view))
                kept["svg"] = console.export_svg(title="video-miner run")

        return every(at_s, draw)

    yield display, kept


def main() -> None:
    from playwright.sync_api import sync_playwright

    from scripts.bench_live import streams
    from video_miner.config import load_config
    from video_miner.dataset.gallery import write_gallery
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    work = ROOT / "bench-work"
    out = work / "screenshots"
    shutil.rmtree(out, ignore_errors=True)
    files = [str(VIDEOS / name) for name in ("one-by-one-person-detection.mp4", "bottle-detection.mp4", "again.mkv",
                                             "book.mkv", "car-detection.mp4")]
    config = load_config(None, {"output": str(out), "filter.model": str(MODEL), "filter.classes": ["person", "bottle"],
                                "live.reconnect_timeout_s": 5})
    with streams(work, 2) as urls, recorder(at_s=9.0) as (display, kept):
        mine(RunRequest([*urls, *files], config, duration_s=25), display=display)
    svg = out / "live-table.svg"
    svg.write_text(kept["svg"])
    page_file = write_gallery(out)
    docs = ROOT / "docs"
    chromium = shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 600}, device_scale_factor=1)
        page.goto(svg.as_uri())
        page.locator("svg").screenshot(path=str(docs / "live-table.png"))
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(page_file.as_uri())
        page.wait_for_function("document.body.dataset.ready === '1'")
        time.sleep(1.0)  # the lazy images of the first rows
        page.screenshot(path=str(docs / "gallery.png"))
        browser.close()
    print(f"wrote {docs / 'live-table.png'} and {docs / 'gallery.png'}")


if __name__ == "__main__":
    main()
