"""Gallery section of the benchmark: a synthetic output folder with a 50,000-frame manifest (images
hard-linked from a real run), its gallery.html built, and opened in headless Chromium: the time
until the first page is drawn, and until a filter change and a page turn are drawn."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

FRAMES = 50_000
VIDEOS = 500


def synthetic_output(work: Path, images: list[Path]) -> Path:
    out = work / "gallery-50k"
    shutil.rmtree(out, ignore_errors=True)
    (out / "dataset" / "images" / "train").mkdir(parents=True)
    rng = random.Random(50_000)
    rows = []
    per_video = FRAMES // VIDEOS
    for v in range(VIDEOS):
        vid = f"clip{v:04d}-{v * 7919 % 10**10:010d}"
        kept_here: list[str] = []
        for k in range(per_video):
            t = float(k)
            frame = f"{vid}@{t:.3f}"
            roll = rng.random()
            row: dict[str, Any] = {"frame": frame, "video_id": vid, "source": f"/data/cams/{vid}.mp4", "source_meta": {},
                                   "timestamp": t, "frame_index": k, "image": None, "phash": f"{rng.getrandbits(64):016x}",
                                   "blur": 100.0, "sharpness": 50.0, "detections": [], "decision": "filtered",
                                   "duplicate_of": None, "reason": "no person above conf 0.4"}
            if roll < 0.4 or not kept_here:
                name = f"{vid}_{k * 1000:09d}ms.jpg"
                os.link(images[(v + k) % len(images)], out / "dataset" / "images" / "train" / name)
                row.update(decision="kept", image=f"images/train/{name}", reason=None, detections=[
                    {"class": "person", "class_index": 0, "conf": round(rng.uniform(0.4, 0.99), 4),
                     "xywhn": [rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.5)]}
                    for _ in range(rng.randint(1, 3))])
                kept_here.append(frame)
            elif roll < 0.8:
                row.update(decision="duplicate", duplicate_of=rng.choice(kept_here), reason=None)
            rows.append(row)
    with (out / "dataset" / "manifest.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return out


def measure(page_path: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=120_000)
        ready_s = time.perf_counter() - started
        timings = page.evaluate("""() => { const n = performance.getEntriesByType('navigation')[0];
            return {dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd}; }""")
        started = time.perf_counter()
        page.select_option("#decision", "all")
        page.wait_for_function("document.body.dataset.shown !== undefined")
        filter_s = time.perf_counter() - started
        started = time.perf_counter()
        page.click("#top button[data-nav=next]")
        page.wait_for_function("document.querySelector('#top .page').textContent.startsWith('page 2')")
        page_s = time.perf_counter() - started
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        browser.close()
    return {"frames": FRAMES, "page_bytes": page_path.stat().st_size, "first_page_drawn_s": round(ready_s, 3),
            **{k: round(v) for k, v in timings.items()}, "filter_change_s": round(filter_s, 3),
            "next_page_s": round(page_s, 3), "js_heap_mib": round(heap / 2**20, 1) if heap else None}


def section_gallery(work: Path, images: list[Path]) -> dict[str, Any]:
    from video_miner.dataset.gallery import write_gallery

    out = synthetic_output(work, images)
    started = time.perf_counter()
    page = write_gallery(out)
    build_s = time.perf_counter() - started
    return {"build_s": round(build_s, 2), **measure(page)}
