"""video-miner vs the hand-made pipeline (ffmpeg -> yolo predict -> pHash dedup), on this machine.

A benchmark, not a test: prints a table and writes JSON (and a PNG of the whole-job comparison).

    .venv/bin/pip install -e ".[bench]" && YOLO_OFFLINE=1 .venv/bin/python scripts/bench.py

Sections: 1 extraction alone, 2 the whole job, 3 the pipeline's overlap, 4 dedup index scaling,
5 memory for 10 vs 50 videos, 7 short clips (300 three-second clips against the same clips joined
into one video), 8 the gallery of a 50,000-frame manifest in headless Chromium, 10 frames chosen
for what they show (scripts/bench_select.py: copies, different people, budget), 11 several models
on every frame (scripts/bench_models.py: parallel branches, join overhead, the cascade, a live
exact vs realtime join), 12 objects through time (scripts/bench_tracks.py: tracks against the person
video's visits at several track.fps, the cost curve, MOTA/IDF1 and planted misses), 13 --engine ray
against the local engine (scripts/bench_ray.py: the plates config over 24 clips). Section 6 (GPU)
runs with --gpu [DEVICE] on a machine with CUDA; 9 live-stream capacity with --live, and the
live soak with --soak MINUTES (see scripts/bench_live.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
VIDEOS = sorted((SHARED / "data" / "videos").glob("*.m[pk][4v]"))
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
THRESHOLD = 6

from scripts.media import make_short_clips, reencode  # noqa: E402  (needs ROOT on sys.path)

CLIPS = 300


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- corpus ---------------------------------------------------------------------------------
def build_corpus(folder: Path, copies: int) -> list[Path]:
    """Each real video ``copies`` times plus a re-encoded copy at 0.75 scale."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = []
    for video in VIDEOS:
        for k in range(copies):
            dst = folder / f"{video.stem}-copy{k}{video.suffix}"
            if not dst.exists():
                shutil.copy(video, dst)
            corpus.append(dst)
        small = folder / f"{video.stem}-small.mp4"
        if not small.exists():
            reencode(video, small, 0.75)
        corpus.append(small)
    return corpus


def scale_corpus(base: list[Path], n: int) -> list[Path]:
    """``n`` distinct paths (hard links of the corpus): what memory grows with is the video count."""
    folder = base[0].parent / f"n{n}"
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        src = base[i % len(base)]
        dst = folder / f"{i:03d}-{src.name}"
        if not dst.exists():
            os.link(src, dst)
        out.append(dst)
    return out


# ---- helpers --------------------------------------------------------------------------------
def run_timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "YOLO_OFFLINE": "1"})
    return time.perf_counter() - started, proc


def ffmpeg_extract(videos: list[Path], out: Path, parallel: int = 2) -> float:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    shutil.rmtree(out, ignore_errors=True)

    def one(v: Path) -> None:
        d = out / v.stem
        d.mkdir(parents=True)
        # round=up: the frame at each whole second, the instants video-miner samples. ffmpeg's default
        # (round=near) keeps the last frame before n+0.5 s: other images of anything that moves.
        subprocess.run([exe, "-v", "error", "-i", str(v), "-vf", "fps=1:round=up", "-q:v", "3", str(d / "%06d.jpg")],
                       check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, videos))
    return time.perf_counter() - started


def miner_extract(videos: list[Path], out: Path, parallel: int = 2) -> tuple[float, int]:
    from video_miner.config import ExtractConfig
    from video_miner.media.decode import extract_frames

    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(mode="fps", fps=1.0, max_side=4096, jpeg_quality=90)
    threads = max(1, (os.cpu_count() or 2) // parallel)
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda v: extract_frames(v, out / v.stem, v.stem, cfg, threads), videos))
    return time.perf_counter() - started, sum(len(r.frames) for r in results)


# ---- sections -------------------------------------------------------------------------------
def section_extraction(corpus: list[Path], work: Path) -> dict[str, Any]:
    ours, frames = miner_extract(corpus, work / "x-ours")
    theirs = ffmpeg_extract(corpus, work / "x-ffmpeg")
    ff_frames = sum(1 for _ in (work / "x-ffmpeg").rglob("*.jpg"))
    return {"video_miner_s": round(ours, 2), "ffmpeg_s": round(theirs, 2), "ratio": round(ours / theirs, 3),
            "frames_video_miner": frames, "frames_ffmpeg": ff_frames}


def hand_made(corpus: list[Path], work: Path) -> dict[str, Any]:
    """What users glue together today: ffmpeg -> ultralytics predict over the folders -> pHash dedup."""
    import imagehash
    from PIL import Image
    from ultralytics import YOLO

    started = time.perf_counter()
    t_extract = ffmpeg_extract(corpus, work / "hand-frames")
    t0 = time.perf_counter()
    model = YOLO(str(MODEL), task="detect")
    kept, seen = [], 0
    for folder in sorted((work / "hand-frames").iterdir()):
        for result in model.predict(source=str(folder), classes=[0], conf=0.4, stream=True, verbose=False):
            seen += 1
            if len(result.boxes):
                kept.append(Path(result.path))
    t_detect = time.perf_counter() - t0
    t0 = time.perf_counter()
    hashes: list[Any] = []
    distinct = []
    for path in kept:
        h = imagehash.phash(Image.open(path))
        if all(h - other > THRESHOLD for other in hashes):
            hashes.append(h)
            distinct.append(int(str(h), 16))
    t_dedup = time.perf_counter() - t0
    return {"wall_s": round(time.perf_counter() - started, 2), "extract_s": round(t_extract, 2),
            "detect_s": round(t_detect, 2), "dedup_s": round(t_dedup, 2), "frames_to_detector": seen,
            "kept": len(distinct), "hashes": distinct}


def miner_job(corpus: list[Path], out: Path, mode: str, config: Path | None = None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "video_miner", "run", *map(str, corpus), "--model", str(MODEL), "--classes", "person",
           "--conf", "0.4", "--fps", "1", "-o", str(out), "-q", f"--{mode}", *(["-c", str(config)] if config else [])]
    wall, proc = run_timed(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"video-miner failed ({mode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    hashes = [int(r["phash"], 16) for r in rows if r["decision"] == "kept"]
    represented = [int(r["phash"], 16) for r in rows if r["decision"] in ("kept", "duplicate")]
    return {"wall_s": round(wall, 2), "frames": metrics["totals"]["frames"],
            "frames_to_detector": metrics["totals"]["frames_to_detector"], "kept": len(hashes), "hashes": hashes,
            "represented": represented, "detector": metrics.get("detector"),
            "stages": metrics["stages"], "stages_seconds": metrics["totals"]["stages_seconds"]}


def startup(work: Path) -> dict[str, Any]:
    """The fixed cost of a run: the CLI on a 3-frame clip (imports, model load and warm-up, export),
    the best of three, against the interpreter importing the CLI module alone."""
    clip = SHARED / "data" / "videos" / "again.mkv"
    walls, imports = [], []
    for k in range(3):
        out = work / f"startup-{k}"
        shutil.rmtree(out, ignore_errors=True)
        wall, proc = run_timed([sys.executable, "-m", "video_miner", "run", str(clip), "--model", str(MODEL), "-o",
                                str(out), "-q"])
        if proc.returncode != 0:
            raise SystemExit(f"start-up run failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        walls.append(wall)
        imports.append(run_timed([sys.executable, "-c", "import video_miner.run.compose"])[0])
    return {"run_3_frames_s": round(min(walls), 2), "imports_s": round(min(imports), 2)}


def overlap(ours: list[int], theirs: list[int]) -> float:
    """Share of the hand-made pipeline's distinct person frames that video-miner also keeps (pHash match)."""
    if not theirs:
        return 1.0
    a = np.array(ours, dtype=np.uint64)
    found = sum(bool(len(a)) and bool((np.bitwise_count(a ^ np.uint64(h)) <= THRESHOLD).any()) for h in theirs)
    return found / len(theirs)


def section_dedup(sizes: list[int]) -> list[dict[str, Any]]:
    from video_miner.dataset.dedup import near_pairs, select_distinct

    out = []
    for n in sizes:
        rng = np.random.default_rng(n)
        h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)
        planted = n // 100
        src = rng.choice(n, size=planted, replace=False)
        flips = np.array([sum(1 << int(b) for b in rng.choice(64, size=k % (THRESHOLD + 1), replace=False))
                          for k in range(planted)], dtype=np.uint64)
        h = np.concatenate([h, h[src] ^ flips])
        priority = rng.permutation(len(h))
        started = time.perf_counter()
        dup_of = select_distinct(h, priority, THRESHOLD)
        elapsed = time.perf_counter() - started
        # Memory in a second pass: tracemalloc slows numpy's allocations down, so not timed.
        tracemalloc.start()
        select_distinct(h, priority, THRESHOLD)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = dup_of < 0
        pairs = {tuple(p) for p in near_pairs(h[np.r_[src, n + np.arange(planted)]], THRESHOLD).tolist()}
        found = all((k, planted + k) in pairs for k in range(planted))
        resolved = not (kept[src] & kept[n + np.arange(planted)]).any()
        out.append({"hashes": len(h), "seconds": round(elapsed, 3), "peak_mib": round(peak / 2**20, 1),
                    "planted_pairs": planted, "all_found": bool(found and resolved)})
        log(f"  dedup {len(h):>9,} hashes: {elapsed:.2f}s, peak {peak / 2**20:.0f} MiB, "
            f"all planted found: {out[-1]['all_found']}")
    # A camera on a still scene: 1M frames of 1,000 pictures, each seen with a camera's noise (one
    # of 64 single-bit flips, or none): 65,000 distinct hashes in clusters of 65 near ones.
    rng = np.random.default_rng(7)
    pictures = rng.integers(0, 2**64 - 1, size=1000, dtype=np.uint64)
    noise = np.array([0] + [1 << b for b in range(64)], dtype=np.uint64)
    h = pictures[rng.integers(0, 1000, size=1_000_000)] ^ noise[rng.integers(0, 65, size=1_000_000)]
    started = time.perf_counter()
    kept = int((select_distinct(h, rng.permutation(len(h)), THRESHOLD) == -1).sum())
    elapsed = time.perf_counter() - started
    out.append({"hashes": len(h), "still_scene_pictures": 1000, "seconds": round(elapsed, 3), "kept": kept})
    log(f"  dedup {len(h):>9,} hashes of 1,000 pictures: {elapsed:.2f}s, kept {kept}")
    return out


def section_memory(corpus: list[Path], work: Path) -> dict[str, Any]:
    res = {}
    for n in (10, 50):
        videos = scale_corpus(corpus, n)
        out = work / f"mem{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "scripts/peak_rss.py", sys.executable, "-m", "video_miner", "run", *map(str, videos),
               "--model", str(MODEL), "--classes", "person", "--fps", "1", "-o", str(out), "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "YOLO_OFFLINE": "1"})
        rss = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        res[f"peak_rss_mib_{n}"] = rss
        log(f"  memory: {n} videos -> peak RSS {rss:.0f} MiB")
    res["ratio"] = round(res["peak_rss_mib_50"] / res["peak_rss_mib_10"], 3)
    return res


def clip_corpus(work: Path) -> tuple[list[Path], Path]:
    folder, joined = work / "clips", work / "clips-joined.mp4"
    clips = sorted(folder.glob("clip*.mp4"))
    if len(clips) != CLIPS or not joined.exists():
        shutil.rmtree(folder, ignore_errors=True)
        clips = make_short_clips(folder, CLIPS, joined=joined)
    return clips, joined


def section_short_clips(work: Path) -> dict[str, Any]:
    """300 distinct three-second clips (one frame each gets past the prefilters to the detector)
    against the same clips joined into one video: the same frames to the detector either way."""
    clips, joined = clip_corpus(work)
    res: dict[str, Any] = {"clips": len(clips)}
    for name, inputs in (("joined", [joined]), ("clips", [clips[0].parent])):
        out = work / f"clips-out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "video_miner", "run", *map(str, inputs), "--model", str(MODEL), "--classes",
               "person", "--conf", "0.4", "--fps", "1", "-o", str(out), "-q"]
        wall, proc = run_timed(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"video-miner failed on the {name}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        det = metrics["detector"]
        res[name] = {"wall_s": round(wall, 2), "frames_to_detector": metrics["totals"]["frames_to_detector"],
                     "kept": metrics["totals"]["kept"], "filter_busy_s": metrics["stages"]["filter"]["busy_seconds"],
                     "batches": det["batches"], "batch_size_mean": det["batch_size_mean"],
                     "batch_fill_mean": det["batch_fill_mean"], "detector_busy_s": det["busy_seconds"]}
        log(f"  short clips, {name}: {wall:.1f}s, batch fill {det['batch_fill_mean']:.0%}")
    res["ratio"] = round(res["clips"]["wall_s"] / res["joined"]["wall_s"], 3)
    return res


def section_gpu(corpus: list[Path], work: Path, device: str, n_frames: int = 256) -> dict[str, Any]:
    """Filter throughput of a YOLOv8n built from its yaml (random weights: speed only, nothing to
    download) at batch 1, 8, 32, FP32 and (on CUDA) FP16; then the whole job on ``device`` with that
    model, sampling GPU utilization (nvidia-smi) while the filter stage is busy."""
    import threading

    import torch
    from PIL import Image
    from ultralytics import YOLO

    from video_miner.config import load_config
    from video_miner.observe.metrics import RunMetrics
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    frames_dir = work / "gpu-frames"
    if not any(frames_dir.rglob("*.jpg")):
        ffmpeg_extract(corpus, frames_dir)
    images = [np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1] for p in sorted(frames_dir.rglob("*.jpg"))[:n_frames]]
    weights = work / "yolov8n-random.pt"
    YOLO("yolov8n.yaml", task="detect").save(weights)
    cuda = device.startswith("cuda")
    throughput = []
    for half in (False, True) if cuda else (False,):
        for batch in (1, 8, 32):
            model = YOLO(str(weights), task="detect")
            kw: dict[str, Any] = {"device": device, "verbose": False, "quantize": 16 if half else None}
            model.predict(images[:batch], **kw)  # warm-up: predictor, CUDA kernels
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            for i in range(0, len(images), batch):
                model.predict(images[i:i + batch], **kw)
            if cuda:
                torch.cuda.synchronize()
            fps = len(images) / (time.perf_counter() - started)
            throughput.append({"batch": batch, "fp16": half, "frames_per_s": round(fps, 1)})
            log(f"  gpu section: batch {batch} fp16 {half}: {fps:.1f} frames/s")

    samples: list[tuple[float, float]] = []
    sampler = None
    if cuda and shutil.which("nvidia-smi"):
        sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                    "-lms", "100"], stdout=subprocess.PIPE, text=True)

        def read() -> None:
            assert sampler is not None and sampler.stdout is not None
            for line in sampler.stdout:
                if line.strip().isdigit():
                    samples.append((time.monotonic(), float(line)))

        threading.Thread(target=read, daemon=True).start()
    clips, _ = clip_corpus(work)
    out = work / "job-gpu"
    shutil.rmtree(out, ignore_errors=True)
    # A yaml-built model has no class names: its classes are "0".."79".
    config = load_config(None, {"output": str(out), "filter.model": str(weights), "filter.classes": ["0"],
                                "filter.conf": 0.4, "filter.device": device, "extract.mode": "fps", "extract.fps": 1.0})
    metrics = RunMetrics()
    started = time.perf_counter()
    # The short clips: one frame each, so only batches formed across videos can fill the GPU.
    mine(RunRequest(inputs=[str(v) for v in clips], config=config), metrics=metrics)
    job_s = time.perf_counter() - started
    detector = json.loads((out / "metrics.json").read_text())["detector"]
    busy_fraction = None
    if sampler is not None:
        sampler.terminate()
        # The filter's busy periods, from the run's own timeline (same monotonic clock).
        spans, since = [], None
        for point in (p for p in metrics.timeline if p["stage"] == "filter"):
            if point["busy"] and since is None:
                since = point["t"]
            elif not point["busy"] and since is not None:
                spans.append((metrics.started_at + since, metrics.started_at + point["t"]))
                since = None
        inside = [u for t, u in samples if any(a <= t <= b for a, b in spans)]
        busy_fraction = round(sum(inside) / len(inside) / 100, 3) if inside else None
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    log(f"  gpu section on {name}: whole job {job_s:.1f}s, GPU busy while filtering {busy_fraction}")
    log(f"  gpu section: short clips batch fill {detector['batch_fill_mean']:.0%} of {detector['max_batch']}")
    return {"device": name, "frames": len(images), "throughput": throughput, "job_s": round(job_s, 2),
            "clips_batch_fill_mean": detector["batch_fill_mean"], "clips_batch_size_p50": detector["batch_size_p50"],
            "max_batch": detector["max_batch"], "gpu_busy_fraction_while_filtering": busy_fraction}


def plot(job: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["hand-made", "video-miner --sequential", "video-miner --async-mode"]
    walls = [job["hand_made"]["wall_s"], job["sequential"]["wall_s"], job["async"]["wall_s"]]
    dets = [job["hand_made"]["frames_to_detector"], job["sequential"]["frames_to_detector"],
            job["async"]["frames_to_detector"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.barh(names, walls, color=["#999", "#4a8", "#284"])
    a.set_xlabel("wall time, s (lower is better)")
    for i, w in enumerate(walls):
        a.text(w, i, f" {w:.0f}s", va="center")
    b.barh(names, dets, color=["#999", "#4a8", "#284"])
    b.set_xlabel("frames sent to the detector")
    b.set_yticks([])
    fig.suptitle(f"whole job on {job['videos']} videos (person, conf 0.4, 1 fps), {os.cpu_count()} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--skip", default="",
                        help="comma-separated sections to skip: extract,job,dedup,memory,clips,gallery,select,models,"
                             "tracks,ray")
    parser.add_argument("--gpu", nargs="?", const="cuda:0", default=None, metavar="DEVICE",
                        help="also run section 6 on this device (default cuda:0; cpu to try it without a GPU)")
    parser.add_argument("--live", action="store_true", help="also run section 9: live streams sustained")
    parser.add_argument("--soak", type=float, default=0, metavar="MINUTES", help="also run the live soak this long")
    parser.add_argument("--compare", type=Path, default=None, metavar="JSON",
                        help="a previous bench-results.json: print its figures beside this run's")
    args = parser.parse_args()
    before = json.loads(args.compare.read_text()) if args.compare else None
    skip = set(args.skip.split(","))
    os.environ["YOLO_OFFLINE"] = "1"
    corpus = build_corpus(args.work / "corpus", args.copies)
    previous = args.out / "bench-results.json"
    # Sections skipped this time keep their last figures.
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() and skip - {""} else {}
    results.update({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}, "videos": len(corpus)})
    log(f"corpus: {len(corpus)} videos")
    if "extract" not in skip:
        results["extraction"] = section_extraction(corpus, args.work)
        log(f"1 extraction: {results['extraction']}")
    if "job" not in skip:
        job: dict[str, Any] = {"videos": len(corpus)}
        job["hand_made"] = hand_made(corpus, args.work)
        job["async"] = miner_job(corpus, args.work / "job-async", "async-mode")
        job["sequential"] = miner_job(corpus, args.work / "job-seq", "sequential")
        plain = args.work / "pHash-only.yaml"
        plain.write_text("dedup:\n  semantic: false\n")
        job["async_phash_only"] = miner_job(corpus, args.work / "job-phash", "async-mode", plain)
        job["startup"] = startup(args.work)
        # Strict: within the threshold of a frame video-miner keeps. Represented: of a frame it keeps
        # or removed as a duplicate of a kept one (its dedup keeps the sharpest of a group, the
        # hand-made script the first, so two groups' representatives can be up to 2x apart).
        job["overlap_async"] = round(overlap(job["async"]["hashes"], job["hand_made"]["hashes"]), 4)
        job["overlap_async_represented"] = round(overlap(job["async"]["represented"], job["hand_made"]["hashes"]), 4)
        job["ratio_async"] = round(job["async"]["wall_s"] / job["hand_made"]["wall_s"], 3)
        job["ratio_sequential"] = round(job["sequential"]["wall_s"] / job["hand_made"]["wall_s"], 3)
        # A stage is occupied while it sets up (loads and warms its model, while the stages before it
        # already run) and while it processes items: the pipeline cannot end before its slowest
        # stage has done both. Busy time alone is reported too.
        # The filter's workers mostly wait on the shared detector, which runs one batch at a time:
        # the filter stage is occupied while the detector is (plus the model's warm-up).
        stages, detector = job["async"]["stages"], job["async"]["detector"]

        def busy_of(name: str) -> float:
            if name == "filter" and detector:
                return float(detector["busy_seconds"])
            return float(stages[name]["busy_seconds"]) / stages[name]["workers"]

        def occupied(name: str) -> float:
            return busy_of(name) + stages[name]["setup_seconds"] / stages[name]["workers"]

        slowest = max(stages, key=occupied)
        wall = job["async"]["stages_seconds"]
        busy = busy_of(slowest)
        results["overlap"] = {"slowest_stage": slowest, "slowest_busy_s": round(busy, 2),
                              "slowest_setup_s": round(stages[slowest]["setup_seconds"] / stages[slowest]["workers"], 2),
                              "stages_wall_s": wall, "wall_over_slowest": round(wall / occupied(slowest), 3),
                              "wall_over_slowest_busy_only": round(wall / busy, 3)}
        for k in ("hand_made", "async", "sequential", "async_phash_only"):
            job[k].pop("hashes")
            job[k].pop("represented", None)
        results["job"] = job
        args.out.mkdir(parents=True, exist_ok=True)
        plot(job, args.out / "bench-whole-job.png")
        log(f"2 whole job: hand-made {job['hand_made']['wall_s']}s, async {job['async']['wall_s']}s "
            f"(x{job['ratio_async']}), sequential {job['sequential']['wall_s']}s, overlap {job['overlap_async']:.1%} "
            f"(represented {job['overlap_async_represented']:.1%})")
        log(f"3 overlap: {results['overlap']}")
    if "dedup" not in skip:
        results["dedup"] = section_dedup([10_000, 100_000, 1_000_000])
    if "memory" not in skip:
        results["memory"] = section_memory(corpus, args.work)
    if "clips" not in skip:
        results["short_clips"] = section_short_clips(args.work)
        log(f"7 short clips: {results['short_clips']['ratio']} (clips / joined)")
    if "gallery" not in skip:
        from scripts.bench_gallery import section_gallery

        images = sorted((args.work / "job-async" / "dataset" / "images").rglob("*.jpg"))[:20] or \
            sorted((args.work / "clips-out-joined" / "dataset" / "images").rglob("*.jpg"))[:20]
        results["gallery"] = section_gallery(args.work, images)
        log(f"8 gallery: {results['gallery']}")
    if "select" not in skip:
        from scripts.bench_select import section_select

        results["select"] = section_select(args.work)
        log(f"10 select: {json.dumps(results['select'])}")
    if "models" not in skip:
        from scripts.bench_models import section_live_models, section_models

        results["models"] = {"files": section_models(args.work), "live": section_live_models(args.work)}
        log(f"11 models: {json.dumps(results['models'])}")
    if "tracks" not in skip:
        from scripts.bench_tracks import section_tracks

        results["tracks"] = section_tracks(args.work / "tracks")
        log(f"12 tracks: {json.dumps(results['tracks'])}")
    if "ray" not in skip:
        from scripts.bench_ray import section_ray

        results["ray"] = section_ray(args.work / "ray", 24)
        log(f"13 ray: {json.dumps(results['ray'])}")
    if args.gpu:
        results["gpu"] = section_gpu(corpus, args.work, args.gpu)
    if args.live:
        from scripts.bench_live import capacity

        results["live"] = {f"{fps:g}fps": capacity(args.work, fps) for fps in (1.0, 5.0)}
    if args.soak:
        from scripts.bench_live import plot_soak, soak

        result = soak(args.work, args.soak)
        args.out.mkdir(parents=True, exist_ok=True)
        plot_soak(result, args.out / "bench-live-soak.png")
        result["rss"] = result["rss"][::12]  # one sample a minute in the JSON
        results["soak"] = result
        log(f"soak: {result['ratio']} (last / first 10 min peak RSS)")
    results["measured"] = {"date": time.strftime("%Y-%m-%d"), "commit": _commit()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-results.json").write_text(json.dumps(results, indent=1))
    log(json.dumps(results, indent=1))
    if before is not None:
        compare(before, results)


#: The figures the table is read for: (label, path in bench-results.json).
HEADLINES = [
    ("1 extraction / ffmpeg", ("extraction", "ratio")),
    ("2 whole job / hand-made", ("job", "ratio_async")),
    ("2 whole job, s", ("job", "async", "wall_s")),
    ("2 hand-made, s", ("job", "hand_made", "wall_s")),
    ("2 frames to the detector", ("job", "async", "frames_to_detector")),
    ("2 frames to the detector, pHash only", ("job", "async_phash_only", "frames_to_detector")),
    ("2 hand-made frames kept (overlap)", ("job", "overlap_async")),
    ("2 start-up: a 3-frame run, s", ("job", "startup", "run_3_frames_s")),
    ("3 wall / slowest stage", ("overlap", "wall_over_slowest")),
    ("5 peak RSS 50 / 10 videos", ("memory", "ratio")),
    ("7 short clips / joined", ("short_clips", "ratio")),
    ("7 short clips, s", ("short_clips", "clips", "wall_s")),
]


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def compare(before: dict[str, Any], now: dict[str, Any]) -> None:
    """Old vs new, figure by figure (what a change under a benchmark did to it)."""
    was = before.get("measured", {})
    log(f"\n{'figure':<40} {'before':>12} {'now':>12}   (before: {was.get('date', '?')} {was.get('commit', '?')})")
    for label, path in HEADLINES:
        old, new = _get(before, path), _get(now, path)
        if old is None and new is None:
            continue
        log(f"{label:<40} {old!s:>12} {new!s:>12}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
