"""Property-based tests (hypothesis) over what users and files give: input names and URLs, config
values; and a corpus of mutated media (truncated, bit-flipped, header-inflated, made here from the
shared videos) through the whole pipeline beside good inputs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.media import gif_bomb, head
from video_miner.config import MinerConfig, load_config
from video_miner.errors import ConfigError
from video_miner.inputs.listing import expand_sources, read_input_lines
from video_miner.redact import DEFAULT, plain, printable
from video_miner.store.naming import is_safe_name

from .conftest import BOTTLE, CARS, MODEL, ROOT, VIDEOS

#: 60 new examples a run; hypothesis' example database (.hypothesis/) keeps the failing and the
#: interesting ones and replays them first, so the corpus grows from run to run.
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: What can stand in a part of a URL as typed: no whitespace, no control character, and none of the
#: characters that end the part (a "/" in a user name is written %2F).
URL_PARTS = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"],
                                  exclude_characters="/?#@[]"), max_size=40)


#: Any line but one naming a folder that exists here: a folder is expanded to every video under it,
#: and "/" or "." would walk this whole machine (a test of reading, not of listing disks).
LINES = st.text(max_size=300).filter(lambda line: not any(os.path.isdir(part.strip()) for part in [line, *line.splitlines()]))


@FUZZ
@given(st.lists(LINES, max_size=8))
def test_any_input_line_becomes_a_source_with_a_safe_name(lines: list[str]) -> None:
    for source in expand_sources(lines):
        assert is_safe_name(source.video_id), source
        assert source.kind in ("local", "url", "remote", "live", "invalid")
        shown = plain(source.raw)
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown), shown


@FUZZ
@given(scheme=st.sampled_from(["http", "https", "rtsp", "rtmp", "srt", "tcp", "s3", "ftp"]), user=URL_PARTS,
       password=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=6, max_size=20), host=URL_PARTS,
       path=URL_PARTS, token=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=8, max_size=30))
def test_no_secret_survives_redaction(scheme: str, user: str, password: str, host: str, path: str, token: str) -> None:
    url = f"{scheme}://{user}:{password}@{host}/{path}?a=1&token={token}&X-Amz-Signature={token}"
    shown = DEFAULT.url(url)
    in_text = DEFAULT.text(f"ERROR: cannot open {url} (retrying)")
    for text in (shown, in_text, plain(url)):
        assert f":{password}@" not in text and f"token={token}" not in text, text
    assert DEFAULT.url(shown) == shown  # masking twice changes nothing


@FUZZ
@given(st.lists(LINES, max_size=20))
def test_a_list_file_of_anything_reads_without_error(tmp_path: Path, lines: list[str]) -> None:
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    read = read_input_lines([str(listing)])
    assert all(line and not line.startswith("#") for line in read)
    expand_sources(read)


KEYS = ["extract.fps", "extract.mode", "extract.max_side", "extract.start", "extract.end", "extract.max_pixels",
        "filter.conf", "filter.classes", "filter.max_blur", "filter.min_side", "dedup.threshold",
        "download.ytdlp_options", "download.retries", "live.queue_policy", "live.queue_size", "watch.settle_s",
        "export.formats", "pipeline.queue_size", "metrics_port", "secret_params", "name", "unknown.key"]
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) |
                      st.text(max_size=30), lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_config_value_is_accepted_or_refused_with_a_line_naming_its_key(overrides: dict[str, Any]) -> None:
    try:
        config = load_config(None, overrides)
    except ConfigError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
        return
    assert isinstance(config, MinerConfig)
    config.result_hash()


@FUZZ
@given(st.text(max_size=400))
def test_any_yaml_text_is_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):
        load_config(path)


@FUZZ
@given(st.text(max_size=200))
def test_printable_shows_every_control_character_escaped(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)


# ---- mutated media through the whole pipeline ---------------------------------------------------
def _mutants(folder: Path) -> list[Path]:
    """Damaged copies of the first seconds of the bottle and car videos, the same every time (seeded)."""
    rng = random.Random(20261201)
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    (folder / "sources").mkdir()
    for source in (head(BOTTLE, folder / "sources" / BOTTLE.name, 5), head(CARS, folder / "sources" / CARS.name, 5)):
        data = source.read_bytes()
        for cut in (0.05, 0.5, 0.97):  # truncated: the index, half of it, nearly all of it
            made.append(_write(folder / f"{source.stem}-cut{cut}.mp4", data[:int(len(data) * cut)]))
        for k in range(3):  # bit flips in the middle of the media data
            flipped = bytearray(data)
            for _ in range(40 * (k + 1)):
                at = rng.randrange(len(data) // 4, len(data))
                flipped[at] ^= 1 << rng.randrange(8)
            made.append(_write(folder / f"{source.stem}-flip{k}.mp4", bytes(flipped)))
        inflated = bytearray(data)  # header-inflated: the sample entry's picture 65535x65535
        at = inflated.find(b"avc1") + 4 + 24
        inflated[at:at + 4] = b"\xff\xff\xff\xff"
        made.append(_write(folder / f"{source.stem}-huge.mp4", bytes(inflated)))
        duration = bytearray(data)  # a movie header claiming a duration of years, a zero timescale
        at = duration.find(b"mvhd") + 4
        duration[at + 12:at + 20] = b"\x00\x00\x00\x00\xff\xff\xff\xff"
        made.append(_write(folder / f"{source.stem}-time.mp4", bytes(duration)))
    made.append(gif_bomb(folder / "bomb.gif"))
    return made


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _good_rows(out: Path, names: set[str]) -> list[tuple[Any, ...]]:
    rows = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    return sorted((r["frame"], r["phash"], r["decision"], json.dumps(r["detections"])) for r in rows
                  if Path(r["source"]).name in names)


@pytest.mark.timeout(900)
def test_mutated_media_fail_alone_without_a_traceback_a_stray_file_or_a_memory_spike(tmp_path: Path) -> None:
    good = [VIDEOS / "again.mkv", VIDEOS / "book.mkv"]
    hwm = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024"
    peak = ("import sys\nfrom video_miner.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('PEAK', {hwm})\n")

    def mine(inputs: list[Path], out: Path) -> tuple[int, subprocess.CompletedProcess[str]]:
        proc = subprocess.run([sys.executable, "-c", peak, "run", *map(str, inputs), "--model", str(MODEL), "-o",
                               str(out), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=800,
                              env={**os.environ, "COLUMNS": "200"})
        return int(proc.stdout.split("PEAK")[-1]), proc

    reference_peak, proc = mine(good, tmp_path / "reference")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mutants = _mutants(tmp_path / "mutants")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    peak_mb, proc = mine([*mutants, *good], tmp_path / "out")
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and proc.returncode in (0, 1), text
    assert peak_mb < reference_peak + 300, (peak_mb, reference_peak)
    # Nothing written outside the output folder: the inputs and the reference are as they were.
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "out")}
    assert after == before
    # The good inputs' frames are the frames they give alone.
    names = {p.name for p in good}
    assert _good_rows(tmp_path / "out", names) == _good_rows(tmp_path / "reference", names)
    with open(tmp_path / "out" / "failures.tsv") as fh:
        failed = [line.split("\t") for line in fh.read().splitlines()[1:]]
    assert all(kind in ("corrupt_media", "too_large", "no_video_stream", "unsupported_codec") for kind, *_ in failed), failed
    names = {Path(x[-1]).name for x in failed}
    assert {"bomb.gif", "bottle-detection-cut0.05.mp4"} <= names and len(names) >= 4, failed


# ---- the exports and the textfile, whatever the names ---------------------------------------------
#: Any name a file system holds (an undecodable byte reads as a lone surrogate U+DC80-U+DCFF).
NAMES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="/\x00") | st.characters(
    min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=40).filter(lambda n: n not in (".", ".."))


def _batch(folder: Path, classes: list[str], dest: Path) -> Any:
    from PIL import Image

    from video_miner.dataset.handover import Batch, Frame
    from video_miner.records import Detection, MediaInfo
    from video_miner.store.manifest import ManifestRecord

    image = folder / "images" / "train" / "v_000001000ms.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        Image.new("RGB", (64, 48)).save(image)
    dets = [Detection(c, k, 0.5, (0.5, 0.5, 0.2, 0.2)) for k, c in enumerate(classes)]
    row = ManifestRecord("v@1.000", "v", "src", {}, 1.0, 1, "images/train/v_000001000ms.jpg", 0, 0.1, 1.0,
                         MediaInfo(), dets, "kept")
    return Batch("x", dest, [Frame(row, image, 64, 48, "train")], classes)


@FUZZ
@given(classes=st.lists(NAMES, min_size=1, max_size=4, unique=True), dest=NAMES)
def test_every_export_is_well_formed_whatever_the_class_and_folder_names(tmp_path: Path, classes: list[str],
                                                                       dest: str) -> None:
    import xml.etree.ElementTree as ET

    import yaml

    from video_miner.dataset import handover

    folder = tmp_path / "case"
    target = folder / "exports" / dest
    if target.exists():
        import shutil

        shutil.rmtree(target)
    shown = [printable(c) for c in classes]
    for writer in (handover.write_label_studio, handover.write_cvat, handover.write_fiftyone):
        writer(_batch(folder, classes, target))
    labels = [x.get("value") for x in ET.parse(target / "label_config.xml").getroot().iter("Label")]
    assert labels == shown
    cvat = ET.parse(target / "annotations.xml").getroot()
    assert [x.findtext("name") for x in cvat.iter("label")] == shown
    assert [b.get("label") for b in cvat.iter("box")] == shown
    tasks = json.loads((target / "tasks.json").read_text())
    assert [r["value"]["rectanglelabels"][0] for r in tasks[0]["predictions"][0]["result"]] == shown
    assert json.loads((target / "metadata.json").read_text())["default_classes"] == shown
    card = handover._card(_batch(folder, classes, target), {"train": 1})
    names = yaml.safe_load(card.split("---\n")[1])["dataset_info"]["features"][0]["struct"][0]["sequence"]
    assert list(names["class_label"]["names"].values()) == shown


@FUZZ
@given(name=NAMES)
def test_any_textfile_path_is_written_or_refused_with_a_line(tmp_path: Path, name: str) -> None:
    from video_miner.run.prepare import check_request
    from video_miner.run.request import RunRequest

    config = load_config(None, {"output": str(tmp_path / "out"), "metrics.textfile": str(tmp_path / "prom" / name)})
    try:
        check_request(RunRequest([str(VIDEOS / "again.mkv")], config), expand_sources([str(VIDEOS / "again.mkv")]))
    except ConfigError as exc:
        assert "\n" not in str(exc)
