"""Exports for labelling tools and trainers, each loaded by the tool's own library: Hugging Face
``datasets`` here, Label Studio's SDK, labelformat (CVAT XML and COCO) and FiftyOne's importer in
the tools' venv (tests/load_with_tool.py); and batches: --new-only after a second run with one more
video hands over only that video's frames, and diff says what changed."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .conftest import BOTTLE, ROOT, VIDEOS
from .helpers import cli_here, run, with_tool

CLASSES = ["person", "bottle"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "video_miner", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def mined(bottle_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("handover") / "out"
    report = run([str(VIDEOS / "again.mkv"), str(bottle_head)], out,
                 **{"filter.classes": CLASSES, "export.formats": ["yolo", "label-studio", "cvat", "hf"]})
    assert report.export.kept >= 4
    return out


def kept(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    return {Path(r["image"]).name: r for r in rows if r["decision"] == "kept"}


def pixels(det: dict[str, Any], width: int, height: int) -> list[float]:
    """COCO's [left, top, width, height] of a manifest box, inside the picture."""
    x, y, w, h = det["xywhn"]
    left, top = max(0.0, (x - w / 2) * width), max(0.0, (y - h / 2) * height)
    return [left, top, min(w * width, width - left), min(h * height, height - top)]


def test_hugging_face_datasets_loads_the_parquet_with_boxes_and_class_labels(mined: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the [test] extra installs datasets")
    ds = datasets.load_dataset("parquet", data_dir=str(mined / "exports" / "hf" / "all"))
    rows = [row for split in ds.values() for row in split]
    expected = kept(mined)
    assert len(rows) == len(expected) and {r["frame"] for r in rows} == {r["frame"] for r in expected.values()}
    split = next(iter(ds.values()))
    assert split.features["objects"]["category"].feature.names == CLASSES
    for row in rows:
        manifest = expected[row["image"].filename.rsplit("/", 1)[-1]] if row["image"].filename else \
            next(r for r in expected.values() if r["frame"] == row["frame"])
        assert row["image"].size == (row["width"], row["height"])
        dets = manifest["detections"]
        assert [CLASSES[c] for c in row["objects"]["category"]] == [d["class"] for d in dets]
        for box, det in zip(row["objects"]["bbox"], dets, strict=True):
            assert box == pytest.approx(pixels(det, row["width"], row["height"]), abs=0.01)
        assert row["source"] == manifest["source"] and row["video_id"] == manifest["video_id"]
    assert "load_dataset" in (mined / "exports" / "hf" / "all" / "README.md").read_text()


def test_label_studio_tasks_carry_every_box_in_percent_with_its_label_config(mined: Path) -> None:
    folder = mined / "exports" / "label-studio" / "all"
    tasks = json.loads((folder / "tasks.json").read_text())
    expected = kept(mined)
    assert len(tasks) == len(expected)
    config = ET.fromstring((folder / "label_config.xml").read_text())
    assert [label.get("value") for label in config.iter("Label")] == CLASSES
    assert config.find("Image").get("name") == "image"  # type: ignore[union-attr]
    for task in tasks:
        name = task["data"]["image"].rsplit("/", 1)[-1]
        assert (folder / "images" / name).is_file()
        manifest = expected[name]
        result = task["predictions"][0]["result"]
        assert len(result) == len(manifest["detections"])
        for box, det in zip(result, manifest["detections"], strict=True):
            value = box["value"]
            assert box["from_name"] == "label" and box["to_name"] == "image" and box["type"] == "rectanglelabels"
            assert value["rectanglelabels"] == [det["class"]] and box["score"] == det["conf"]
            x, _, w, _ = det["xywhn"]
            assert value["x"] == pytest.approx(max(0, 100 * (x - w / 2)), abs=1e-3)
            assert value["width"] == pytest.approx(100 * w, abs=1e-3)
            assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100


def test_cvat_xml_and_coco_describe_the_same_boxes(mined: Path) -> None:
    folder = mined / "exports" / "cvat" / "all"
    root = ET.parse(folder / "annotations.xml").getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    labels = [label.findtext("name") for label in root.iter("label")]
    assert labels == CLASSES
    expected = kept(mined)
    images = root.findall("image")
    assert len(images) == len(expected)
    coco = json.loads((folder / "annotations" / "instances_default.json").read_text())
    assert len(coco["images"]) == len(images) and len(coco["annotations"]) == sum(len(i.findall("box")) for i in images)
    for image in images:
        assert (folder / "images" / image.get("name", "")).is_file()
        manifest = expected[image.get("name", "")]
        width, height = int(image.get("width", 0)), int(image.get("height", 0))
        for box, det in zip(image.findall("box"), manifest["detections"], strict=True):
            left, _, w, _ = pixels(det, width, height)
            assert box.get("label") == det["class"]
            assert float(box.get("xtl", -1)) == pytest.approx(left, abs=0.01)
            assert float(box.get("xbr", -1)) == pytest.approx(left + w, abs=0.01)
            assert float(box.findtext("attribute[@name='score']") or -1) == pytest.approx(det["conf"], abs=1e-4)


def test_new_only_hands_over_only_a_new_videos_frames_and_diff_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([str(VIDEOS / "again.mkv")], out, **{"filter.classes": CLASSES})
    first = cli_here("export", "-o", str(out), "--format", "label-studio", "--new-only")
    assert first.returncode == 0, first.stdout + first.stderr
    before = kept(out)
    assert before and f"{len(before)} frames" in first.stdout
    report = run([str(VIDEOS / "again.mkv"), str(BOTTLE)], out, **{"filter.classes": CLASSES})
    assert report.videos_done == 2
    changes = cli_here("diff", "-o", str(out), "--format", "label-studio")
    after = kept(out)
    new = {name: r for name, r in after.items() if name not in before}
    assert new and all(r["video_id"] != next(iter(before.values()))["video_id"] for r in new.values())
    assert f"{len(new)} added" in changes.stdout, changes.stdout
    second = cli_here("export", "-o", str(out), "--format", "label-studio", "--new-only")
    assert second.returncode == 0
    batch = out / "exports" / "label-studio" / "batch-0002"
    tasks = json.loads((batch / "tasks.json").read_text())
    assert {t["data"]["image"].rsplit("/", 1)[-1] for t in tasks} == set(new)
    # Nothing handed over changes name: the first batch's images are still the dataset's names.
    first_batch = {p.name for p in (out / "exports" / "label-studio" / "batch-0001" / "images").iterdir()}
    assert first_batch <= set(after) | {n for n in before}
    assert "0 added" in cli_here("diff", "-o", str(out), "--format", "label-studio").stdout


def load_with_tool(fmt: str, folder: Path) -> dict[str, Any]:
    """What the tool's own library loads from ``folder`` (tests/load_with_tool.py in the tools' venv)."""
    loaded: dict[str, Any] = with_tool("load_with_tool.py", fmt, str(folder))
    return loaded


def same_as_manifest(loaded: dict[str, Any], out: Path) -> dict[str, dict[str, Any]]:
    """Every kept frame, its boxes (class, pixels, score) as the manifest has them."""
    assert loaded["classes"] == CLASSES
    expected = kept(out)
    assert set(loaded["images"]) == set(expected)
    for name, image in loaded["images"].items():
        dets = expected[name]["detections"]
        with Image.open(out / "dataset" / expected[name]["image"]) as im:
            width, height = im.size
        assert [b[0] for b in image["boxes"]] == [d["class"] for d in dets]
        for box, det in zip(image["boxes"], dets, strict=True):
            assert box[1:5] == pytest.approx(pixels(det, width, height), abs=0.02)
            assert box[5] is None or box[5] == pytest.approx(det["conf"], abs=1e-4)
    return expected


def test_label_studio_sdk_validates_the_config_and_every_prediction(mined: Path) -> None:
    loaded = load_with_tool("label-studio", mined / "exports" / "label-studio" / "all")
    expected = same_as_manifest(loaded, mined)
    for name, image in loaded["images"].items():
        assert image["fields"]["video_id"] == expected[name]["video_id"]


def test_labelformat_reads_the_cvat_xml_and_coco_alike(mined: Path) -> None:
    same_as_manifest(load_with_tool("cvat", mined / "exports" / "cvat" / "all"), mined)


def test_fiftyones_importer_reads_predictions_and_the_manifests_fields(tmp_path: Path, mined: Path) -> None:
    dest = tmp_path / "fo"
    done = cli_here("export", "-o", str(mined), "--format", "fiftyone", "--dest", str(dest))
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = load_with_tool("fiftyone", dest)
    expected = same_as_manifest(loaded, mined)
    rows = [json.loads(line) for line in (mined / "dataset" / "manifest.jsonl").read_text().splitlines()]
    stands_for: dict[str, list[str]] = {}
    for row in rows:
        if row.get("duplicate_of"):
            stands_for.setdefault(row["duplicate_of"], []).append(row["frame"])
    assert any(stands_for.values()), "the fixture should have duplicates"
    for name, image in loaded["images"].items():
        fields, row = image["fields"], expected[name]
        assert (fields["frame"], fields["video_id"], fields["source"]) == (row["frame"], row["video_id"], row["source"])
        assert fields["timestamp"] == pytest.approx(row["timestamp"])
        assert fields["split"] in fields["tags"] and row["image"].split("/")[1] == fields["split"]
        assert fields["stands_for"] == stands_for.get(row["frame"], [])
