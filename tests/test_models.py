"""Several models on every frame (issue #22), with the real models: the shared YOLO, PP-OCR from
the rapidocr-onnxruntime wheel on frames with rendered text, TransNetV2 from its wheel on a clip
joined from the shared videos (hard cuts at known times)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scripts.media import PLATE, SIGN, join_videos, make_plates_clip
from video_miner.config import MinerConfig
from video_miner.inputs.listing import expand_sources
from video_miner.keep import KeepError, parse_keep
from video_miner.records import Detection
from video_miner.run.prepare import check_request
from video_miner.run.request import RunRequest

from .conftest import BOTTLE, CARS, MODEL, PERSON, ROOT
from .helpers import dataset_files, make_config, metrics, run, with_tool

CLASSES = ["car", "truck", "bus", "person", "dog", "traffic light", "text"]
PLATES = {"models": [{"name": "vehicles", "classes": ["bus", "person"]},
                     {"name": "plates", "kind": "ocr", "after": "vehicles"}],
          "keep": "bus and text", "filter.static_max_diff": -1, "extract.fps": 2}


def box(label: str, x: float, y: float, w: float = 0.1, h: float = 0.1) -> Detection:
    return Detection(label, CLASSES.index(label), 0.9, (x, y, w, h))


@pytest.fixture(scope="module")
def plates_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_plates_clip(tmp_path_factory.mktemp("plates") / "plates.mp4")


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]


# ---- the keep rule -------------------------------------------------------------------------------
def test_keep_rules_decide_by_class_and_by_place() -> None:
    car = box("car", 0.5, 0.5, 0.4, 0.4)
    plate_on_car, plate_away = box("text", 0.55, 0.6), box("text", 0.05, 0.05)
    cases = {
        "car and text": [([car, plate_away], True), ([car], False), ([plate_on_car], False)],
        "text inside car": [([car, plate_on_car], True), ([car, plate_away], False), ([plate_on_car], False)],
        "person or dog": [([box("dog", 0.5, 0.5)], True), ([box("person", 0.5, 0.5)], True), ([car], False)],
        "not (car or truck) and text": [([plate_away], True), ([car, plate_away], False)],
        "traffic_light or 'traffic light'": [([box("traffic light", 0.5, 0.5)], True), ([car], False)],
        "(car OR bus) AND NOT person": [([car], True), ([car, box("person", 0.2, 0.2)], False)],
    }
    for text, examples in cases.items():
        rule = parse_keep(text, CLASSES)
        for boxes, expected in examples:
            assert rule.holds(boxes) is expected, (text, boxes)


@pytest.mark.parametrize(("text", "says"), [
    ("car and", "ends too early"), ("cat", "cat is not a class any model gives"), ("car text", "unexpected 'text'"),
    ("(car", "ends too early"), ("car inside", "ends too early"), ("car ; rm -rf /", "cannot read '; rm"),
    ("", "empty"), ("car and " * 100, "too long"), ("inside car", "expected a class name"),
])
def test_a_bad_keep_rule_is_refused_saying_where(text: str, says: str) -> None:
    with pytest.raises(KeepError, match=r"^keep: ") as err:
        parse_keep(text, CLASSES)
    assert says in str(err.value)


@pytest.mark.parametrize(("config", "says"), [
    ({"models": [{"name": "a", "classes": ["car"]}], "keep": "car and dog"}, "keep: dog is not a class"),
    ({"models": [{"name": "a", "kind": "ocr", "after": "b"}]}, "models.a.after: 'b' is not a detector or OCR"),
    ({"models": [{"name": "a", "classes": ["car"]}, {"name": "a", "kind": "ocr"}]}, "the name 'a' is used twice"),
    ({"models": [{"name": "a"}]}, "a detector needs its classes"),
    ({"models": [{"name": "a", "kind": "ocr", "classes": ["x"]}]}, "classes are for detectors"),
    ({"models": [{"name": "s", "kind": "shots"}]}, "at least one detector or OCR"),
    ({"keep": "person"}, "keep: needs a models: list"),
    ({"models": [{"name": "a", "classes": ["car"]}], "filter": {"classes": ["person"]}}, "each detector there lists"),
    ({"models": [{"name": "a", "classes": ["car"]}], "label": {"model": "big.pt"}}, "add that model to the list"),
    ({"extract": {"per_shot": 2}}, "extract.per_shot: needs a model of kind shots"),
    ({"models": [{"name": "../x", "classes": ["car"]}]}, "name"),
])
def test_a_bad_models_list_is_refused_by_key(config: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match="validation error") as err:
        MinerConfig.model_validate(config)
    assert says in str(err.value)


def test_one_model_keeps_its_config_hash_and_several_models_are_taken_on_ray(tmp_path: Path) -> None:
    # A one-model config's hash has no trace of models: (this is its hash under rules 5; a release
    # that changes which frames are chosen bumps the rules, and with them every hash).
    assert MinerConfig.model_validate({"filter": {"model": "yolov8n.pt"}}).result_hash() == "5b1864d47efc9edd"
    plain = make_config(tmp_path)
    assert plain.result_hash() == make_config(tmp_path, models=[]).result_hash()
    several = make_config(tmp_path, **PLATES)
    assert several.result_hash() != plain.result_hash()
    assert several.dataset_classes == ["bus", "person", "text"]
    sources = expand_sources([str(PERSON)])
    check_request(RunRequest([str(PERSON)], several, engine="ray"), sources)  # tests/test_ray.py runs them


# ---- OCR and shots, each alone -----------------------------------------------------------------
def test_pp_ocr_reads_rendered_text_into_text_boxes(plates_clip: Path) -> None:
    import av

    from video_miner.detect.ocr import TextReader

    with av.open(str(plates_clip)) as c:
        first = next(c.decode(video=0)).to_image()
    reader = TextReader("plates", 2)
    found = reader.read_each([first, Image.new("RGB", (320, 240), "grey")])
    plates = [d for d in found[0] if d.text and d.text.replace(" ", "") == PLATE.replace(" ", "")]  # type: ignore[union-attr]
    assert len(plates) == 1, found[0]
    plate = plates[0]
    assert plate.label == "text" and plate.model == "plates" and plate.class_index == 2 and plate.conf > 0.8
    x, y, w, h = plate.xywhn  # drawn at (250, 330)-(470, 372) of 640x480
    assert 250 / 640 < x < 470 / 640 and 330 / 480 < y < 372 / 480 and 0.2 < w < 0.4 and h < 0.1
    assert found[1] == []


def test_transnetv2_finds_the_hard_cuts_and_leaves_torch_as_it_was(tmp_path: Path) -> None:
    import torch

    from video_miner.detect.shots import SIZE, ShotDetector
    from video_miner.media.decode import every_frame_small

    joined = tmp_path / "joined.mp4"
    cuts = join_videos(joined, [(CARS, 0, 3.2), (PERSON, 0, 2.8), (BOTTLE, 0, 3.6)])
    torch.manual_seed(1234)
    expected_draw = torch.rand(1).item()
    torch.manual_seed(1234)
    state = (torch.are_deterministic_algorithms_enabled(), np.random.get_state()[1][:4].tolist(), random.getstate())
    starts = ShotDetector("shots").shot_starts(every_frame_small(joined, SIZE, 1))
    assert torch.are_deterministic_algorithms_enabled() is state[0]
    assert np.random.get_state()[1][:4].tolist() == state[1] and random.getstate() == state[2]
    assert torch.rand(1).item() == expected_draw, "creating the model re-seeded torch"
    assert len(starts) == len(cuts), starts
    for start, cut in zip(starts, cuts, strict=True):
        assert abs(start - cut) <= 0.05, (starts, cuts)


# ---- in the miner ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plates_run(plates_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plates clip mined with the detector + OCR cascade (async engine)."""
    out = tmp_path_factory.mktemp("plates-run") / "out"
    report = run([str(plates_clip)], out, **PLATES)
    assert not report.failures
    return out


def test_a_detector_then_ocr_cascade_keeps_vehicles_with_readable_text(plates_run: Path) -> None:
    out = plates_run
    rows = manifest(out)
    by_scene: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    for r in rows:  # three scenes of 2 s: bus with a plate, people, a sign without a vehicle
        by_scene[int(r["timestamp"] // 2)].append(r)
    kept = [r for r in rows if r["decision"] == "kept"]
    assert kept and all(r in by_scene[0] for r in kept)
    for r in kept:
        texts = [d for d in r["detections"] if d["class"] == "text"]
        assert any(d["text"].replace(" ", "") == PLATE.replace(" ", "") for d in texts), r["detections"]
        assert {d["model"] for d in r["detections"]} == {"vehicles", "plates"}
        assert any(d["class"] == "bus" and d["model"] == "vehicles" for d in r["detections"])
    for r in by_scene[1]:  # filtered, with what the models found there (to audit a miss)
        assert r["decision"] == "filtered" and "keep 'bus and text' does not hold" in r["reason"], r
        assert r["detections"] and {d["class"] for d in r["detections"]} == {"person"}, r
    for r in by_scene[2]:  # the sign is never read: no vehicle, so the OCR did not run
        assert r["decision"] == "filtered" and "plates: not run: vehicles found nothing" in r["reason"], r
        assert SIGN not in json.dumps(r)
    from video_miner.dataset.gallery import write_gallery

    assert PLATE.replace(" ", "") in write_gallery(out).read_text()  # shown on its box
    names = (out / "dataset" / "data.yaml").read_text()
    assert "0: bus" in names and "1: person" in names and "2: text" in names
    label_lines = [line.split() for p in (out / "dataset" / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    assert {int(parts[0]) for parts in label_lines} >= {0, 2}
    figures = metrics(out).models
    assert figures is not None
    decided = len(by_scene[0]) + len(by_scene[1]) + len(by_scene[2])
    plates, vehicles = figures.models["plates"], figures.models["vehicles"]
    assert vehicles.calls + vehicles.skipped <= decided and plates.skipped >= len(by_scene[2])
    assert plates.calls + plates.skipped == vehicles.calls, figures
    assert figures.joins["frames"].matched == vehicles.calls and figures.joins["frames"].waiting == 0


def test_the_same_bus_with_another_plate_is_other_content(tmp_path: Path) -> None:
    """pHash sees one picture (a plate is a small part of it): with an OCR beside a detector the
    content pass alone decides, and text read surely in one frame must be read in the other."""
    clip = make_plates_clip(tmp_path / "two.mp4", plates=(PLATE, "MH12 AB 3456"))
    out = tmp_path / "out"
    run([str(clip)], out, **PLATES)
    rows = manifest(out)
    read = {d["text"].replace(" ", "") for r in rows if r["decision"] == "kept" for d in r["detections"]
            if d.get("text")}
    assert {PLATE.replace(" ", ""), "MH12AB3456"} <= read, read
    same = [r for r in rows if r.get("duplicate_by") == "content"]
    assert same and all(r["timestamp"] // 2 == float(r["duplicate_of"].rsplit("@", 1)[1]) // 2 for r in same), same


def test_the_sequential_engine_runs_the_same_models_to_the_same_dataset(plates_clip: Path, plates_run: Path,
                                                                       tmp_path: Path) -> None:
    run([str(plates_clip)], tmp_path / "sequential", engine="sequential", **PLATES)
    staged, one_by_one = dataset_files(plates_run / "dataset"), dataset_files(tmp_path / "sequential" / "dataset")
    assert staged and staged == one_by_one


def test_one_detector_in_a_models_list_gives_the_same_dataset_as_filter_alone(plates_clip: Path, tmp_path: Path) -> None:
    common = {"filter.classes": ["bus", "person"], "filter.static_max_diff": -1, "extract.fps": 2}
    run([str(plates_clip)], tmp_path / "filter", **common)
    run([str(plates_clip)], tmp_path / "models", **common, models=[{"name": "coco", "classes": ["bus", "person"]}])
    alone, listed = dataset_files(tmp_path / "filter" / "dataset"), dataset_files(tmp_path / "models" / "dataset")
    assert alone and alone == listed
    for a, b in zip(manifest(tmp_path / "filter"), manifest(tmp_path / "models"), strict=True):
        assert a["decision"] == b["decision"] and a["frame"] == b["frame"]
        assert [d["xywhn"] for d in a["detections"]] == [d["xywhn"] for d in b["detections"]]
        assert all(d["model"] == "coco" for d in b["detections"]) and all("model" not in d for d in a["detections"])


def test_shots_give_each_frame_its_shot_and_per_shot_caps_the_kept_frames(tmp_path: Path) -> None:
    joined = tmp_path / "joined.mp4"
    cuts = join_videos(joined, [(PERSON, 10, 3.0), (BOTTLE, 0, 3.0), (PERSON, 30, 3.0)])
    out = tmp_path / "out"
    config = {"models": [{"name": "coco", "classes": ["person", "bottle"]}, {"name": "cuts", "kind": "shots"}],
              "extract.fps": 2, "filter.static_max_diff": -1, "filter.max_blur": 1, "dedup.semantic": False,
              "dedup.threshold": 0}
    report = run([str(joined)], out, **config)
    assert not report.failures
    rows = manifest(out)
    for r in rows:
        assert r["shot"] == sum(r["timestamp"] >= c - 0.05 for c in cuts) - 1, (r["timestamp"], r["shot"], cuts)
    kept_per_shot = {s: sum(r["decision"] == "kept" for r in rows if r["shot"] == s) for s in range(3)}
    assert all(n >= 2 for n in kept_per_shot.values()), kept_per_shot
    # The cap is applied at export, to the pool: a rerun with it re-mines nothing.
    capped = run([str(joined)], out, **config, **{"extract.per_shot": 1})
    rows = manifest(out)
    assert {s: sum(r["decision"] == "kept" for r in rows if r["shot"] == s) for s in range(3)} == {0: 1, 1: 1, 2: 1}
    over = [r for r in rows if r["decision"] == "left_out"]
    assert all("extract.per_shot (1)" in r["reason"] for r in over)
    assert len(over) == sum(kept_per_shot.values()) - 3 and capped.export.over_shot == len(over)
    # A registry rebuilt from the dataset (repair) knows each frame's shot again.
    from video_miner.store.repair import repair

    (out / "registry.sqlite").unlink()
    repair(out)
    with sqlite3.connect(out / "registry.sqlite") as db:
        shots = dict(db.execute("SELECT timestamp, shot FROM frames WHERE decision != 'filtered'").fetchall())
    assert shots and all(shots[r["timestamp"]] == r["shot"] for r in rows if r["timestamp"] in shots)


def test_the_example_configs_load_and_plates_yaml_keeps_the_bus_with_its_plate(plates_clip: Path, tmp_path: Path
                                                                               ) -> None:
    from prometheus_client import generate_latest
    from typer.testing import CliRunner

    from video_miner.cli import app
    from video_miner.config import load_config
    from video_miner.observe.doctor import check_model
    from video_miner.observe.metrics import RunMetrics
    from video_miner.observe.metrics_file import read_metrics
    from video_miner.run.compose import mine

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
    out = tmp_path / "out"
    config = load_config(ROOT / "configs" / "plates.yaml", {
        "output": str(out), "filter.model": str(MODEL), "filter.static_max_diff": -1,
        "export.formats": ["yolo", "coco"]})
    checks = {c.name: c for c in check_model(config)}
    assert checks["model vehicles"].status == "ok" and "car, truck, bus, motorcycle" in checks["model vehicles"].detail
    assert checks["model plates"].status == "ok" and "after vehicles" in checks["model plates"].detail
    metrics = RunMetrics()
    report = mine(RunRequest([str(plates_clip)], config), metrics=metrics)
    assert not report.failures
    scraped = generate_latest(metrics.registry).decode()
    figures = read_metrics(out / "metrics.json").models
    assert figures is not None
    for model, m in figures.models.items():
        for outcome in ("calls", "skipped", "busy", "failed"):
            count = float(getattr(m, outcome))
            assert f'video_miner_model_frames_total{{model="{model}",outcome="{outcome}"}} {count}' in scraped
    assert figures.models["plates"].skipped > 0
    matched = figures.joins["frames"].matched
    assert matched > 0 and f'video_miner_join_keys_total{{how="matched",join="frames"}} {float(matched)}' in scraped
    assert 'video_miner_join_wait_seconds{join="frames",quantile="0.95"}' in scraped
    shown = CliRunner().invoke(app, ["report", "-o", str(out)], env={"COLUMNS": "150"})
    assert "models (keep: text inside car or" in shown.output and "join: frames" in shown.output, shown.output
    kept = [r for r in manifest(out) if r["decision"] == "kept"]
    assert kept and all(r["timestamp"] < 2 for r in kept)
    for r in kept:
        bus = next(d for d in r["detections"] if d["class"] == "bus")
        plate = next(d for d in r["detections"] if d.get("text", "").replace(" ", "") == PLATE.replace(" ", ""))
        (bx, by, bw, bh), (px, py, _, _) = bus["xywhn"], plate["xywhn"]
        assert abs(px - bx) <= bw / 2 and abs(py - by) <= bh / 2
    categories = [c["name"] for c in json.loads((out / "dataset" / "annotations" / "instances_train.json").read_text())
                  ["categories"]]
    assert categories == ["car", "truck", "bus", "motorcycle", "text"]
    # Label Studio gets each text read as a per-region TextArea its own SDK accepts, to correct in place.
    from video_miner.dataset import handover

    batch = handover.export(out, "label-studio")
    loaded = with_tool("load_with_tool.py", "label-studio", str(batch.folder))
    texts = [t for image in loaded["images"].values() for t in image["texts"] if t]
    assert PLATE.replace(" ", "") in {t.replace(" ", "") for t in texts}, texts  # the bus's own signs are read too


def test_text_read_goes_to_cvat_coco_and_fiftyone_and_a_corrected_text_comes_back(plates_run: Path,
                                                                                  tmp_path: Path) -> None:
    """The OCR's text as each tool's text field (a CVAT box attribute, a COCO annotation attribute,
    a FiftyOne detection attribute, which FiftyOne's own importer reads, a column of Hugging Face's
    objects); a reviewer's correction in each comes back on its box."""
    import shutil
    import xml.etree.ElementTree as ET

    from video_miner.dataset import handover
    from video_miner.store.registry import Registry

    from .helpers import cli_here

    wanted = PLATE.replace(" ", "")
    corrected = "KA01 AB 1234"
    for fmt in ("cvat", "coco", "fiftyone"):
        out = tmp_path / fmt / "out"
        shutil.copytree(plates_run, out)
        batch = handover.export(out, "fiftyone" if fmt == "fiftyone" else "cvat")
        assert batch.dest is not None
        if fmt == "cvat":
            path = batch.dest / "annotations.xml"
            root = ET.parse(path).getroot()
            text = next(a for a in root.iter("attribute") if a.get("name") == "text" and
                        (a.text or "").replace(" ", "") == wanted)
            text.text = corrected
            path.write_text(ET.tostring(root, encoding="unicode"))
        elif fmt == "coco":
            path = batch.dest / "annotations" / "instances_default.json"
            data = json.loads(path.read_text())
            box = next(a for a in data["annotations"] if a["attributes"].get("text", "").replace(" ", "") == wanted)
            box["attributes"]["text"] = corrected
            path.write_text(json.dumps(data))
        else:
            loaded = with_tool("load_with_tool.py", "fiftyone", str(batch.dest))
            assert wanted in {t.replace(" ", "") for image in loaded["images"].values() for t in image["texts"] if t}
            path = batch.dest / "samples.json"
            data = json.loads(path.read_text())
            box = next(d for s in data["samples"] for d in s["predictions"]["detections"]
                       if d.get("text", "").replace(" ", "") == wanted)
            box["text"] = corrected
            path.write_text(json.dumps(data))
        proc = cli_here("import", "-o", str(out), "--format", fmt, str(batch.dest))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        registry = Registry(out / "registry.sqlite", readonly=True)
        reviews = registry.latest_reviews()
        registry.close()
        texts = [d.text for r in reviews.values() for d in r.boxes if d.text]
        assert corrected in texts, (fmt, texts)
    # Hugging Face: the text as a column of the objects, loaded by datasets
    import datasets

    hf = handover.export(tmp_path / "coco" / "out", "hf")
    assert hf.dest is not None
    ds = datasets.load_dataset("parquet", data_dir=str(hf.dest))
    read = {t.replace(" ", "") for split in ds.values() for row in split for t in row["objects"]["text"] if t}
    assert wanted in read, read


def test_the_live_table_shows_partial_and_expired_frames_per_source() -> None:
    from rich.console import Console

    from video_miner.live.stats import LiveStats
    from video_miner.observe.progress import live_table

    quiet, joined = LiveStats("rtsp://cam1/stream"), LiveStats("rtsp://cam2/stream")
    quiet.add(frames_captured=10, frames_decided=10)
    joined.add(frames_captured=10, frames_decided=9, frames_partial=4, frames_expired=2)
    console = Console(width=160, record=True)
    console.print(live_table({"cam1": quiet.snapshot()}))
    assert "part" not in console.export_text()  # one model: no such columns
    console.print(live_table({"cam1": quiet.snapshot(), "cam2": joined.snapshot()}))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "part" in line)
    assert "exp" in header
    row = [cell for cell in next(line for line in lines if "cam2" in line).split() if cell != "│"]
    assert row[-4:-2] == ["4", "2"], row


def test_a_model_that_fails_on_a_frame_fails_its_video_saying_which_model(plates_clip: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from video_miner.detect.ocr import TextReader
    from video_miner.errors import ModelError

    def broken(self: TextReader, images: list[Image.Image]) -> list[BaseException]:
        return [ModelError(f"OCR failed with {self.name!r}: RuntimeError: bad tensor") for _ in images]

    monkeypatch.setattr(TextReader, "read_each", broken)
    report = run([str(plates_clip)], tmp_path / "out", **PLATES)
    assert len(report.failures) == 1
    assert "OCR failed with 'plates'" in report.failures[0].message, report.failures[0]


def test_an_animated_image_has_no_shots_so_per_shot_never_caps_it(tmp_path: Path) -> None:
    import ultralytics
    from PIL import ImageDraw

    photo = Image.open(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg").convert("RGB").resize((640, 360))
    frames = []
    for i in range(8):
        frame = photo.copy()
        ImageDraw.Draw(frame).rectangle((10 + 60 * i, 10, 60 + 60 * i, 40), fill="red")
        frames.append(frame)
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=500, loop=0)
    out = tmp_path / "out"
    report = run([str(gif)], out, **{"models": [{"name": "coco", "classes": ["person"]}, {"name": "cuts", "kind": "shots"}],
                                     "extract.per_shot": 1, "filter.max_blur": 1, "filter.static_max_diff": -1,
                                     "dedup.enabled": False})
    assert not report.failures
    rows = manifest(out)
    assert rows and all("shot" not in r for r in rows)
    assert sum(r["decision"] == "kept" for r in rows) > 1, [r["reason"] for r in rows]


def test_the_exports_deferred_frames_go_through_every_model(plates_clip: Path, tmp_path: Path) -> None:
    """What the export calls for deferred frames: image files through the whole graph, in order."""
    import av

    from video_miner.detect.detector import shared_on_files
    from video_miner.detect.model_graph import ModelGraph

    paths = []
    with av.open(str(plates_clip)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in (0, 12, 25):  # the bus with its plate, the pitch, the sign
                paths.append(tmp_path / f"{i}.jpg")
                frame.to_image().save(paths[-1])
    with ModelGraph(make_config(tmp_path / "out", **PLATES)) as graph:
        bus, pitch, sign = shared_on_files(graph)(paths)
    assert any(d.text and d.text.replace(" ", "") == PLATE.replace(" ", "") and d.model == "plates" for d in bus)
    assert any(d.label == "bus" and d.model == "vehicles" for d in bus)
    # Not kept, with what the models found (people on the pitch) for the manifest, to audit.
    assert not pitch.kept and "keep 'bus and text' does not hold" in (pitch.reason or "")
    assert pitch and {d.label for d in pitch} == {"person"}
    assert not sign.kept and sign == [] and "plates: not run: vehicles found nothing" in (sign.reason or "")
    assert graph.snapshot()["joins"]["frames"]["matched"] == 3
