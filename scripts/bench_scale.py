"""Short clips at scale, and side by side with another checkout of video-miner.

    # 500 clips, pairs of runs alternating this checkout and another (e.g. a worktree of 316e8f3):
    YOLO_OFFLINE=1 .venv/bin/python scripts/bench_scale.py --clips 500 --pairs 3 --against /tmp/before
    # 2000 clips, this checkout only: wall, ms a clip, peak RSS
    YOLO_OFFLINE=1 .venv/bin/python scripts/bench_scale.py --clips 2000 --pairs 1

Each run is the CLI in a child process (``python -m video_miner`` with that checkout first on its
path), the same clips (``scripts/media.make_short_clips``), person at conf 0.4, 1 fps, a fresh
output folder; its peak RSS is the child's (``os.wait4``). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "yolov8n_int8.onnx"


def _clips(work: Path, n: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from scripts.media import make_short_clips

    folder = work / f"clips-{n}"
    if len(list(folder.glob("clip*.mp4"))) != n:
        shutil.rmtree(folder, ignore_errors=True)
        make_short_clips(folder, n)
    return folder


def _run(checkout: Path, clips: Path, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "video_miner", "run", str(clips), "--model", str(MODEL), "--classes", "person",
           "--conf", "0.4", "--fps", "1", "-o", str(out), "-q"]
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{checkout}: video-miner failed: {stderr[-2000:]}")
    totals = json.loads((out / "metrics.json").read_text())["totals"]
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024), "kept": totals["kept"],
            "frames_to_detector": totals["frames_to_detector"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None, help="another checkout to run beside this one")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work")
    args = parser.parse_args()
    clips = _clips(args.work, args.clips)
    checkouts = {"now": ROOT, **({"before": args.against.resolve()} if args.against else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
    for pair in range(args.pairs):
        # Alternate which goes first, so a slow minute of the machine falls on both.
        for name in (list(checkouts) if pair % 2 == 0 else list(checkouts)[::-1]):
            runs[name].append(_run(checkouts[name], clips, args.work / f"scale-out-{name}"))
            print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"clips": args.clips, "runs": runs}
    for name, done in runs.items():
        walls = sorted(r["wall_s"] for r in done)
        result[name] = {"median_wall_s": walls[len(walls) // 2], "ms_per_clip": round(1000 * walls[len(walls) // 2]
                                                                                      / args.clips, 1),
                        "peak_rss_mib": max(r["peak_rss_mib"] for r in done)}
    if args.against:
        result["now_over_before"] = round(result["now"]["median_wall_s"] / result["before"]["median_wall_s"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
