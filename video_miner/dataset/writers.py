"""The dataset's formats: YOLO (images, labels, data.yaml: what ``yolo train`` loads) and COCO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from ..errors import UnsafePath
from ..records import Detection, FrameRow
from ..store.files import is_inside, make_dirs, place, write_text

#: Kept frames per split, and each kept frame's labels by its key.
Splits = dict[str, list[FrameRow]]
Labels = dict[str, list[Detection]]


def write_yolo(staging: Path, output: Path, splits: Splits, labels: Labels, classes: list[str]) -> dict[str, str]:
    """Images (hard links) and labels per split, and data.yaml; returns each kept frame's image path."""
    image_paths: dict[str, str] = {}
    for split, members in splits.items():
        make_dirs(staging / "images" / split, staging)
        make_dirs(staging / "labels" / split, staging)
        for r in members:
            name = Path(r.file).name
            source = output / r.file
            if not is_inside(source, output):  # a link planted among the candidates
                raise UnsafePath(f"{r.key}: its picture {source} leads out of the output folder",
                                 "remove that link and run the same command again")
            place(source, staging / "images" / split / name, staging)
            lines = [f"{d.class_index} " + " ".join(f"{v:.6f}" for v in d.xywhn) for d in labels[r.key]]
            write_text(staging / "labels" / split / f"{Path(name).stem}.txt", "\n".join(lines) + ("\n" if lines else ""),
                       staging)
            image_paths[r.key] = f"images/{split}/{name}"
    data = {
        "train": "images/train",
        "val": "images/val" if splits["val"] else "images/train",
        "nc": len(classes),
        "names": dict(enumerate(classes)),
    }
    write_text(staging / "data.yaml", yaml.safe_dump(data, sort_keys=False), staging)
    return image_paths


def write_coco(staging: Path, splits: Splits, labels: Labels, classes: list[str], image_paths: dict[str, str]) -> None:
    make_dirs(staging / "annotations", staging)
    for split, members in splits.items():
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, r in enumerate(members, start=1):
            path = image_paths[r.key]
            with Image.open(staging / path) as im:
                w, h = im.size
            images.append({"id": image_id, "file_name": path, "width": w, "height": h})
            for d in labels[r.key]:
                xc, yc, bw, bh = d.xywhn
                box = [round((xc - bw / 2) * w, 2), round((yc - bh / 2) * h, 2), round(bw * w, 2), round(bh * h, 2)]
                annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": d.class_index + 1,
                              "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0, "score": d.conf}
                if d.track is not None:  # CVAT's and labelformat's place for per-object fields
                    annotation["attributes"] = {"track_id": d.track}
                annotations.append(annotation)
        coco = {"images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
        write_text(staging / "annotations" / f"instances_{split}.json", json.dumps(coco), staging)
