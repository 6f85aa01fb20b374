"""Live-stream sections of the benchmark (run from scripts/bench.py with --live / --soak MINUTES).

Streams: the person video, pre-encoded once with a camera-like GOP (10 frames), served in real
time and looped by one FFmpeg process each (``-c copy``: serving costs next to no CPU) as MPEG-TS
over TCP on 127.0.0.1. video-miner reads N of them at once for a fixed time.

* capacity: for 1 and 5 sampled frames a second, the most streams with p95 capture-to-decision
  latency <= 1 s and no frame dropped, trying 1, 2, 4, 6, 8, ... streams.
* soak: a few looping streams for MINUTES (>= 30), the miner's RSS sampled every 5 s; flat when the
  last 10 minutes' peak is within 5% of the first 10 minutes'.
* on Ray: 4 streams at 1 fps with the local engine and with ``--engine ray`` (a local Ray instance
  the run starts; the live filter actor decides the frames): p95 capture-to-decision of each.

    python scripts/bench_live.py ray [SECONDS]     # prints the JSON of the Ray comparison
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
SOURCE = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
COUNTS = (1, 2, 4, 6, 8, 12, 16, 24, 32)


def log(msg: str) -> None:
    print(msg, flush=True)


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def stream_file(work: Path) -> Path:
    path = work / "live-source.ts"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([_ffmpeg(), "-v", "error", "-y", "-i", str(SOURCE), "-an", "-c:v", "libx264", "-preset", "veryfast",
                        "-g", "10", "-f", "mpegts", str(path)], check=True)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def streams(work: Path, n: int):  # type: ignore[no-untyped-def]
    source = stream_file(work)
    ports = [_port() for _ in range(n)]
    procs = [subprocess.Popen([_ffmpeg(), "-v", "error", "-re", "-stream_loop", "-1", "-i", str(source), "-c", "copy",
                               "-f", "mpegts", f"tcp://127.0.0.1:{p}?listen=1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for p in ports]
    try:
        yield [f"tcp://127.0.0.1:{p}" for p in ports]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_miner(urls: list[str], out: Path, fps: float, seconds: float, sample_rss: bool = False,
              engine: str | None = None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    config = out.parent / f"{out.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("live:\n  reconnect_timeout_s: 10\n  read_timeout_s: 10\n")
    cmd = [sys.executable, "-m", "video_miner", "run", *urls, "--model", str(MODEL), "--classes", "person",
           "--fps", str(fps), "--duration", str(seconds), "-c", str(config), "-o", str(out), "-q",
           *(["--engine", engine] if engine else [])]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    rss: list[tuple[float, float]] = []
    if sample_rss:
        import psutil

        process = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss.append((time.monotonic() - started, process.memory_info().rss / 2**20))
            except psutil.NoSuchProcess:
                break
            time.sleep(5)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"video-miner failed:\n{stdout[-3000:]}")
    live = json.loads((out / "metrics.json").read_text())["live"]
    return {"wall_s": round(time.monotonic() - started, 1), "live": live, "rss": rss}


def capacity(work: Path, fps: float, seconds: float = 45.0) -> dict[str, Any]:
    tried = []
    for n in COUNTS:
        with streams(work, n) as urls:
            result = run_miner(urls, work / f"live-{fps:g}fps-{n}", fps, seconds)
        live = result["live"]
        worst_p95 = max(s["latency_p95_s"] for s in live.values())
        dropped = sum(s["frames_dropped"] for s in live.values())
        decided = sum(s["frames_decided"] for s in live.values())
        sampled = sum(s["frames_sampled"] for s in live.values())
        ok = worst_p95 <= 1.0 and dropped == 0
        tried.append({"streams": n, "worst_p95_s": worst_p95, "dropped": dropped, "sampled": sampled,
                      "decided": decided, "ok": ok})
        log(f"  live {fps:g} fps x {n} streams: worst p95 {worst_p95:.2f}s, dropped {dropped}, "
            f"{sampled} sampled, {decided} to the filter -> {'ok' if ok else 'over'}")
        if not ok:
            break
    sustained = max((t["streams"] for t in tried if t["ok"]), default=0)
    return {"fps": fps, "seconds": seconds, "sustained_streams": sustained, "tried": tried}


def soak(work: Path, minutes: float, n: int = 4, fps: float = 1.0) -> dict[str, Any]:
    with streams(work, n) as urls:
        result = run_miner(urls, work / "live-soak", fps, minutes * 60, sample_rss=True)
    rss = result["rss"]
    # While it runs: the samples up to --duration. After it, the final export, the report and the
    # interpreter's exit, reported apart (a one-off, not growth).
    running = [(t, m) for t, m in rss if t <= minutes * 60]
    first = max(m for t, m in running if t <= 600)
    last = max(m for t, m in running if t >= running[-1][0] - 600)
    live = result["live"]
    return {"minutes": minutes, "streams": n, "fps": fps, "rss_first_10min_peak_mib": round(first, 1),
            "rss_last_10min_peak_mib": round(last, 1), "ratio": round(last / first, 4),
            "rss_after_duration_peak_mib": round(max((m for t, m in rss if t > minutes * 60), default=0.0), 1),
            "dropped": sum(s["frames_dropped"] for s in live.values()),
            "decided": sum(s["frames_decided"] for s in live.values()),
            "worst_p95_s": max(s["latency_p95_s"] for s in live.values()), "rss": rss}


def plot_soak(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p[0] / 60 for p in result["rss"]]
    m = [p[1] for p in result["rss"]]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(t, m, color="#284")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(0, max(m) * 1.15)
    ax.set_title(f"{result['streams']} looping streams at {result['fps']:g} fps for {result['minutes']:g} min: "
                 f"last/first 10 min peak RSS {result['ratio']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def on_ray(work: Path, n: int = 4, fps: float = 1.0, seconds: float = 45.0) -> dict[str, Any]:
    """The same ``n`` streams mined for ``seconds`` on the local engine and on Ray: p95 capture to
    decision (the worst source's), frames decided and dropped."""
    out: dict[str, Any] = {"streams": n, "fps": fps, "seconds": seconds}
    for engine in ("local", "ray"):
        with streams(work, n) as urls:
            live = run_miner(urls, work / f"live-{engine}", fps, seconds, engine=engine)["live"]
        out[engine] = {"worst_p95_s": max(s["latency_p95_s"] for s in live.values()),
                       "worst_p50_s": max(s["latency_p50_s"] for s in live.values()),
                       "decided": sum(s["frames_decided"] for s in live.values()),
                       "dropped": sum(s["frames_dropped"] for s in live.values())}
        log(f"  {engine}: {out[engine]}")
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["ray"]:
    print(json.dumps(on_ray(ROOT / "bench-work", seconds=float(sys.argv[2]) if sys.argv[2:] else 45.0),
                     indent=1))
