"""Loads an export with the labelling tool's own library and prints what the tool saw, as JSON.

Run with the tools' interpreter (``.venv-tools``: FiftyOne, label-studio-sdk and labelformat pin
versions the miner's own environment cannot share), by tests/test_handover.py:

    .venv-tools/bin/python tests/load_with_tool.py FORMAT FOLDER

Output: ``{"classes": [...], "images": {name: {"boxes": [[label, left, top, width, height, score]],
"fields": {...}, "tracks": [track id or None per box], "texts": [...]}}}`` (texts: Label Studio's text
read per box), boxes in pixels, so the test compares every tool with the manifest the same way
(CVAT: labelformat models no attributes, so no tracks).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def label_studio(folder: Path) -> dict[str, Any]:
    """Label Studio's own model of a labelling config and of a prediction: the config must be valid
    and every task's predictions must validate against it."""
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface((folder / "label_config.xml").read_text())
    interface.validate()
    classes = interface.get_control("label").labels
    images: dict[str, Any] = {}
    for task in json.loads((folder / "tasks.json").read_text()):
        for obj in interface.objects:
            if task["data"].get(obj.value_name) is None:
                raise SystemExit(f"task has no data for <{obj.tag} value=${obj.value_name}>")
        boxes, tracks, ids, texts = [], [], [], {}
        for prediction in task["predictions"]:
            errors = interface.validate_prediction(prediction, return_errors=True)
            if errors:
                raise SystemExit(f"Label Studio rejects a prediction: {errors}")
            for region in prediction["result"]:
                w, h, v = region["original_width"], region["original_height"], region["value"]
                if region["type"] == "textarea":  # a region's text: the box with its id
                    texts[region["id"]] = " ".join(v["text"])
                    continue
                boxes.append([v["rectanglelabels"][0], v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100,
                              v["height"] * h / 100, region["score"]])
                tracks.append((region.get("meta") or {}).get("track_id"))
                ids.append(region["id"])
        images[task["data"]["image"].rsplit("/", 1)[-1]] = {"boxes": boxes, "fields": task["data"], "tracks": tracks,
                                                            "texts": [texts.get(i) for i in ids]}
    return {"classes": list(classes), "images": images}


def cvat(folder: Path) -> dict[str, Any]:
    """labelformat's CVAT XML model (pydantic-xml over CVAT for images 1.1) and its COCO reader over
    the COCO 1.0 file: both must give the same boxes."""
    from labelformat.formats.coco import COCOObjectDetectionInput
    from labelformat.formats.cvat import CVATObjectDetectionInput
    from labelformat.model.bounding_box import BoundingBoxFormat

    def boxes(reader: Any) -> dict[str, list[list[Any]]]:
        return {label.image.filename: [[o.category.name, *o.box.to_format(BoundingBoxFormat.XYWH)]
                                       for o in label.objects] for label in reader.get_labels()}

    xml = CVATObjectDetectionInput(folder / "annotations.xml")
    coco = COCOObjectDetectionInput(folder / "annotations" / "instances_default.json")
    from_xml, from_coco = boxes(xml), boxes(coco)
    if set(from_xml) != set(from_coco):
        raise SystemExit("the CVAT XML and the COCO file name different images")
    for name, found in from_xml.items():
        if len(found) != len(from_coco[name]) or any(
                a[0] != b[0] or max(abs(x - y) for x, y in zip(a[1:], b[1:], strict=True)) > 0.02
                for a, b in zip(found, from_coco[name], strict=True)):
            raise SystemExit(f"{name}: the CVAT XML and the COCO file disagree")
    return {"classes": [c.name for c in xml.get_categories()],
            "images": {name: {"boxes": [[*b, None] for b in found], "fields": {}} for name, found in from_xml.items()}}


def fiftyone(folder: Path) -> dict[str, Any]:
    """FiftyOne's importer for the folder (it reads the samples without the database)."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    from fiftyone.utils.data.importers import LegacyFiftyOneDatasetImporter

    importer = LegacyFiftyOneDatasetImporter(str(folder))
    images: dict[str, Any] = {}
    with importer:
        info = importer.get_dataset_info()
        for sample in importer:
            w, h = sample.metadata.width, sample.metadata.height
            fields = {k: sample[k] for k in ("frame", "video_id", "source", "timestamp", "split", "stands_for")}
            fields["tags"] = list(sample.tags)
            if not Path(sample.filepath).is_file():
                raise SystemExit(f"FiftyOne finds no image at {sample.filepath}")
            images[Path(sample.filepath).name] = {"fields": fields, "boxes": [
                [d.label, d.bounding_box[0] * w, d.bounding_box[1] * h, d.bounding_box[2] * w,
                 d.bounding_box[3] * h, d.confidence] for d in sample.predictions.detections],
                "tracks": [d.index for d in sample.predictions.detections],
                "texts": [getattr(d, "text", None) for d in sample.predictions.detections]}
    return {"classes": info["classes"], "images": images}


LOADERS = {"label-studio": label_studio, "cvat": cvat, "fiftyone": fiftyone}

if __name__ == "__main__":
    print(json.dumps(LOADERS[sys.argv[1]](Path(sys.argv[2]))))
