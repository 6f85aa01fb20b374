"""Section 10 of scripts/bench.py: frames chosen for what they show.

- Copies: every shared video mirrored, cropped to 70/80/90%, panned, letterboxed, 30% brighter and
  darker, re-encoded at 360p, sped up 1.25x and logo-stamped, each a video of its own, mined with
  the originals. Recognised share = 1 - (frames kept beyond what the originals alone keep) / (copy
  frames that showed the classes), pHash alone vs pHash + content.
- Different people: the person video at 2 fps; pairs of frames across the moment one person leaves
  and the next arrives (the last 4 of a visit against the first 4 of the next): the share that ends
  up as one frame.
- Budget: the coverage radius of ``select.budget`` N against N frames evenly spaced in time, on the
  frames the copy run kept; and the time to pick 1,000 of 1,000,000.
- The detector's time with and without embeddings; the content pass over 10,000, 100,000 and
  1,000,000 frames (its neighbours index, then the walk).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = sorted((SHARED / "data" / "videos").glob("*.m[pk][4v]"))
PERSON = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
CLASSES = ["person", "bottle", "car"]
#: Frames per second written into a copy: the miner samples 1 a second.
COPY_FPS = 4


def _transform(kind: str, im: Image.Image) -> Image.Image:
    w, h = im.size
    if kind == "mirrored":
        return ImageOps.mirror(im)
    if kind.startswith("crop"):
        share = int(kind[4:]) / 100
        cw, ch = int(w * share), int(h * share)
        return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    if kind == "panned":
        return im.crop((w - int(w * 0.8), 0, w, h))
    if kind == "letterboxed":
        boxed = Image.new("RGB", (w, int(w * 0.75)))
        boxed.paste(im, (0, (boxed.height - h) // 2))
        return boxed
    if kind in ("brighter", "darker"):
        return ImageEnhance.Brightness(im).enhance(1.3 if kind == "brighter" else 0.7)
    if kind == "360p":
        return im.resize((int(w * 360 / h), 360))
    if kind == "logo":
        stamped = im.copy()
        draw = ImageDraw.Draw(stamped)
        draw.rectangle((w - 170, 12, w - 12, 62), fill=(250, 250, 250))
        draw.text((w - 150, 28), "REUPLOAD", fill=(200, 0, 0))
        return stamped
    if kind == "faster":
        return im
    raise ValueError(kind)


KINDS = ("mirrored", "crop70", "crop80", "crop90", "panned", "letterboxed", "brighter", "darker", "360p", "faster",
         "logo")


def make_copies(folder: Path) -> dict[str, list[Path]]:
    """Per original: its copies, each a video of its own (COPY_FPS frames a second)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for video in VIDEOS:
        paths = {kind: folder / f"{video.stem}-{kind}.mp4" for kind in KINDS}
        out[video.name] = list(paths.values())
        if all(p.exists() for p in paths.values()):
            continue
        frames: list[tuple[float, Image.Image]] = []
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            next_t = 0.0
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t + 1e-6 >= next_t:
                    frames.append((t, frame.to_image()))
                    next_t += 1 / COPY_FPS
        for kind, path in paths.items():
            images = [_transform(kind, im) for _, im in frames]
            # 1.25x speed: the same frames shown for 0.8 of the time.
            rate = COPY_FPS * 1.25 if kind == "faster" else COPY_FPS
            _write(path, images, rate, crf=34 if kind == "360p" else 20)
    return out


def _write(path: Path, images: list[Image.Image], rate: float, crf: int) -> None:
    from fractions import Fraction

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate).limit_denominator(100))
        stream.width, stream.height = (v // 2 * 2 for v in images[0].size)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for im in images:
            container.mux(stream.encode(av.VideoFrame.from_image(im.resize((stream.width, stream.height)))))
        container.mux(stream.encode(None))


def _mine(inputs: list[Path], out: Path, **overrides: Any) -> list[dict[str, Any]]:
    from video_miner.config import load_config
    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest

    config = load_config(None, {"output": str(out), "filter.model": str(MODEL), "filter.classes": CLASSES,
                                "filter.conf": 0.4, **overrides})
    mine(RunRequest(inputs=[str(p) for p in inputs], config=config, engine="async", fresh=True))
    return [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]


def section_copies(work: Path) -> dict[str, Any]:
    copies = make_copies(work / "copies")
    originals = list(VIDEOS)
    every_copy = [p for paths in copies.values() for p in paths]
    result: dict[str, Any] = {"videos": len(originals) + len(every_copy)}
    for mode, overrides in (("phash", {"dedup.semantic": False}), ("content", {})):
        alone = _mine(originals, work / f"copies-alone-{mode}", **overrides)
        t0 = time.perf_counter()
        rows = _mine(originals + every_copy, work / f"copies-all-{mode}", **overrides)
        wall = time.perf_counter() - t0
        copy_ids = {r["video_id"] for r in rows if any(r["source"].endswith(p.name) for p in every_copy)}
        copy_candidates = sum(r["decision"] in ("kept", "duplicate") and r["video_id"] in copy_ids for r in rows)
        extra = sum(r["decision"] == "kept" for r in rows) - sum(r["decision"] == "kept" for r in alone)
        per_kind = {}
        for kind in KINDS:
            ids = {r["video_id"] for r in rows if r["source"].endswith(f"-{kind}.mp4")}
            cands = [r for r in rows if r["video_id"] in ids and r["decision"] in ("kept", "duplicate")]
            per_kind[kind] = round(sum(r["decision"] == "duplicate" for r in cands) / max(1, len(cands)), 3)
        result[mode] = {"copy_frames_with_classes": copy_candidates, "kept_originals_alone":
                        sum(r["decision"] == "kept" for r in alone), "kept_with_copies":
                        sum(r["decision"] == "kept" for r in rows), "recognised": round(1 - extra / max(1, copy_candidates), 4),
                        "copy_frames_that_are_duplicates": per_kind, "wall_s": round(wall, 2)}
    return result


def _group(rows: dict[str, dict[str, Any]], key: str) -> str:
    row = rows[key]
    return row["duplicate_of"] if row["decision"] == "duplicate" and row["duplicate_of"] else key


#: The six visits of the person video (seconds), one person each (checked by eye: six different
#: people); between them the room is empty for 3.5-6 s.
VISITS = ((6.5, 19.5), (23.0, 44.5), (50.5, 69.5), (74.5, 86.5), (92.5, 119.5), (123.5, 135.5))


def section_people(work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for mode, overrides in (("phash", {"dedup.semantic": False}), ("content", {})):
        rows = _mine([PERSON], work / f"people-{mode}", **{"extract.mode": "fps", "extract.fps": 2.0,
                                                           "filter.classes": ["person"], **overrides})
        by_key = {r["frame"]: r for r in rows}
        shown = sorted((r for r in rows if r["decision"] in ("kept", "duplicate")), key=lambda r: r["timestamp"])
        visits = [[r["frame"] for r in shown if start <= r["timestamp"] <= end] for start, end in VISITS]
        # The moment one person leaves and the next comes in: the last 4 frames against the first 4.
        pairs = [(a, b) for v, w in itertools.pairwise(visits) for a in v[-4:] for b in w[:4]]
        across = [(a, b) for v, w in itertools.combinations(visits, 2) for a in v for b in w]
        merged = sum(_group(by_key, a) == _group(by_key, b) for a, b in pairs)
        result[mode] = {"frames_per_visit": [len(v) for v in visits], "pairs": len(pairs), "merged": merged,
                        "merged_share": round(merged / max(1, len(pairs)), 4),
                        "any_two_people_merged_share": round(
                            sum(_group(by_key, a) == _group(by_key, b) for a, b in across) / max(1, len(across)), 4),
                        "kept": sum(r["decision"] == "kept" for r in rows)}
    return result


def section_budget(work: Path) -> dict[str, Any]:
    from video_miner.dataset.budget import BudgetRule, choose, radius_of
    from video_miner.records import FrameEmbedding

    db = sqlite3.connect(work / "copies-all-content" / "registry.sqlite")
    kept = {json.loads(line)["frame"] for line in (work / "copies-all-content" / "dataset" / "manifest.jsonl")
            .read_text().splitlines() if json.loads(line)["decision"] == "kept"}
    rows = []
    for video_id, ts, blob, order in db.execute(
            "SELECT f.video_id, f.timestamp, f.embedding, v.ord FROM frames f JOIN videos v USING (video_id) "
            "WHERE f.embedding IS NOT NULL"):
        if f"{video_id}@{ts:.3f}" in kept:
            rows.append((order, ts, FrameEmbedding.from_bytes(blob).whole))
    rows.sort(key=lambda r: (r[0], r[1]))
    vectors = np.stack([r[2] for r in rows])
    out: dict[str, Any] = {"pool": len(rows)}
    for n in (10, 25, 50):
        chosen = choose(vectors, [["x"]] * len(rows), [[1.0]] * len(rows), BudgetRule(n, {}, 0.0, 0.4, 0.15))
        even = np.linspace(0, len(rows) - 1, n).round().astype(int).tolist()
        out[f"n{n}"] = {"budget_radius": round(chosen.radius, 4), "even_radius": round(radius_of(vectors, even), 4),
                        "ratio": round(chosen.radius / radius_of(vectors, even), 3)}
    rng = np.random.default_rng(0)
    big = _clustered(rng, 1_000_000, 256)
    t0 = time.perf_counter()
    choose(big, [["x"]] * len(big), [[1.0]] * len(big), BudgetRule(1000, {}, 0.0, 0.4, 0.15))
    out["select_1000_of_1M_s"] = round(time.perf_counter() - t0, 2)
    return out


def _clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 5000) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def section_embedding_cost(repeats: int = 3) -> dict[str, Any]:
    from video_miner.detect.detector import Detector, DetectorSpec

    frames = []
    with av.open(str(PERSON)) as container:
        stream = container.streams.video[0]
        for k, frame in enumerate(container.decode(stream)):
            if k % 10 == 0:
                frames.append(frame.to_image())
            if len(frames) == 64:
                break
    out: dict[str, Any] = {}
    for embed in (False, True):
        detector = Detector(DetectorSpec(str(MODEL), ("person",), 0.4, embed=embed))
        detector.warm_up()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, len(frames), detector.batch_size):
                detector.detect(frames[start:start + detector.batch_size])
            best = min(best, time.perf_counter() - t0)
        out["with" if embed else "without"] = round(best, 3)
    out["overhead"] = round(out["with"] / out["without"] - 1, 4)
    out["frames"] = len(frames)
    return out


def section_content_scale(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> dict[str, Any]:
    """The content pass (index + walk) over synthetic frames: one box each, 1% planted copies,
    read from their stored form (float16 bytes, as the registry holds them)."""
    from video_miner.dataset import semantic
    from video_miner.records import FrameEmbedding

    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}
    for n in sizes:
        whole = _clustered(rng, n, 256, clusters=n // 4)
        boxes = _clustered(rng, n, 384, clusters=n // 4)
        planted = rng.choice(n, n // 100, replace=False)
        whole[planted[1::2]] = whole[planted[0::2]]  # disjoint pairs of equal frames
        boxes[planted[1::2]] = boxes[planted[0::2]]
        blobs: list[bytes | None] = [FrameEmbedding(whole[i], boxes[i:i + 1]).to_bytes() for i in range(n)]
        del whole, boxes
        labels = [["person"]] * n
        t0 = time.perf_counter()
        vectors, _ = semantic.Vectors.decode(blobs, [1] * n)
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        near = semantic.neighbours(vectors.whole, 0.75)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = semantic.content_duplicates(vectors, labels, list(range(n)), 0.75, 0.94, 0.88)
        pass_s = time.perf_counter() - t0
        pairs = {(min(a, b), max(a, b)) for a, b in zip(planted[0::2], planted[1::2], strict=True)}
        caught = sum((min(k, m.of), max(k, m.of)) in pairs for k, m in found.items())
        # seconds: the whole content pass (it builds its own index); index_s: the index alone;
        # decode_s: the registry's bytes to vectors, before either
        out[str(n)] = {"seconds": round(pass_s, 2), "index_s": round(index_s, 2), "decode_s": round(decode_s, 2),
                       "neighbour_pairs": len(near.ids), "duplicates": len(found), "planted_pairs": len(pairs),
                       "planted_found": caught}
        del near, blobs, vectors, found
    return out


def section_select(work: Path) -> dict[str, Any]:
    return {"copies": section_copies(work), "people": section_people(work), "budget": section_budget(work),
            "embedding_cost": section_embedding_cost(), "content_scale": section_content_scale()}


if __name__ == "__main__":
    import os
    import sys

    os.environ["YOLO_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    work = ROOT / "bench-work"
    parts = sys.argv[1:] or ["copies", "people", "budget", "cost", "scale"]
    funcs = {"copies": lambda: section_copies(work), "people": lambda: section_people(work),
             "budget": lambda: section_budget(work), "cost": section_embedding_cost,
             "scale": section_content_scale}
    print(json.dumps({p: funcs[p]() for p in parts}, indent=1))
