"""End to end on the real videos and the real model: what users get from `video-miner run`."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from video_miner.dataset import handover
from video_miner.dataset.previous import model_digest
from video_miner.media.quality import hamming, open_gray, phash64
from video_miner.store.registry import Registry

from .conftest import BOTTLE, CARS, MODEL, PERSON, VIDEOS
from .helpers import cli, cli_here, dataset_files, manifest, metrics, run
from .http_server import serve

#: Seconds of the person video (and of its copy) the detector-skipping runs read.
SKIP_SECONDS = 30


@pytest.fixture(scope="module")
def person_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller re-encoded copy of the person video's first seconds: near-duplicates, never byte-identical."""
    from scripts.media import reencode

    small = tmp_path_factory.mktemp("copy") / "person-small.mp4"
    reencode(PERSON, small, 0.75, seconds=SKIP_SECONDS)
    return small


@pytest.fixture(scope="module")
def person_runs(person_head: Path, bottle_head: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The person video's first 40 s (two people cross the room), a bottle clip and the parking
    lot, mined by the stage pipeline and one video at a time."""
    base = tmp_path_factory.mktemp("person")
    outs = {}
    for engine in ("async", "sequential"):
        report = run([str(person_head), str(bottle_head), str(CARS)], base / engine, engine=engine)
        assert not report.failures, report.failures
        assert report.videos_done == 3
        outs[engine] = base / engine
    return outs


def test_person_frames_come_from_the_person_video(person_runs: dict[str, Path]) -> None:
    rows = manifest(person_runs["async"])
    kept = Counter(r.video_id.split("-")[0] for r in rows if r.decision == "kept")
    assert sum(kept.values()) >= 4
    assert kept["person"] > sum(kept.values()) / 2, kept
    assert kept["car"] == 0, kept
    # One manifest row per extracted frame, each with a decision and the frame's measures.
    assert len(rows) == sum(1 for r in rows if r.decision in {"kept", "duplicate", "filtered"})
    assert all(0 <= r.phash < 2**64 and r.blur >= 0 for r in rows)
    assert all(r.detections and all(d.label == "person" and d.conf >= 0.4 for d in r.detections)
               for r in rows if r.decision == "kept")
    dup = next(r for r in rows if r.decision == "duplicate")
    assert dup.duplicate_of in {r.frame for r in rows if r.decision == "kept"}


def test_async_and_sequential_give_identical_datasets(person_runs: dict[str, Path]) -> None:
    a = dataset_files(person_runs["async"] / "dataset")
    s = dataset_files(person_runs["sequential"] / "dataset")
    assert a and a.keys() == s.keys()
    assert a == s


def test_no_two_kept_images_are_near_duplicates(person_runs: dict[str, Path]) -> None:
    """Within pHash 6 of each other, two kept frames must show different things: other objects, or
    objects the content pass tells apart (their embeddings, as the registry holds them)."""
    import sqlite3

    from video_miner.dataset.semantic import objects_match
    from video_miner.records import FrameEmbedding

    out = person_runs["async"]
    dataset = out / "dataset"
    # Hashed as the dedup hashes them: the JPEG's luma plane.
    hashes = {p.name: phash64(open_gray(p)) for p in (dataset / "images").rglob("*.jpg")}
    assert len(hashes) >= 5  # two people, bottles: pairs enough to look at
    rows = {Path(r.image or "").name: r for r in manifest(out) if r.decision == "kept"}
    with sqlite3.connect(out / "registry.sqlite") as db:
        blobs = {f"{v}@{t:.3f}": e for v, t, e in db.execute("SELECT video_id, timestamp, embedding FROM frames")}
    for (a, ha), (b, hb) in combinations(hashes.items(), 2):
        assert ha != hb, (a, b)
        if hamming(ha, hb) <= 6:
            ea, eb = (FrameEmbedding.from_bytes(blobs[rows[n].frame]) for n in (a, b))
            labels = [[d.label for d in rows[n].detections] for n in (a, b)]
            alike = float(ea.whole @ eb.whole) >= 0.75 and objects_match(ea.boxes, labels[0], eb.boxes, labels[1]) >= 0.94
            assert not alike, (a, b)


def test_labels_are_yolo_format(person_runs: dict[str, Path]) -> None:
    dataset = person_runs["async"] / "dataset"
    data = yaml.safe_load((dataset / "data.yaml").read_text())
    assert data["names"] == {0: "person"} and data["nc"] == 1
    images = sorted((dataset / "images").rglob("*.jpg"))
    for image in images:
        label = dataset / "labels" / image.parent.name / f"{image.stem}.txt"
        lines = label.read_text().split("\n")[:-1]
        assert lines
        for line in lines:
            cls, *xywh = line.split()
            assert cls == "0" and len(xywh) == 4 and all(0 <= float(v) <= 1 for v in xywh)


def test_dataset_loads_and_trains_in_ultralytics_and_the_next_round_mines_where_models_disagree(
        person_runs: dict[str, Path], person_head: Path, tmp_path: Path) -> None:
    """A real ``yolo train`` on the exported dataset; then a round that names that model as the one
    before (``select.previous_model``): trained from scratch for one epoch, it finds no person, so
    every frame the real model keeps is one it missed: each is marked with how, the export records
    its boxes per frame under the file's digest, and ``export --new-only --limit`` hands those
    frames over first, then the next ones."""
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    data_yaml = person_runs["async"] / "dataset" / "data.yaml"
    info = check_det_dataset(str(data_yaml))
    assert info["nc"] == 1 and Path(info["train"]).is_dir()
    model = YOLO("yolov8n.yaml", task="detect")
    model.train(data=str(data_yaml), epochs=1, imgsz=64, batch=4, device="cpu", workers=0, plots=False, amp=False,
                project=str(tmp_path), name="t", val=True, verbose=False)
    trained = tmp_path / "t" / "weights" / "last.pt"
    assert trained.exists()

    out = tmp_path / "round2"
    report = run([str(person_head)], out, **{"select.previous_model": str(trained)})
    assert not report.failures and report.export.kept >= 3
    rows = manifest(out)
    kept = [r for r in rows if r.decision == "kept"]
    assert all("the previous model missed this person" in r.extra.get("disagrees", []) for r in kept), kept
    assert report.export.disagree >= len(kept)
    registry = Registry(out / "registry.sqlite", readonly=True)
    digest = model_digest(trained)
    seen = registry.previous_boxes(digest)
    registry.close()
    assert {r.frame for r in kept} <= set(seen)
    dry = cli_here("export", "-o", str(out), "--format", "label-studio", "--new-only", "--limit", "2", "--dry-run")
    said = [line.strip() for line in dry.stdout.splitlines() if "the previous model missed this person" in line]
    assert dry.returncode == 0 and "2 frames would go to label-studio (batch 1); nothing written" in dry.stdout, dry.stdout
    assert len(said) == 2 and not (out / "exports" / "label-studio" / "batch-0001").exists()
    batch = handover.export(out, "label-studio", new_only=True, limit=2)
    assert len(batch.frames) == 2 and all(f.row.extra.get("disagrees") for f in batch.frames)
    assert [line.split(": ")[0] for line in said] == [f.row.frame for f in batch.frames]
    again = handover.export(out, "label-studio", new_only=True, limit=2)
    assert not {f.row.frame for f in again.frames} & {f.row.frame for f in batch.frames}


@pytest.mark.parametrize("semantic", [False, True])
def test_skipping_the_detector_for_near_duplicates_changes_nothing_in_the_output(person_copy: Path, tmp_path: Path,
                                                                                 semantic: bool) -> None:
    """The person video and a smaller re-encoded copy: frames of the copy near a sharper person frame of
    the original skip the detector, yet images, labels and manifest equal those of a run that detects all.
    With the semantic pass only equal pHashes are deferred (the content decides the rest): fewer."""
    inputs = [str(PERSON), str(person_copy)]
    reports = {}
    for skip in (True, False):
        # One video at a time, in order: the original (more pixels: preferred) is detected before its copy is
        # looked at, so the count of deferred frames is stable; the outputs must be equal whatever it is.
        reports[skip] = run(inputs, tmp_path / str(skip), **{"extract.end": SKIP_SECONDS, "dedup.skip_detection": skip,
                                                             "pipeline.download_workers": 1,
                                                             "pipeline.filter_workers": 1,
                                                             "pipeline.extract_workers": 1,
                                                             "dedup.semantic": semantic})
        assert not reports[skip].failures
    totals = {skip: metrics(tmp_path / str(skip)).totals for skip in reports}
    assert totals[False]["frames_deferred"] == 0
    fewer = 1 if semantic else 10
    assert totals[True]["frames_deferred"] >= fewer, totals[True]
    assert totals[True]["frames_to_detector"] <= totals[False]["frames_to_detector"] - fewer, totals
    assert reports[True].export.kept >= 5
    assert dataset_files(tmp_path / "True" / "dataset") == dataset_files(tmp_path / "False" / "dataset")
    assert manifest(tmp_path / "True") == manifest(tmp_path / "False")
    # Both videos side by side (the default): a frame of the copy near a frame of the original that
    # is in a detector batch waits for that frame's detections instead of being sent too. How many
    # are deferred then depends on how the two videos' frames interleave (the machine's speed); the
    # output never does.
    side = run(inputs, tmp_path / "side", **{"extract.end": SKIP_SECONDS, "dedup.semantic": semantic})
    both = metrics(tmp_path / "side").totals
    assert not side.failures and both["frames_deferred"] >= 1, both
    assert dataset_files(tmp_path / "side" / "dataset") == dataset_files(tmp_path / "False" / "dataset")
    assert manifest(tmp_path / "side") == manifest(tmp_path / "False")


def test_bottle_frames_come_from_the_bottle_video(person_head: Path, bottle_head: Path, tmp_path: Path) -> None:
    report = run([str(person_head), str(bottle_head), str(CARS)], tmp_path / "b", **{"filter.classes": ["bottle"]})
    rows = manifest(tmp_path / "b")
    kept = {r.video_id for r in rows if r.decision == "kept"}
    assert report.export.kept > 0
    assert kept and all(v.startswith("bottle-12s") for v in kept), kept


def test_downloads_over_http_file_urls_and_local_paths(person_head: Path, tmp_path: Path) -> None:
    files = {
        "/a/video.mp4": BOTTLE,
        "/b/video.mp4": CARS,  # same name, different URL: must not collide
        "/signs/again.mkv": VIDEOS / "again.mkv",
    }
    with serve(files) as (base, state):
        inputs = [f"{base}/a/video.mp4", f"{base}/b/video.mp4", f"{base}/signs/again.mkv",
                  (VIDEOS / "book.mkv").as_uri(), str(person_head)]
        report = run(inputs, tmp_path / "out", **{"extract.fps": 0.5})
    assert not report.failures, [f.line() for f in report.failures]
    assert report.videos_done == 5
    from video_miner.store.registry import Registry

    reg = Registry(tmp_path / "out" / "registry.sqlite")
    rows = {r.input: r for r in reg.videos()}
    reg.close()
    a, b = rows[f"{base}/a/video.mp4"], rows[f"{base}/b/video.mp4"]
    assert a.video_id != b.video_id
    assert Path(a.path).read_bytes() == BOTTLE.read_bytes()
    assert Path(b.path).read_bytes() == CARS.read_bytes()
    assert Path(a.path).is_relative_to(tmp_path / "out" / "work" / "videos")
    # Local files and file:// URLs are used in place, never copied.
    assert rows[str(person_head)].path == str(person_head.resolve())
    assert rows[(VIDEOS / "book.mkv").as_uri()].path == str((VIDEOS / "book.mkv").resolve())
    assert a.source_meta["webpage_url"] == f"{base}/a/video.mp4"
    assert state.hits["/a/video.mp4"] >= 1


def test_cli_unknown_class_is_a_config_error_listing_valid_names(tmp_path: Path) -> None:
    proc = cli_here("run", str(BOTTLE), "--model", str(MODEL), "--classes", "persn", "-o", str(tmp_path / "o"), "-q")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "persn" in out and "person" in out and "toothbrush" in out


def test_cli_bad_config_key_points_at_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filter:\n  conff: 0.3\nextract:\n  fps: -1\n")
    proc = cli("run", str(BOTTLE), "-c", str(cfg), "-q", cwd=tmp_path)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "filter.conff: unknown key" in out and "extract.fps" in out


def test_cli_run_exit_codes_and_summary(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# a comment\n\n{VIDEOS / 'again.mkv'}\n{VIDEOS / 'again.mkv'}\n{tmp_path / 'missing.mp4'}\n")
    proc = cli_here("run", str(listing), "--model", str(MODEL), "-o", str(tmp_path / "o"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing.mp4: not_found" in proc.stdout
    assert "videos 1/2 done" in proc.stdout
    proc = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_model_that_does_not_load_is_a_usage_error(tmp_path: Path) -> None:
    fake = tmp_path / "broken.onnx"
    fake.write_text("not a model")
    proc = cli_here("run", str(BOTTLE), "--model", str(fake), "-o", str(tmp_path / "o"), "-q")
    assert proc.returncode == 2
    assert "cannot load model" in proc.stdout + proc.stderr and "filter.model" in proc.stdout + proc.stderr


def test_identical_videos_cost_one_inference_per_frame(bottle_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-bottle.mp4"
    copy.write_bytes(bottle_head.read_bytes())
    single = run([str(bottle_head)], tmp_path / "one")
    both = {engine: run([str(bottle_head), str(copy)], tmp_path / engine, engine=engine)
            for engine in ("async", "sequential")}
    for report in both.values():
        assert report.counters["frames_to_detector"] == single.counters["frames_to_detector"] > 0
        # The copy's frames are exact duplicates: the dataset is the single video's.
        assert report.export.kept == single.export.kept and report.export.duplicates >= single.export.kept
    assert dataset_files(tmp_path / "async" / "dataset") == dataset_files(tmp_path / "sequential" / "dataset")
    # Two extract workers take both at once: the copy waits for the original's frames instead of
    # decoding, and its manifest rows are those a decode gives (the sequential run decoded both).
    assert both["async"].counters.get("videos_same_content") == 1
    assert both["sequential"].counters.get("videos_same_content", 0) == 0
    assert manifest(tmp_path / "async") == manifest(tmp_path / "sequential")


def test_a_page_of_videos_expands_into_one_item_per_video(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><head><title>clips</title></head><body>"
                    "<video src='/v/again.mkv'></video><video src='/v/book.mkv'></video></body></html>")
    with serve({"/clips.html": page, "/v/again.mkv": VIDEOS / "again.mkv", "/v/book.mkv": VIDEOS / "book.mkv"}) as (base, _):
        report = run([f"{base}/clips.html"], tmp_path / "out")
    assert not [f for f in report.failures if f.kind != "unfinished"], [f.line() for f in report.failures]
    from video_miner.store.registry import Registry

    reg = Registry(tmp_path / "out" / "registry.sqlite")
    rows = reg.videos()
    reg.close()
    children = [r for r in rows if r.parent]
    assert len(children) == 2 and all(r.state == "done" for r in children), rows
    assert len({r.video_id for r in children}) == 2
    assert report.videos_done == 2


def test_batches_across_videos_change_nothing_in_the_dataset(short_clips: list[Path], tmp_path: Path) -> None:
    """One frame of each short clip reaches the detector. With many filter workers the batcher fills
    batches from several clips; with one, a batch only ever holds one clip's frame. Same dataset."""
    inputs = [str(p) for p in short_clips]
    across = run(inputs, tmp_path / "across")
    alone = run(inputs, tmp_path / "alone", **{"pipeline.filter_workers": 1})
    assert not across.failures and not alone.failures
    det = {name: metrics(tmp_path / name).detector for name in ("across", "alone")}
    across_batches, alone_batches = det["across"], det["alone"]
    assert across_batches is not None and alone_batches is not None
    assert across_batches.requests == alone_batches.requests == len(short_clips)
    assert max(map(int, across_batches.batch_sizes)) > 1, across_batches
    assert set(alone_batches.batch_sizes) == {"1"}, alone_batches
    assert across.export.kept >= 5
    assert dataset_files(tmp_path / "across" / "dataset") == dataset_files(tmp_path / "alone" / "dataset")
    assert manifest(tmp_path / "across") == manifest(tmp_path / "alone")
