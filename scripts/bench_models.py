"""Section 11 of scripts/bench.py: several models on every frame (issue #22).

- Files: the shared videos and the plates clip (scripts/media.py), every prefiltered frame sent to
  the models (``dedup.skip_detection: false``, so each run sees the same frames). The detector alone,
  the OCR alone, both side by side (wall against the slower alone), the OCR after the detector (a
  cascade: its calls against OCR on every frame). Join overhead: the time spent in the join (lock,
  synchronizer, keep rule), summed, against the run's wall.
- Live: a 25 fps stream (the bottle video served in real time over loopback TCP), every frame
  sampled, a detector made a 2 fps node and the OCR a 1.2 fps node (sleeps in a bench-only
  wrapper), one frame a call each and a live queue of one frame; the exact join (each frame waits
  for both) against the realtime one (``live.sync_tolerance_ms: 200``): frames decided per second
  and capture-to-decision p95.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = sorted((SHARED / "data" / "videos").glob("*.m[pk][4v]"))
BOTTLE = SHARED / "data" / "videos" / "bottle-detection.mp4"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
DETECTOR = {"name": "coco", "classes": ["person", "bottle", "car", "bus"]}
OCR = {"name": "text", "kind": "ocr"}


def _mine(inputs: list[Path] | list[str], out: Path, overrides: dict[str, Any], duration: float | None = None
          ) -> dict[str, Any]:
    import shutil

    from video_miner.config import load_config
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    shutil.rmtree(out, ignore_errors=True)
    config = load_config(None, {"output": str(out), "filter.model": str(MODEL), "dedup.skip_detection": False,
                                **overrides})
    report = mine(RunRequest([str(p) for p in inputs], config, duration_s=duration))
    data: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    data["wall_s"] = report.wall_seconds
    return data


@contextmanager
def _timed_joins() -> Iterator[list[float]]:
    """Seconds spent in the join, summed (bench-only wrapper around ``ModelGraph._answer``)."""
    from video_miner.detect.model_graph import ModelGraph

    spent = [0.0]
    real = ModelGraph._answer
    lock = threading.Lock()

    def timed(self: ModelGraph, *args: Any) -> None:
        started = time.perf_counter()
        try:
            real(self, *args)
        finally:
            with lock:
                spent[0] += time.perf_counter() - started

    ModelGraph._answer = timed  # type: ignore[method-assign,assignment]
    try:
        yield spent
    finally:
        ModelGraph._answer = real  # type: ignore[method-assign]


def section_models(work: Path) -> dict[str, Any]:
    from scripts.media import make_plates_clip

    inputs = [*VIDEOS, make_plates_clip(work / "models-plates.mp4")]
    runs = {"detector": [DETECTOR], "ocr": [OCR], "both": [DETECTOR, OCR],
            "cascade": [DETECTOR, {**OCR, "after": "coco"}]}
    out: dict[str, Any] = {"videos": len(inputs)}
    for name, models in runs.items():
        with _timed_joins() as spent:
            data = _mine(inputs, work / f"models-{name}", {"models": models})
        figures = data["models"]
        out[name] = {"wall_s": round(data["wall_s"], 2), "stages_s": data["totals"].get("stages_seconds"),
                     "join_s": round(spent[0], 3),
                     "calls": {m: v["calls"] for m, v in figures["models"].items()},
                     "skipped": {m: v["skipped"] for m, v in figures["models"].items()},
                     "busy_s": {m: v["batches"]["busy_seconds"] for m, v in figures["models"].items()},
                     "wait_p95_s": figures["joins"]["frames"]["wait_p95_s"]}
        print(f"  11 models {name}: {out[name]}", flush=True)
    slower = max(out["detector"]["wall_s"], out["ocr"]["wall_s"])
    out["both_over_slower"] = round(out["both"]["wall_s"] / slower, 3)
    out["join_share"] = round(out["both"]["join_s"] / out["both"]["wall_s"], 4)
    out["cascade_ocr_calls"] = out["cascade"]["calls"]["text"]
    out["every_frame_ocr_calls"] = out["both"]["calls"]["text"]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slow(cls: Any, name: str, per_image_s: float) -> Callable[[], None]:
    real = getattr(cls, name)

    def slow(self: Any, images: list[Any]) -> Any:
        time.sleep(per_image_s * len(images))
        return real(self, images)

    setattr(cls, name, slow)
    return lambda: setattr(cls, name, real)


def section_live_models(work: Path, seconds: float = 20.0) -> dict[str, Any]:
    import imageio_ffmpeg

    from video_miner.detect.detector import Detector
    from video_miner.detect.judge import FrameJudge
    from video_miner.detect.ocr import TextReader

    restore = [_slow(Detector, "detect_each", 1 / 2.0), _slow(TextReader, "read_each", 1 / 1.2)]
    real_init = FrameJudge.__init__

    def exact_init(self: FrameJudge, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **{**kwargs, "live": False})

    out: dict[str, Any] = {"stream_fps": 25, "seconds": seconds, "nodes_fps": {"coco": 2.0, "text": 1.2}}
    try:
        for sync in ("exact", "realtime"):
            if sync == "exact":  # bench-only: live frames joined as files are, each waiting for every model
                FrameJudge.__init__ = exact_init  # type: ignore[method-assign]
            port = _free_port()
            cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-re", "-stream_loop", "-1", "-i", str(BOTTLE),
                   "-t", str(seconds + 5), "-an", "-r", "25", "-c:v", "libx264", "-preset", "ultrafast",
                   "-tune", "zerolatency", "-g", "25", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                data = _mine([f"tcp://127.0.0.1:{port}"], work / f"models-live-{sync}", {
                    # Nodes as slow as these take one frame a call, and the live queue holds one frame:
                    # frames never queue behind them (the newest frame is the one worth deciding).
                    "models": [{**DETECTOR, "batch_size": 1}, {**OCR, "batch_size": 1}], "extract.fps": 25,
                    "filter.static_max_diff": -1, "filter.max_blur": 1, "live.sync_tolerance_ms": 200,
                    "live.queue_size": 1, "live.reconnect_timeout_s": 5},
                    duration=seconds)
            finally:
                proc.kill()
                proc.wait()
                FrameJudge.__init__ = real_init  # type: ignore[method-assign]
            live = next(iter(data["live"].values()))
            join = data["models"]["joins"]["frames" if sync == "exact" else "live"]
            out[sync] = {"sampled": live["frames_sampled"], "decided": live["frames_decided"],
                         "dropped": live["frames_dropped"], "decided_per_s": round(live["frames_decided"] / seconds, 2),
                         "latency_p95_s": live["latency_p95_s"], "partial": live["frames_partial"],
                         "expired": live["frames_expired"], "join": join,
                         "calls": {m: v["calls"] for m, v in data["models"]["models"].items()}}
            print(f"  11 live {sync}: {out[sync]}", flush=True)
    finally:
        for undo in restore:
            undo()
    return out


if __name__ == "__main__":
    import sys

    os.environ["YOLO_OFFLINE"] = "1"
    work = ROOT / "bench-work"
    work.mkdir(exist_ok=True)
    live_only = sys.argv[1:] == ["--live-only"]
    print(json.dumps({"models": None if live_only else section_models(work), "live": section_live_models(work)},
                     indent=1))
