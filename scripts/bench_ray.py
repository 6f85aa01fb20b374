"""Section "Ray" of the benchmarks: what ``--engine ray`` costs on one machine.

The plates config (``configs/plates.yaml``: a detector, then PP-OCR as a cascade, a keep rule) over
made clips of buses with number plates, people and signs (``scripts/media.make_plates_clip``, a
plate of its own per clip), mined with the local engine and with ``--engine ray`` on a local Ray instance
started by the run itself (as a user's first try looks), each after a warm-up run of its own kind;
the wall times, their ratio (the issue's target: <= 1.5x on one machine, Ray adding processes),
and whether the two datasets and manifests are the same bytes.

    python scripts/bench_ray.py [CLIPS]         # prints the JSON section (default 6 clips)
    python scripts/bench_ray.py actors [CLIPS]  # the same on Ray with 1, then 2 filter actors
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
STATES = ("KA", "DL", "MH", "TN", "GJ", "RJ")


def plate(k: int) -> str:
    """A plate of its own per clip: clips with the same plate are the same file, mined once."""
    return f"{STATES[k % len(STATES)]}{10 + k % 89:02d} {chr(65 + k % 26)}{chr(65 + k // 26 % 26)} {1000 + k}"


def _files(dataset: Path) -> dict[str, bytes]:
    return {p.relative_to(dataset).as_posix(): p.read_bytes() for p in sorted(dataset.rglob("*")) if p.is_file()
            and p.name != "provenance.json"}


def _mine(clips: list[Path], out: Path, engine: str, **overrides: Any) -> float:
    from video_miner.config import load_config
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    config = load_config(ROOT / "configs" / "plates.yaml", {"output": str(out), "filter.model": str(MODEL),
                                                            "export.formats": ["yolo", "coco"], **overrides})
    started = time.perf_counter()
    report = mine(RunRequest(inputs=[str(p) for p in clips], config=config, engine=engine, fresh=True))  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    if report.failures:
        raise SystemExit(f"{engine}: {[f.line() for f in report.failures]}")
    return wall


def section_ray(work: Path, n: int = 6) -> dict[str, Any]:
    from scripts.media import make_plates_clip

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    work.mkdir(parents=True, exist_ok=True)
    clips = [make_plates_clip(work / f"plates-{k}.mp4", plates=(plate(k),)) for k in range(n)]
    out: dict[str, Any] = {"clips": n, "config": "configs/plates.yaml"}
    for engine in ("async", "ray"):
        _mine(clips[:1], work / f"warm-{engine}", engine)
        out[f"{engine}_wall_s"] = round(_mine(clips, work / engine, engine), 2)
    out["ray_over_async"] = round(out["ray_wall_s"] / out["async_wall_s"], 3)
    out["same_dataset"] = _files(work / "ray" / "dataset") == _files(work / "async" / "dataset")
    manifest = (work / "async" / "dataset" / "manifest.jsonl").read_text().splitlines()
    out["frames"] = len(manifest)
    out["kept"] = sum(json.loads(line)["decision"] == "kept" for line in manifest)
    return out


def section_actors(work: Path, n: int = 6) -> dict[str, Any]:
    """The plates config on Ray with 1 and then 2 filter actors (each holds the detector and the
    OCR; half a CPU each, as the download/extract tasks, so all fit on this machine's 2)."""
    from scripts.media import make_plates_clip

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    work.mkdir(parents=True, exist_ok=True)
    clips = [make_plates_clip(work / f"plates-{k}.mp4", plates=(plate(k),)) for k in range(n)]
    half = {"ray.filter_cpus": 0.5, "ray.cpus_per_task": 0.5}
    _mine(clips[:1], work / "warm", "ray", **half)
    out: dict[str, Any] = {"clips": n}
    for actors in (1, 2):
        out[f"actors_{actors}_wall_s"] = round(
            _mine(clips, work / f"actors-{actors}", "ray", **half, **{"pipeline.filter_workers": actors}), 2)
    out["two_over_one"] = round(out["actors_2_wall_s"] / out["actors_1_wall_s"], 3)
    return out


if __name__ == "__main__":
    import tempfile

    args = sys.argv[1:]
    section = section_actors if args[:1] == ["actors"] else section_ray
    count = int(args[-1]) if args and args[-1].isdigit() else 6
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(section(Path(tmp), count), indent=1))
