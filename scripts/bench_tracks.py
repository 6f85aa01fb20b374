"""Section "tracks" of the benchmarks: objects through time.

- Visits: the person video (six people cross the room one after another; the visits' spans were
  read off the video by eye) mined with tracks at several ``track.fps`` and without: the job's wall
  time (the cost curve the default is chosen from), the number of tracks against the six visits,
  the identity errors (a visit split over tracks, a track over visits), and with ``per_track: 1`` the
  kept frames: one per visit?
- Known paths: a clip made here (two people of the person video pasted on its empty room, moved
  along known paths, one of them left out on planted frames so the model misses it): MOTA, IDF1 and
  ID switches from motmetrics, the planted misses found (recall) and the hard marks elsewhere.

    python scripts/bench_tracks.py            # prints the JSON section
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PERSON = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
#: The six visits of the person video, (enter, leave) in seconds, as a person watching it sees them.
VISITS = ((6.0, 20.0), (22.5, 45.0), (50.0, 70.0), (74.0, 87.0), (92.0, 120.0), (123.0, 136.0))
#: Planted misses on the known-paths clip: each on a frame sampled at 1, 2 and 5 fps, with the frames
#: sampled just before and after it showing the person.
MISSES = (2.0, 5.0, 8.0, 10.0)
RATES = (1.0, 2.0, 3.0, 5.0)


def _mine(inputs: list[Path], out: Path, **overrides: Any) -> tuple[float, list[dict[str, Any]]]:
    from video_miner.config import load_config
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    config = load_config(None, {"output": str(out), "filter.model": str(MODEL), "filter.classes": ["person"],
                                "filter.conf": 0.4, **overrides})
    started = time.perf_counter()
    mine(RunRequest(inputs=[str(p) for p in inputs], config=config, engine="async", fresh=True))
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    return wall, rows


def _visit(t: float) -> int | None:
    return next((k for k, (a, b) in enumerate(VISITS) if a <= t <= b), None)


def section_visits(work: Path) -> dict[str, Any]:
    # The first run in a process pays the imports and the model's first load: warm up, then take
    # the faster of a run before and a run after the tracked ones.
    _mine([PERSON], work / "warm-up")
    before, _ = _mine([PERSON], work / "off")
    out: dict[str, Any] = {"visits": len(VISITS), "rates": {}}
    for fps in RATES:
        wall, rows = _mine([PERSON], work / f"fps{fps:g}", **{"track.enabled": True, "track.fps": fps,
                                                                "select.per_track": 1})
        spans: dict[int, set[int]] = {}
        untracked = 0
        for r in rows:
            for d in r["detections"]:
                if d.get("track") is None:
                    untracked += 1
                    continue
                visit = _visit(float(r["timestamp"]))
                spans.setdefault(d["track"], set()).add(-1 if visit is None else visit)
        kept = [r for r in rows if r["decision"] == "kept"]
        visits_kept = sorted(_visit(float(r["timestamp"])) for r in kept)
        out["rates"][f"{fps:g}"] = {
            "wall_s": round(wall, 2), "tracks": len(spans),
            "tracks_over_visits": sum(len(v - {-1}) > 1 for v in spans.values()),
            "visits_split": sum(sum(k in v for v in spans.values()) > 1 for k in range(len(VISITS))),
            "untracked_boxes": untracked, "kept_per_track_1": len(kept),
            "one_kept_per_visit": visits_kept == list(range(len(VISITS))),
        }
    after, _ = _mine([PERSON], work / "off")
    off = min(before, after)
    out["without_tracks_s"] = round(off, 2)
    for figures in out["rates"].values():
        figures["cost_x"] = round(figures["wall_s"] / off, 2)
    return out


def iou_distances(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    """1 - IoU of each pair of (left, top, width, height) boxes, NaN under IoU 0.5: what
    motmetrics' ``iou_matrix`` gives (it calls ``np.asfarray``, gone from NumPy 2)."""
    out = np.full((len(a), len(b)), np.nan)
    for i, (ax, ay, aw, ah) in enumerate(a):
        for j, (bx, by, bw, bh) in enumerate(b):
            iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
            ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
            iou = iw * ih / (aw * ah + bw * bh - iw * ih)
            if iou >= 0.5:
                out[i, j] = 1.0 - iou
    return out


def _pixels(box: Any, size: list[int]) -> list[float]:
    x, y, w, h = box
    return [(x - w / 2) * size[0], (y - h / 2) * size[1], w * size[0], h * size[1]]


def section_known_paths(work: Path) -> dict[str, Any]:
    from scripts.media import make_tracks_clip

    work.mkdir(parents=True, exist_ok=True)
    clip = work / "walk.mp4"
    truth = make_tracks_clip(clip, PERSON, seconds=12.0, fps=10, misses=MISSES)
    return {f"{fps:g}": _known_paths_at(work, clip, truth, fps) for fps in (1.0, 2.0, 5.0)}


def _known_paths_at(work: Path, clip: Path, truth: dict[float, Any], fps: float) -> dict[str, Any]:
    import motmetrics as mm

    _, rows = _mine([clip], work / f"walk{fps:g}", **{"track.enabled": True, "track.fps": fps})
    acc = mm.MOTAccumulator(auto_id=False)
    hard_elsewhere = found = planted = 0
    for r in rows:
        t = round(float(r["timestamp"]), 1)
        size = r.get("display_size") or r.get("decoded_size")
        gt = truth[t]
        boxes = [d for d in r["detections"] if d.get("track") is not None]
        acc.update([p for p, _ in gt], [d["track"] for d in boxes],
                   iou_distances([_pixels(b, size) for _, b in gt], [_pixels(d["xywhn"], size) for d in boxes]),
                   r["frame_index"])
        marks = [d.get("hard") for d in r["detections"] if d.get("hard")]
        if t in MISSES:  # a planted miss on a sampled frame (at 1 and 2 fps only some are)
            planted += 1
            found += any(m.startswith("missed between") for m in marks)
        elif marks:
            hard_elsewhere += 1
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_frames"], name="walk")
    return {"frames": len(rows), "mota": round(float(summary.loc["walk", "mota"]), 4),
            "idf1": round(float(summary.loc["walk", "idf1"]), 4),
            "id_switches": int(summary.loc["walk", "num_switches"]),
            "planted_misses_sampled": planted, "misses_found": found, "miss_recall": round(found / max(1, planted), 3),
            "hard_elsewhere_share": round(hard_elsewhere / max(1, len(rows) - planted), 4)}


def section_tracks(work: Path) -> dict[str, Any]:
    return {"known_paths": section_known_paths(work / "known"), "visits": section_visits(work / "visits")}


if __name__ == "__main__":
    import os

    os.environ["YOLO_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    print(json.dumps(section_tracks(ROOT / "bench-work" / "tracks"), indent=1))
