"""Reviewed labels come back: a Label Studio export edited as a reviewer would (a box moved, a
false one deleted, a missed one added with a new class, one re-classed, a frame skipped) and a YOLO
labels folder are imported; the dataset takes them at the next run, the model's boxes stay in the
registry, nothing reviewed is handed over again, and `review` says how wrong the model was."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from video_miner.dataset import handover
from video_miner.records import box_iou
from video_miner.redact import printable
from video_miner.store.registry import Registry

from .conftest import MODEL, VIDEOS
from .helpers import ROOT, cli_here, dataset_files, kept, manifest, run, with_tool
from .label_studio_server import label_studio

CLASSES = {"filter.classes": ["person", "bottle"], "export.formats": ["yolo", "coco", "label-studio"]}


@pytest.fixture(scope="module")
def inputs(bottle_head: Path) -> list[str]:
    return [str(VIDEOS / "again.mkv"), str(VIDEOS / "book.mkv"), str(bottle_head)]


@pytest.fixture(scope="module")
def mined(inputs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review") / "out"
    report = run(inputs, out, **CLASSES)
    assert not report.failures and report.export.kept >= 5
    # as mined, before any test imports reviews into it
    shutil.copytree(out, out.parent / "as-mined")
    return out


def _annotation(task: dict[str, Any], result: list[dict[str, Any]], cancelled: bool = False) -> dict[str, Any]:
    return {**task, "annotations": [{"id": 1, "completed_by": {"email": "reviewer@example.com"}, "result": result,
                                      "was_cancelled": cancelled, "created_at": "2026-12-03T10:00:00Z",
                                      "updated_at": "2026-12-03T10:05:00Z"}]}


def _reviewed_export(mined: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    """Label Studio's JSON export after a review of the first five tasks; what was done to each."""
    tasks = json.loads((mined / "exports" / "label-studio" / "all" / "tasks.json").read_text())
    with_boxes = [t for t in tasks if t["predictions"][0]["result"]]
    assert len(with_boxes) >= 5
    done: dict[str, str] = {}
    out = []
    for k, task in enumerate(with_boxes[:5]):
        result = copy.deepcopy(task["predictions"][0]["result"])
        frame = task["data"]["frame"]
        if k == 0:
            result[0]["value"]["x"] += result[0]["value"]["width"] * 0.2  # moved a fifth of its width
            done[frame] = "moved"
        elif k == 1:
            result = result[1:]  # a false box deleted
            done[frame] = "deleted"
        elif k == 2:
            result.append({**copy.deepcopy(result[0]), "id": "new", "value": {
                "x": 1, "y": 1, "width": 10, "height": 10, "rotation": 0, "rectanglelabels": ["cup"]}})
            done[frame] = "added cup"
        elif k == 3:
            result[0]["value"]["rectanglelabels"] = ["dog"]
            done[frame] = "re-classed"
        out.append(_annotation(task, result, cancelled=k == 4))
        if k == 4:
            done[frame] = "rejected"
    path = folder / "ls-export.json"
    path.write_text(json.dumps(out))
    return path, done


def test_a_label_studio_review_comes_back_into_the_dataset(mined: Path, inputs: list[str], tmp_path: Path) -> None:
    export, done = _reviewed_export(mined, tmp_path)
    before = {r.frame: r for r in manifest(mined)}
    proc = cli_here("import", "-o", str(mined), "--format", "label-studio", str(export))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 reviewed frames read (1 rejected), 5 new revisions recorded" in proc.stdout
    again = cli_here("import", "-o", str(mined), "--format", "label-studio", str(export))
    assert "0 new revisions recorded" in again.stdout, again.stdout  # the same file twice changes nothing
    registry = Registry(mined / "registry.sqlite", readonly=True)
    reviews = registry.latest_reviews()
    model = {r.key: r.detections for r in registry.done_frames()}
    registry.close()
    assert set(reviews) == set(done) and all(r.revision == 1 and r.who == "reviewer@example.com"
                                             for r in reviews.values())
    # the model's boxes stay in the registry
    assert all(model[k] == before[k].detections for k in done)

    assert not run(inputs, mined, **CLASSES).failures  # the same command again: the dataset takes the reviews
    rows = {r.frame: r for r in manifest(mined)}
    names = yaml.safe_load((mined / "dataset" / "data.yaml").read_text())["names"]
    assert list(names.values())[:2] == ["person", "bottle"] and {"cup", "dog"} <= set(names.values())
    for frame, what in done.items():
        row = rows[frame]
        assert row.extra["reviewed"]["tool"] == "label-studio", frame
        if what == "rejected":
            assert row.decision == "filtered" and "rejected in review" in (row.reason or "")
            continue
        assert row.decision == "kept", (frame, what)
        labels = (mined / "dataset" / row.image.replace("images", "labels", 1)).with_suffix(".txt").read_text()
        lines = labels.splitlines()
        if what == "deleted":
            assert len(lines) == len(before[frame].detections) - 1
        if what == "added cup":
            assert any(line.startswith(f"{list(names.values()).index('cup')} ") for line in lines)
        if what == "re-classed":
            assert any(d.label == "dog" for d in row.detections)
        if what == "moved":
            box = before[frame].detections[0]
            assert row.detections[0].xywhn[0] == pytest.approx(box.xywhn[0] + 0.2 * box.xywhn[2], abs=2e-3)
    coco = json.loads((mined / "dataset" / "annotations" / "instances_train.json").read_text())
    assert {c["name"] for c in coco["categories"]} >= {"cup", "dog"}
    # nothing reviewed is handed over again: a first CVAT batch leaves the reviewed frames out
    batch = handover.export(mined, "cvat", new_only=True)
    assert batch.frames and not {f.row.frame for f in batch.frames} & set(done)

    review = cli_here("review", "-o", str(mined))
    assert review.returncode == 0, review.stdout + review.stderr
    assert "4 reviewed frames (1 rejected)" in review.stdout
    assert "re-classed: " in review.stdout and "-> dog: 1" in review.stdout
    corrected = [line for line in review.stdout.splitlines() if line.startswith("corrected: ")]
    assert {line.split(": ")[1] for line in corrected} == {k for k, w in done.items() if w != "rejected"}
    assert (mined / "review.png").stat().st_size > 1000
    # a second run changes nothing more: the dataset is byte-stable
    files = dataset_files(mined / "dataset")
    assert not run(inputs, mined, **CLASSES).failures
    assert dataset_files(mined / "dataset") == files


def test_reviews_come_back_from_a_running_label_studio_server(mined: Path, inputs: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The export imported into a real Label Studio server and reviewed there through its SDK; then
    ``import --url`` reads the project from the server (a legacy token, then a personal access
    token: nothing new), and the file Label Studio exports gives the same revisions. The dataset
    holds the edits; the tokens appear nowhere."""
    out = tmp_path / "out"
    shutil.copytree(mined.parent / "as-mined", out)
    with label_studio(tmp_path) as server:
        export = out / "exports" / "label-studio" / "all"
        done = subprocess.run([str(server.python), str(ROOT / "tests" / "label_studio_reviewer.py"), server.url,
                               server.token, str(export), str(tmp_path / "from-label-studio.json")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        review = json.loads(done.stdout.strip().splitlines()[-1])
        tokens = (server.token, review["personal_token"])

        def from_server(token: str) -> subprocess.CompletedProcess[str]:
            monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
            return cli_here("import", "-o", str(out), "--format", "label-studio", "--url", server.url,
                            "--project", str(review["project"]))

        first = from_server(server.token)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "5 reviewed frames read (1 rejected), 5 new revisions recorded" in first.stdout, first.stdout
        again = from_server(review["personal_token"])
        assert "0 new revisions recorded" in again.stdout, again.stdout + again.stderr
        refused = from_server("not-a-token")
        assert refused.returncode == 2 and "refused LABEL_STUDIO_API_KEY" in refused.stderr + refused.stdout
        unset = from_server("")
        assert unset.returncode == 2 and "set LABEL_STUDIO_API_KEY" in unset.stderr + unset.stdout
    from_file = cli_here("import", "-o", str(out), "--format", "label-studio", review["export"])
    assert "5 reviewed frames read (1 rejected), 0 new revisions recorded" in from_file.stdout, from_file.stdout
    for proc in (first, again, refused, unset, from_file):
        assert not any(t in proc.stdout + proc.stderr for t in tokens)
    registry = Registry(out / "registry.sqlite", readonly=True)
    reviews = registry.latest_reviews()
    registry.close()
    assert set(reviews) == set(review["done"])
    assert {r.who for r in reviews.values()} == {"reviewer@example.com"} and all(r.revision == 1 for r in reviews.values())

    assert not run(inputs, out, **CLASSES).failures
    rows = {r.frame: r for r in manifest(out)}
    names = yaml.safe_load((out / "dataset" / "data.yaml").read_text())["names"]
    assert {"cup", "dog"} <= set(names.values())
    for frame, what in review["done"].items():
        assert rows[frame].extra["reviewed"]["tool"] == "label-studio"
        assert (rows[frame].decision == "filtered") == (what == "rejected"), (frame, what)
    reclassed = next(f for f, w in review["done"].items() if w == "re-classed")
    assert any(d.label == "dog" for d in rows[reclassed].detections)
    batch = handover.export(out, "cvat", new_only=True)
    assert batch.frames and not {f.row.frame for f in batch.frames} & set(review["done"])
    assert not any(t.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file() for t in tokens)


def test_a_label_for_a_frame_the_dataset_does_not_know_is_refused(mined: Path, tmp_path: Path) -> None:
    export = tmp_path / "ls.json"
    export.write_text(json.dumps([_annotation({"data": {"frame": "not-mined@1.000", "image": "x.jpg"}}, [])]))
    proc = cli_here("import", "-o", str(mined), "--format", "label-studio", str(export))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not-mined@1.000" in proc.stdout + proc.stderr and "nothing was imported" in proc.stdout + proc.stderr


def test_a_yolo_labels_folder_comes_back(mined: Path, tmp_path: Path) -> None:
    chosen = kept(manifest(mined))[-1]
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / Path(chosen.image or "").with_suffix(".txt").name).write_text("1 0.5 0.5 0.2 0.3\n")
    proc = cli_here("import", "-o", str(mined), "--format", "yolo", str(labels))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 reviewed frames read (0 rejected), 1 new revisions recorded" in proc.stdout
    registry = Registry(mined / "registry.sqlite", readonly=True)
    review = registry.latest_reviews()[chosen.frame]
    registry.close()
    assert review.tool == "yolo" and [(d.label, d.xywhn) for d in review.boxes] == [("bottle", (0.5, 0.5, 0.2, 0.3))]


def test_a_hostile_export_is_read_past_where_broken_and_shown_as_plain_text(mined: Path, inputs: list[str],
                                                                           tmp_path: Path) -> None:
    tasks = json.loads((mined / "exports" / "label-studio" / "all" / "tasks.json").read_text())
    task = next(t for t in reversed(tasks) if t["predictions"][0]["result"])
    good = copy.deepcopy(task["predictions"][0]["result"][0])
    odd = "[bold red]x[/]\nnames: {0: pwned}\x1b[2J"
    good["value"]["rectanglelabels"] = [odd]
    broken = [{"type": "rectanglelabels", "value": {"x": "nan", "y": 1, "width": 5, "height": 5,
                                                     "rectanglelabels": ["person"]}},
              {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": -5, "height": 5,
                                                     "rectanglelabels": ["person"]}},
              {"type": "textarea", "value": {"text": ["KA51"]}}, "not a region"]
    export = tmp_path / "hostile.json"
    export.write_text(json.dumps(["not a task", _annotation(task, [good, *broken])]))
    proc = cli_here("import", "-o", str(mined), "--format", "label-studio", str(export))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and proc.stdout.count("read past") == 5, proc.stdout
    assert not run(inputs, mined, **CLASSES).failures
    names = yaml.safe_load((mined / "dataset" / "data.yaml").read_text())["names"]
    assert odd in names.values() and "pwned" not in names.values()  # one class, whatever its name holds
    row = next(r for r in manifest(mined) if r.frame == task["data"]["frame"])
    assert [d.label for d in row.detections] == [odd] and row.extra["reviewed"]["revision"] >= 1


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_a_review_in_cvat_or_coco_comes_back(fmt: str, mined: Path, tmp_path: Path) -> None:
    """The CVAT export edited with labelformat (CVAT's XML model and its COCO writer) as a reviewer
    would: a box moved, one deleted, a cup added, one re-classed; every other image as handed over."""
    out = tmp_path / "out"
    shutil.copytree(mined, out)
    batch = handover.export(out, "cvat", dest=tmp_path / "handed")
    edited = tmp_path / ("edited" if fmt == "cvat" else "edited.json")
    done: dict[str, str] = with_tool("edit_with_tool.py", fmt, str(batch.folder), str(edited))
    assert sorted(done.values()) == ["added cup", "deleted", "moved", "re-classed"]
    proc = cli_here("import", "-o", str(out), "--format", fmt, str(edited))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(batch.frames)} reviewed frames read (0 rejected)" in proc.stdout, proc.stdout
    again = cli_here("import", "-o", str(out), "--format", fmt, str(edited))
    assert "0 new revisions recorded" in again.stdout, again.stdout  # byte-stable: nothing new the second time
    registry = Registry(out / "registry.sqlite", readonly=True)
    reviews = registry.latest_reviews()
    registry.close()
    for f in batch.frames:
        review, model = reviews[f.row.frame], f.row.detections
        what = done.get(f.name)
        # a frame handed over as it was reviewed before and left alone is no new revision
        assert not review.rejected and (review.tool == fmt or what is None)
        if what == "deleted":
            assert len(review.boxes) == len(model) - 1
            continue
        if what == "added cup":
            assert review.boxes[-1].label == "cup" and len(review.boxes) == len(model) + 1
        got = [(d.label, d.xywhn) for d in review.boxes[:len(model)]]
        want = [(d.label, d.xywhn) for d in model]
        if what == "re-classed":
            want[0] = ("dog", want[0][1])
        if what == "moved":
            x, y, w, h = want[0][1]
            want[0] = (want[0][0], (x + w / 5, y, w, h))
        for (label, box), (label_want, box_want) in zip(got, want, strict=True):
            # pixels to two decimals and back: within 0.01 px of a 320 px or larger picture
            # names are handed over printable (a control character escaped), and come back so
            assert label == printable(label_want) and box == pytest.approx(box_want, abs=2e-3), (f.name, what)


def test_a_fiftyone_review_comes_back_with_rejected_samples(mined: Path, tmp_path: Path) -> None:
    """FiftyOne's samples.json as its exporter writes it: reviewed boxes in ``ground_truth``
    (relative, top-left), a sample tagged ``rejected``."""
    out = tmp_path / "out"
    shutil.copytree(mined, out)
    batch = handover.export(out, "fiftyone", dest=tmp_path / "handed")
    samples = json.loads((batch.folder / "samples.json").read_text())["samples"]
    samples[0]["tags"].append("rejected")
    for sample in samples[1:]:
        sample["ground_truth"] = {"_cls": "Detections", "detections": [
            {**d, "label": "dog"} for d in sample["predictions"]["detections"]]}
    (batch.folder / "samples.json").write_text(json.dumps({"samples": samples}))
    proc = cli_here("import", "-o", str(out), "--format", "fiftyone", str(batch.folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(samples)} reviewed frames read (1 rejected)" in proc.stdout, proc.stdout
    registry = Registry(out / "registry.sqlite", readonly=True)
    reviews = registry.latest_reviews()
    registry.close()
    assert reviews[samples[0]["frame"]].rejected
    for sample in samples[1:]:
        review = reviews[sample["frame"]]
        assert [d.label for d in review.boxes] == ["dog"] * len(sample["predictions"]["detections"])
        for d, got in zip(sample["predictions"]["detections"], review.boxes, strict=True):
            left, top, w, h = d["bounding_box"]
            assert got.xywhn == pytest.approx((left + w / 2, top + h / 2, w, h), abs=1e-5)


def test_a_cvat_image_tagged_rejected_rejects_its_frame_and_an_xml_bomb_is_refused(mined: Path, tmp_path: Path) -> None:
    row = kept(manifest(mined))[0]
    name = Path(row.image or "").name
    xml = tmp_path / "annotations.xml"
    xml.write_text(f'<annotations><image id="0" name="{name}" width="640" height="480"><tag label="Rejected"/>'
                   '</image></annotations>')
    out = tmp_path / "out"
    shutil.copytree(mined, out)
    proc = cli_here("import", "-o", str(out), "--format", "cvat", str(tmp_path))
    assert proc.returncode == 0 and "1 reviewed frames read (1 rejected)" in proc.stdout, proc.stdout + proc.stderr
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
                    "<annotations>&b;</annotations>")
    refused = cli_here("import", "-o", str(out), "--format", "cvat", str(bomb))
    assert refused.returncode == 2 and "entity" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


def test_a_frame_a_person_saw_stays_kept_over_a_finer_encode_and_its_review_moves_to_a_larger_copy(
        tmp_path: Path) -> None:
    """Handed over (and one reviewed), the bottle clip's frames stay kept when a finer encode of it
    arrives, which wins where nobody saw them; a copy with more than twice the pixels takes their
    place, and the review moves to its frame (the model saw the same boxes on both)."""
    from scripts.media import head, reencode

    from .conftest import BOTTLE

    original = head(BOTTLE, tmp_path / "bottle.mp4", 6)
    finer = reencode(original, tmp_path / "finer.mp4", 1.0, crf=8)
    larger = reencode(original, tmp_path / "larger.mp4", 1.5, crf=18)
    settings = {"filter.classes": ["bottle"], "export.formats": ["yolo", "label-studio"], "dedup.semantic": False}

    def kept_from(out: Path) -> dict[str, set[str]]:
        sources: dict[str, set[str]] = {}
        for row in kept(manifest(out)):
            sources.setdefault(Path(row.source).stem, set()).add(row.frame)
        return sources

    assert not run([str(original), str(finer)], tmp_path / "fresh", **settings).failures
    assert set(kept_from(tmp_path / "fresh")) == {"finer"}, "without a person, the finer encode wins"

    out = tmp_path / "out"
    assert not run([str(original)], out, **settings).failures  # every kept frame handed to Label Studio
    handed = kept_from(out)["bottle"]
    chosen = next(r for r in kept(manifest(out)) if r.detections)
    labels = tmp_path / "labels"
    labels.mkdir()
    box = chosen.detections[0].xywhn
    (labels / Path(chosen.image or "").with_suffix(".txt").name).write_text(
        f"0 {box[0]:.6f} {box[1]:.6f} {box[2]:.6f} {box[3] * 0.9:.6f}\n")  # the reviewer made it shorter
    assert cli_here("import", "-o", str(out), "--format", "yolo", str(labels)).returncode == 0

    assert not run([str(original), str(finer)], out, **settings).failures
    assert kept_from(out) == {"bottle": handed}, "a re-encode never takes a reviewed or handed-over frame's place"
    diff = cli_here("diff", "-o", str(out), "--format", "label-studio")
    assert ", 0 removed since" in diff.stdout, diff.stdout

    assert not run([str(original), str(finer), str(larger)], out, **settings).failures
    rows = manifest(out)
    assert set(kept_from(out)) == {"larger"}, "more than twice the pixels wins"
    moved = [r for r in rows if r.decision == "kept" and r.extra.get("reviewed", {}).get("from") == chosen.frame]
    assert len(moved) == 1, [r.extra.get("reviewed") for r in rows if r.extra.get("reviewed")]
    assert [d.xywhn for d in moved[0].detections] == [pytest.approx((box[0], box[1], box[2], box[3] * 0.9), abs=1e-5)]
    assert next(r for r in rows if r.frame == chosen.frame).duplicate_of == moved[0].frame


def test_a_dry_run_says_what_other_settings_would_change_and_writes_nothing(person_head: Path, tmp_path: Path) -> None:
    """``run --dry-run``: the export's own choice with other settings (a budget), from what is
    mined, against the dataset: each frame that would leave says why; nothing is written."""
    out = tmp_path / "out"
    args = ["run", str(person_head), "-o", str(out), "--model", str(MODEL), "--classes", "person", "-q"]
    assert cli_here(*args).returncode == 0
    kept_now = [r.frame for r in kept(manifest(out))]
    assert len(kept_now) >= 3
    # SQLite opens a WAL database read-only with its -shm/-wal sidecars: files of its own, no data
    files = lambda: {p: p.stat().st_mtime_ns for p in out.rglob("*")  # noqa: E731
                     if p.is_file() and not p.name.endswith(("-shm", "-wal"))}
    before = files()
    same = cli_here(*args, "--dry-run")
    assert same.returncode == 0 and "0 frames would join the dataset, 0 would leave it" in same.stdout, same.stdout
    smaller = cli_here(*args, "--dry-run", "--budget", "2")
    assert smaller.returncode == 0, smaller.stdout
    leaving = [line for line in smaller.stdout.splitlines() if line.startswith("- ")]
    assert len(leaving) == len(kept_now) - 2, smaller.stdout
    assert all("would be left_out: left out by select.budget (2 frames chosen)" in line and "covers it" in line
               for line in leaving), leaving
    assert files() == before, "a dry run writes nothing"
    other = cli_here(*args, "--dry-run", "--fps", "2")
    assert other.returncode == 2 and "extract.fps" in other.stdout, other.stdout  # needs mining again: said so


def test_text_corrected_in_label_studio_comes_back_on_its_box(mined: Path, inputs: list[str], tmp_path: Path
                                                               ) -> None:
    """A region's text (the per-region TextArea the export writes for OCR boxes) with the box's id:
    the reviewer's correction becomes that box's text; a text for no box is said and read past."""
    out = tmp_path / "out"
    shutil.copytree(mined, out)
    tasks = json.loads((out / "exports" / "label-studio" / "all" / "tasks.json").read_text())
    task = next(t for t in tasks if t["predictions"][0]["result"])
    box = copy.deepcopy(task["predictions"][0]["result"][0])
    where = {k: v for k, v in box["value"].items() if k != "rectanglelabels"}
    text = {**box, "type": "textarea", "from_name": "text", "value": {**where, "text": ["KA51 MN", "2024"]}}
    stray = {**text, "id": "no-such-box"}
    export = tmp_path / "ls.json"
    export.write_text(json.dumps([_annotation(task, [box, text, stray])]))
    proc = cli_here("import", "-o", str(out), "--format", "label-studio", str(export))
    assert proc.returncode == 0 and "text for region no-such-box, which is no box: read past" in proc.stdout, proc.stdout
    registry = Registry(out / "registry.sqlite", readonly=True)
    review = registry.latest_reviews()[task["data"]["frame"]]
    registry.close()
    assert [d.text for d in review.boxes] == ["KA51 MN 2024"]
    assert not run(inputs, out, **CLASSES).failures
    row = next(r for r in manifest(out) if r.frame == task["data"]["frame"])
    assert [d.text for d in row.detections] == ["KA51 MN 2024"]


def test_the_label_studio_client_follows_no_redirect_bounds_the_answer_and_exchanges_a_personal_token() -> None:
    """Against a loopback stand-in for the server's routes: a redirect is refused (the token is not
    sent on), an answer over the bound is refused, a personal access token (a JWT refresh token) is
    exchanged for an access token that then reads the export, its reviewers' ids named by email."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from video_miner.dataset.label_studio_api import fetch_tasks
    from video_miner.errors import ConfigError

    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization", "")))
            if self.path.startswith("/api/projects/1/"):
                self._answer(302, Location="http://127.0.0.1:9/elsewhere")
            elif self.path.startswith("/api/projects/2/"):
                self._answer(200, b"[" + b'{"data": {}},' * 10_000 + b"{}]", Content_Type="application/json")
            elif self.headers.get("Authorization") != "Bearer short-lived":
                self._answer(401)
            elif self.path.startswith("/api/projects/3/"):
                self._answer(200, b'[{"annotations": [{"completed_by": 7}, "x"]}, 5]', Content_Type="application/json")
            elif self.path.startswith("/api/users/"):
                self._answer(200, b'[{"id": 7, "email": "ana@example.com"}, {"id": "?"}]', Content_Type="application/json")
            else:
                self._answer(401)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((self.path, body.decode()))
            self._answer(200, json.dumps({"access": "short-lived"}).encode(), Content_Type="application/json")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ConfigError, match="redirects"):
            fetch_tasks(url, 1, "legacy-token", 1 << 20)
        assert [p for p, _ in seen if "elsewhere" in p] == [] and seen[-1][1] == "Token legacy-token"
        with pytest.raises(ConfigError, match="over"):
            fetch_tasks(url, 2, "legacy-token", 1 << 16)
        claims = base64.urlsafe_b64encode(json.dumps({"token_type": "refresh"}).encode()).decode().rstrip("=")
        personal = f"eyJhbGciOiJIUzI1NiJ9.{claims}.signature"
        # credentials in the URL, another scheme, no token: refused before anything is sent
        before = len(seen)
        with pytest.raises(ConfigError, match="holds credentials"):
            fetch_tasks(url.replace("http://", "http://ana:secret@"), 3, personal, 1 << 20)
        with pytest.raises(ConfigError, match="http"):
            fetch_tasks("file:///etc/passwd", 3, personal, 1 << 20)
        with pytest.raises(ConfigError, match="LABEL_STUDIO_API_KEY"):
            fetch_tasks(url, 3, None, 1 << 20)
        assert len(seen) == before
        tasks = fetch_tasks(url, 3, personal, 1 << 20)
        assert len(seen) == before + 3  # the token exchange, the export, the users
        assert tasks[0]["annotations"][0]["completed_by"] == {"id": 7, "email": "ana@example.com"}
        assert [json.loads(body) for path, body in seen if path == "/api/token/refresh/"] == [{"refresh": personal}]
    finally:
        server.shutdown()
        server.server_close()


def test_a_review_moves_onto_a_mirrored_crop_with_its_boxes_mapped(tmp_path: Path) -> None:
    """A reviewed frame of the bottle clip, then a repost of the clip mirrored, cropped to its
    centre 90% and 1.7x larger: the repost's frame stands for it, and the reviewed box lands where
    the bottle is on the repost (the three bottles stand almost symmetrically, so the boxes alone
    fit a crop as well as a mirror: the pictures tell them apart)."""
    from scripts.media import head, reframed

    from .conftest import BOTTLE

    original = head(BOTTLE, tmp_path / "bottle.mp4", 4)
    repost = reframed(original, tmp_path / "repost.mp4", 0.9, 1.7, mirror=True)
    settings = {"filter.classes": ["bottle"], "export.formats": ["yolo"]}
    out = tmp_path / "out"
    assert not run([str(original)], out, **settings).failures
    chosen = next(r for r in kept(manifest(out)) if len(r.detections) >= 2)
    left = min(chosen.detections, key=lambda d: d.xywhn[0])
    x, y, w, h = left.xywhn
    labels = tmp_path / "labels"
    labels.mkdir()  # the reviewer kept the leftmost bottle only, a tenth shorter
    (labels / Path(chosen.image or "").with_suffix(".txt").name).write_text(f"0 {x:.6f} {y:.6f} {w:.6f} {h * 0.9:.6f}\n")
    assert cli_here("import", "-o", str(out), "--format", "yolo", str(labels)).returncode == 0
    assert not run([str(original), str(repost)], out, **settings).failures
    rows = {r.frame: r for r in manifest(out)}
    stands = rows[chosen.frame].duplicate_of
    assert stands is not None and Path(rows[stands].source).stem == "repost"
    moved = rows[stands]
    assert moved.decision == "kept" and moved.extra["reviewed"]["from"] == chosen.frame
    assert moved.extra["reviewed"]["mapped"] is True
    # where the leftmost bottle lands: mirrored (1 - x), then the centre 90% stretched to the picture
    expected = ((1 - x - 0.05) / 0.9, (y - 0.05) / 0.9, w / 0.9, h * 0.9 / 0.9)
    [box] = [d.xywhn for d in moved.detections]
    assert box_iou(box, expected) >= 0.9, (box, expected)
    # the model's own box there is the rightmost one: the review sits on that bottle
    model = [tuple(d["xywhn"]) for d in moved.extra["reviewed"]["model"]]
    assert max(model, key=lambda b: b[0]) == max(model, key=lambda b: box_iou(b, box))


def test_a_crop_maps_reviewed_boxes_and_leaves_out_those_cropped_away() -> None:
    from video_miner.dataset.moved import Geometry, geometry, map_boxes
    from video_miner.records import Detection

    def box(label: str, x: float, y: float = 0.5, w: float = 0.1, h: float = 0.2) -> Detection:
        return Detection(label, 0, 0.9, (x, y, w, h))

    crop = Geometry(1.25, -0.125, 1.25, -0.125)  # the centre 80% of the picture, stretched
    seen = [box("person", 0.3), box("car", 0.7)]
    on_copy = [replace(d, xywhn=crop.box(d.xywhn) or d.xywhn) for d in seen]
    found = geometry(seen, on_copy, lambda where: None)  # two boxes: no picture needed
    assert found is not None and not found.mirrored
    assert found.sx == pytest.approx(1.25) and found.tx == pytest.approx(-0.125)
    reviewed = [box("person", 0.3), box("dog", 0.04, w=0.06)]  # the dog sits in the strip cropped away
    assert [d.label for d in map_boxes(reviewed, found)] == ["person"]
    # the model's boxes disagree (another class, or far off): no mapping, the review stays
    assert geometry(seen, [box("person", 0.3), box("truck", 0.7)], lambda where: 1.0) is None
    assert geometry(seen, [box("person", 0.3), box("car", 0.1, y=0.1)], lambda where: 1.0) is None
    # one box fits a crop and a mirror alike: the pictures decide, and without them nothing moves
    one, mirror = [box("person", 0.3)], Geometry(-1.0, 1.0, 1.0, 0.0)
    copy = [replace(one[0], xywhn=mirror.box(one[0].xywhn) or one[0].xywhn)]
    picked = geometry(one, copy, lambda where: 1.0 if where.mirrored else 0.2)
    assert picked is not None and picked.mirrored
    assert geometry(one, copy, lambda where: None) is None
