"""Stage-level behaviour on real media: sampling modes, export formats, error classification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_miner.config import ExtractConfig
from video_miner.errors import classify_download_error
from video_miner.media.decode import extract_frames
from video_miner.store.manifest import ManifestRecord, read_manifest, write_manifest

from .conftest import BOTTLE, MODEL, PERSON, VIDEOS
from .helpers import run


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"mode": "fps", "fps": 1.0}, [float(t) for t in range(40)]),
        ({"mode": "interval", "every_seconds": 10.0}, [0.0, 10.0, 20.0, 30.0]),
        ({"mode": "fps", "fps": 0.5, "start": 5.0, "end": 15.5}, [5.0, 7.0, 9.0, 11.0, 13.0, 15.0]),
        ({"mode": "fps", "fps": 2.0, "max_frames": 3}, [0.0, 0.5, 1.0]),
    ],
)
def test_sampling_modes(tmp_path: Path, settings: dict, expected: list[float]) -> None:
    result = extract_frames(BOTTLE, tmp_path, "v", ExtractConfig(**settings), threads=1)
    times = [f.t for f in result.frames]
    assert len(times) == len(expected)
    assert all(abs(t - e) < 0.05 for t, e in zip(times, expected, strict=True)), times
    assert all((tmp_path / f.file).stat().st_size > 1000 for f in result.frames)


def test_prefilters_run_while_extracting_and_dropped_frames_are_never_written(tmp_path: Path) -> None:
    from PIL import Image

    from video_miner.config import FilterConfig
    from video_miner.media.prefilter import Prefilter
    from video_miner.media.quality import phash64

    result = extract_frames(BOTTLE, tmp_path, "v", ExtractConfig(), threads=1, prefilter=Prefilter(FilterConfig()))
    dropped = [f for f in result.frames if f.decision == "filtered"]
    passed = [f for f in result.frames if f.decision is None]
    assert dropped and passed and len(dropped) + len(passed) == len(result.frames) == 40
    assert all(f.reason.startswith(("blurry", "static")) for f in dropped)
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == sorted(f.file for f in passed)
    # Measures describe the written JPEG itself: what the detector and the dedup see.
    assert all(phash64(Image.open(tmp_path / f.file)) == f.phash for f in passed)
    everything_blurry = Prefilter(FilterConfig(max_blur=0))
    result = extract_frames(BOTTLE, tmp_path / "b", "v", ExtractConfig(), threads=1, prefilter=everything_blurry)
    assert all(f.decision == "filtered" for f in result.frames) and not list((tmp_path / "b").glob("*.jpg"))


def test_keyframes_only_and_downscale(tmp_path: Path) -> None:
    full = extract_frames(BOTTLE, tmp_path / "a", "v", ExtractConfig(mode="fps", fps=30), threads=1)
    keys = extract_frames(BOTTLE, tmp_path / "b", "v", ExtractConfig(mode="keyframes", max_side=320), threads=1)
    assert 0 < len(keys.frames) < len(full.frames) / 5
    from PIL import Image

    with Image.open(tmp_path / "b" / keys.frames[0].file) as im:
        assert max(im.size) == 320


def test_long_gaps_seek_instead_of_decoding_through(tmp_path: Path) -> None:
    # One frame a minute from a 139 s video: the same frames whether it seeks or not.
    person = VIDEOS / "one-by-one-person-detection.mp4"
    result = extract_frames(person, tmp_path, "v", ExtractConfig(mode="interval", every_seconds=60), threads=1)
    assert [round(f.t) for f in result.frames] == [0, 60, 120]
    assert [f.index for f in result.frames] == [0, 600, 1200]  # 10 fps
    # Frames between samples were skipped by seeking, not decoded (the video has 1394).
    assert result.decoded < 100, result.decoded


def test_coco_parquet_and_label_model(bottle_head: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    report = run([str(bottle_head)], out, **{"filter.classes": ["bottle", "person"], "export.formats": ["yolo", "coco"],
                                         "export.manifest": "parquet", "label.model": str(MODEL), "label.conf": 0.2})
    assert report.export.kept > 0
    coco = json.loads((out / "dataset" / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["bottle", "person"]
    assert len(coco["images"]) == report.export.kept
    assert coco["annotations"] and all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco["annotations"])
    # The labelling model (lower conf) found at least as many boxes as the filter kept.
    table = pq.read_table(out / "dataset" / "manifest.parquet").to_pylist()
    assert len(table) == report.export.frames
    kept = [r for r in table if r["decision"] == "kept"]
    labels = sum(len((out / "dataset" / "labels" / "train" / f"{Path(r['image']).stem}.txt").read_text().split("\n")) - 1
                 for r in kept)
    assert labels == len(coco["annotations"])
    assert labels >= sum(len(json.loads(r["detections"])) for r in kept) > 0


def test_a_parquet_manifest_keeps_what_only_some_rows_say(tmp_path: Path) -> None:
    """pyarrow takes a table's columns from its first row: a duplicate's similarity, a chained
    duplicate's ``through`` or a frame's shot must survive when the first row has none."""

    base = {"video_id": "v", "source": "v.mp4", "frame_index": 0, "image": None, "phash": "00000000000000ff",
            "blur": 0.1, "decision": "duplicate", "detections": []}
    rows = [{**base, "frame": "v@0.000", "timestamp": 0.0, "decision": "kept", "image": "images/train/v.jpg"},
            {**base, "frame": "v@1.000", "timestamp": 1.0, "duplicate_of": "v@0.000", "duplicate_by": "content",
             "similarity": {"picture": 0.9, "objects": 0.95}},
            {**base, "frame": "v@2.000", "timestamp": 2.0, "duplicate_of": "v@0.000", "duplicate_by": "content",
             "similarity": {"picture": 0.8, "objects": 0.9}, "through": "v@1.000", "shot": 1}]
    records = [ManifestRecord.from_json(r) for r in rows]
    write_manifest(tmp_path, records, "parquet")
    back = read_manifest(tmp_path)
    assert [r.as_json() for r in back] == [r.as_json() for r in records]
    assert back[2].extra == {"duplicate_by": "content", "similarity": {"picture": 0.8, "objects": 0.9},
                             "through": "v@1.000", "shot": 1} and back[0].extra == {}


@pytest.mark.parametrize(
    ("message", "kind", "transient"),
    [
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", "private", False),
        ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for "
         "the authentication.", "bot_check", True),
        ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.",
         "age_restricted", False),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "removed", False),
        ("ERROR: [youtube] abc: Video unavailable. This video is no longer available because the YouTube account "
         "associated with this video has been terminated.", "removed", False),
        ("ERROR: [youtube] abc: The uploader has not made this video available in your country", "geo_blocked", False),
        ("ERROR: [youtube] abc: This live event will begin in 3 hours.", "live_not_started", False),
        ("ERROR: [youtube] abc: Requested format is not available. Use --list-formats for a list of available formats",
         "format_unavailable", False),
        ("ERROR: [youtube] abc: Video unavailable. This content isn't available, try again later.", "rate_limited", True),
        ("ERROR: Unable to download webpage: HTTP Error 429: Too Many Requests", "rate_limited", True),
        ("ERROR: [youtube] abc: This video is only available for registered users", "sign_in_required", False),
        ("ERROR: Unsupported URL: https://example.com/page", "unsupported_url", False),
        ("ERROR: Unable to download webpage: HTTP Error 403: Forbidden", "http_4xx", False),
        ("ERROR: Unable to download webpage: HTTP Error 404: Not Found", "not_found", False),
        ("ERROR: Unable to download webpage: HTTP Error 503: Service Unavailable", "http_5xx", True),
        ("ERROR: Unable to download webpage: The read operation timed out", "timeout", True),
        ("ERROR: Unable to download webpage: [Errno 111] Connection refused", "connection", True),
    ],
)
def test_download_errors_are_classified(message: str, kind: str, transient: bool) -> None:
    """yt-dlp's messages (as its extractors word them) map to classes with a one-line hint."""
    error = classify_download_error(message)
    assert error.kind == kind and error.transient is transient
    assert error.hint and "\n" not in str(error)


def test_same_content_is_matched_exactly_and_a_failed_first_one_releases_the_others(tmp_path: Path) -> None:
    from video_miner.media.same_content import SameContent

    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    body = bytes(range(256)) * 20_000  # over 2 MiB: the middle is outside the cheap key
    a.write_bytes(body)
    b.write_bytes(body)
    c.write_bytes(body[:2_000_000] + b"x" + body[2_000_001:])  # same size, first and last MiB
    table: SameContent[str] = SameContent()
    key_a, first = table.claim(a)
    assert first is None
    key_b, waiting = table.claim(b)
    key_c, other = table.claim(c)
    assert key_a == key_b == key_c and waiting is not None and other is None  # c differs in the middle only
    assert not waiting.done()
    table.settle(key_c, c, "c's result")  # not the first of that key: changes nothing
    assert not waiting.done()
    table.settle(key_a, a, None)
    assert waiting.result() is None  # the first one failed: b does its own work


def test_cpu_lanes_split_a_batch_over_sessions_with_the_same_detections(tmp_path: Path) -> None:
    from PIL import Image

    from video_miner.detect.detector import Detector, DetectorSpec

    frames = extract_frames(PERSON, tmp_path, "p", ExtractConfig(mode="fps", fps=0.2, end=140), 1).frames
    images = [Image.open(tmp_path / f.file).convert("RGB") for f in frames][:7]
    found = {}
    for lanes in (1, 3):
        detector = Detector(DetectorSpec(str(MODEL), ("person",), 0.4, batch_size=8, device="cpu", cpu_lanes=lanes))
        detector.warm_up()
        detector.detect(images[:1])
        assert len(detector._lanes) == 1, "one image needs no more lanes: they open with the first larger batch"
        found[lanes] = detector.detect(images)
        assert len(detector._lanes) == lanes
        for model in detector._lanes:  # reopened: no spinning threads taking the decoders' CPU time
            options = model.predictor.model.backend.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert found[1] == found[3] and sum(map(len, found[1])) >= 3, found[1]


@pytest.mark.parametrize("threads", [1, 2])
def test_unsampled_non_reference_frames_are_never_decoded_and_the_samples_do_not_change(tmp_path: Path,
                                                                                      threads: int) -> None:
    """The bottle video (H.264 High, B-frames): every sampled image equals the one a full decode gives."""
    import av

    from video_miner.media.picture import geometry, to_rgb
    from video_miner.media.writer import jpeg as _jpeg

    cfg = ExtractConfig(mode="fps", fps=2.0)
    result = extract_frames(BOTTLE, tmp_path, "b", cfg, threads)
    expected, next_t = [], 0.0
    with av.open(str(BOTTLE)) as container:
        for frame in container.decode(container.streams.video[0]):
            if frame.time + 1e-6 >= next_t:
                rgb = to_rgb(frame, geometry(frame), cfg.max_side)
                expected.append((round(frame.time, 6), _jpeg(rgb, cfg.jpeg_quality)))
                next_t += 0.5 * (int((frame.time - next_t) / 0.5 + 1e-9) + 1)
    assert [(f.t, (tmp_path / f.file).read_bytes()) for f in result.frames] == expected
    assert result.decoded < 0.7 * 1189, result.decoded  # 1189 frames, about half of them non-reference


@pytest.mark.parametrize("first", ["copy", "original"])
def test_a_deferred_twin_does_not_defer_a_more_preferred_twin(tmp_path: Path, first: str) -> None:
    """Byte-identical frames of a video and of its copy (listed later) on either side of a kept near
    frame in priority: the original's frame ranks above the kept one, the copy's below. Whichever
    twin reaches the detection cache first, the original's is detected once and the copy's is not
    deferred in its place (a race that made CI count 22 detections instead of 21)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from PIL import Image

    from video_miner.config import load_config
    from video_miner.dataset.priority import frame_priority
    from video_miner.detect.judge import FrameJudge
    from video_miner.records import Decision, Detection, Detections, FrameRecord
    from video_miner.stages.context import StageEnv

    # pHash's radius for deferral (with the semantic pass on, only equal hashes are deferred).
    env = StageEnv.of(load_config(None, {"output": str(tmp_path), "dedup.semantic": False}), tmp_path)
    requests: list[Future[list[Detection]]] = []

    def submit(image: Image.Image, key: tuple[str, float], live: bool = False) -> Future[list[Detection]]:
        requests.append(Future())
        return requests[-1]

    detector = SimpleNamespace(submit=submit)
    judge = FrameJudge(detector, env.detections, env.hints, "none")  # type: ignore[arg-type]
    image = tmp_path / "frame.jpg"
    Image.new("RGB", (64, 36)).save(image)

    def frame(t: float) -> FrameRecord:
        return FrameRecord("f.jpg", t, 0, pixels=2304, bpp=0.1, sharpness=50.0, digest="same-bytes", phash=0b11)

    assert env.hints is not None
    env.hints.add(0b01, frame_priority(frame(2.0), 0, "a"))  # kept: the original at 2 s
    twins = {"original": (frame(1.0), 0, "a"), "copy": (frame(1.0), 1, "b")}
    order = [first, "original" if first == "copy" else "copy"]
    tickets = {name: judge.start(twins[name][0], image, twins[name][1], twins[name][2]) for name in order}
    assert len(requests) == 1
    requests[0].set_result(Detections.of([Detection("person", 0, 0.9, (0.5, 0.5, 0.2, 0.2))]))
    for name, ticket in tickets.items():
        while ticket is not None:
            ticket = judge.finish(ticket, twins[name][1], twins[name][2])
    original, copy = twins["original"][0], twins["copy"][0]
    assert original.decision == Decision.CANDIDATE and original.detected is True
    assert copy.decision in (Decision.DEFERRED, Decision.CANDIDATE) and not copy.detected
