"""Stage 5: labels and export. Builds the whole dataset from the registry's done videos into a
staging folder and swaps it in, so the dataset and manifest only ever hold finished videos."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from .config import MinerConfig
from .dedup import resolve_duplicates
from .fsutil import replace_dir
from .registry import FrameRow, Registry

Labeller = Callable[[list[Path]], list[list[dict[str, Any]]]]


@dataclass
class ExportSummary:
    frames: int
    candidates: int
    kept: int
    duplicates: int
    filtered: int


def frame_key(row: FrameRow) -> str:
    return f"{row.video_id}@{row.timestamp:.3f}"


def _split(video_id: str, val_fraction: float) -> str:
    """By video, so near-identical neighbouring frames never straddle train and val."""
    bucket = int(hashlib.sha256(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_dataset(registry: Registry, config: MinerConfig, output: Path, labeller: Labeller | None = None) -> ExportSummary:
    rows = registry.done_frames()
    videos = {v["video_id"]: v for v in registry.videos()}
    candidates = [r for r in rows if r.decision == "candidate"]
    order = {vid: v["ord"] for vid, v in videos.items()}
    # Most preferred first: sharpest, then the user's input order, then earliest in the video.
    priority = sorted(range(len(candidates)), key=lambda i: (-candidates[i].blur, order[candidates[i].video_id],
                                                            candidates[i].video_id, candidates[i].timestamp))
    hashes = np.array([r.phash for r in candidates], dtype=np.uint64)
    if config.dedup.enabled:
        dup_of = resolve_duplicates(hashes, np.array(priority, dtype=np.int64), config.dedup.threshold)
    else:
        dup_of = np.full(len(candidates), -1, dtype=np.int64)
    kept = [r for r, d in zip(candidates, dup_of, strict=True) if d < 0]
    duplicate_of = {frame_key(r): frame_key(candidates[d]) for r, d in zip(candidates, dup_of, strict=True) if d >= 0}

    detections = {frame_key(r): r.detections for r in kept}
    if labeller is not None and kept:
        for r, dets in zip(kept, labeller([output / r.file for r in kept]), strict=True):
            detections[frame_key(r)] = dets

    staging = output / "dataset.staging"
    shutil.rmtree(staging, ignore_errors=True)
    final = output / "dataset"
    splits: dict[str, list[FrameRow]] = {"train": [], "val": []}
    for r in kept:
        splits[_split(r.video_id, config.export.val_fraction)].append(r)
    if not splits["val"] or not splits["train"]:
        # Too few videos to hold some out: Ultralytics still needs a val set, so it reuses train.
        splits = {"train": kept, "val": []}
    image_paths: dict[str, str] = {}
    for split, members in splits.items():
        (staging / "images" / split).mkdir(parents=True, exist_ok=True)
        (staging / "labels" / split).mkdir(parents=True, exist_ok=True)
        for r in members:
            name = Path(r.file).name
            _link(output / r.file, staging / "images" / split / name)
            lines = [f"{d['class_index']} " + " ".join(f"{v:.6f}" for v in d["xywhn"]) for d in detections[frame_key(r)]]
            (staging / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            image_paths[frame_key(r)] = f"images/{split}/{name}"
    data = {
        "train": "images/train",
        "val": "images/val" if splits["val"] else "images/train",
        "nc": len(config.filter.classes),
        "names": dict(enumerate(config.filter.classes)),
    }
    (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if "coco" in config.export.formats:
        _write_coco(staging, splits, detections, config.filter.classes, image_paths)
    _write_manifest(staging, rows, videos, duplicate_of, image_paths, detections, config.export.manifest)
    replace_dir(staging, final)

    per_video: dict[str, tuple[int, int]] = {}
    kept_count = Counter(r.video_id for r in kept)
    dup_count = Counter(candidates[i].video_id for i in range(len(candidates)) if dup_of[i] >= 0)
    for vid in {r.video_id for r in rows} | set(videos):
        per_video[vid] = (kept_count[vid], dup_count[vid])
    registry.set_dedup_counts(per_video)
    return ExportSummary(
        frames=len(rows), candidates=len(candidates), kept=len(kept), duplicates=len(duplicate_of),
        filtered=len(rows) - len(candidates),
    )


def _write_coco(staging: Path, splits: dict[str, list[FrameRow]], detections: dict[str, list[dict[str, Any]]],
                classes: list[str], image_paths: dict[str, str]) -> None:
    (staging / "annotations").mkdir(exist_ok=True)
    for split, members in splits.items():
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, r in enumerate(members, start=1):
            path = image_paths[frame_key(r)]
            with Image.open(staging / path) as im:
                w, h = im.size
            images.append({"id": image_id, "file_name": path, "width": w, "height": h})
            for d in detections[frame_key(r)]:
                xc, yc, bw, bh = d["xywhn"]
                box = [round((xc - bw / 2) * w, 2), round((yc - bh / 2) * h, 2), round(bw * w, 2), round(bh * h, 2)]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": d["class_index"] + 1,
                                    "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0, "score": d["conf"]})
        coco = {"images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
        (staging / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def _write_manifest(staging: Path, rows: list[FrameRow], videos: dict[str, dict[str, Any]], duplicate_of: dict[str, str],
                    image_paths: dict[str, str], detections: dict[str, list[dict[str, Any]]], fmt: str) -> None:
    records = []
    for r in rows:
        key = frame_key(r)
        video = videos[r.video_id]
        if key in image_paths:
            decision, reason = "kept", None
        elif key in duplicate_of:
            decision, reason = "duplicate", f"duplicate of {duplicate_of[key]}"
        else:
            decision, reason = "filtered", r.reason
        records.append({
            "frame": key,
            "video_id": r.video_id,
            "source": video["input"],
            "source_meta": json.loads(video["source_json"]) if video["source_json"] else {},
            "timestamp": r.timestamp,
            "frame_index": r.frame_index,
            "image": image_paths.get(key),
            "phash": f"{r.phash:016x}",
            "blur": r.blur,
            "detections": detections.get(key, r.detections),
            "decision": decision,
            "duplicate_of": duplicate_of.get(key),
            "reason": reason,
        })
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for rec in records:
            rec["source_meta"] = json.dumps(rec["source_meta"])
            rec["detections"] = json.dumps(rec["detections"])
        pq.write_table(pa.Table.from_pylist(records), staging / "manifest.parquet")
    else:
        with (staging / "manifest.jsonl").open("w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
