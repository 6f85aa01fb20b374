"""Every file video-miner writes and reads back goes through one module (video_miner/store/files.py):
exports, records, metrics files; as an attacker would try it, each made here: links planted in the
output and export folders, someone else's folder as --dest, edited manifests and records, a FIFO
as the textfile, Pushgateways on 127.0.0.1 that answer garbage, endless headers or a trickle,
formula-like and invisible characters in names, a model whose class names hold control characters."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from video_miner.config import load_config
from video_miner.dataset import handover
from video_miner.errors import ConfigError, UnsafePath
from video_miner.keep import KeepError, parse_keep
from video_miner.store.files import file_mode

from .conftest import MODEL, VIDEOS
from .helpers import cli, cli_here, kept, manifest, run

CLASSES = ["person", "bottle"]


@pytest.fixture(scope="module")
def mined(bottle_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mined") / "out"
    report = run([str(VIDEOS / "again.mkv"), str(bottle_head)], out, **{"filter.classes": CLASSES})
    assert report.export.kept >= 3
    return out


@pytest.fixture
def out(mined: Path, tmp_path: Path) -> Path:
    """A fresh copy of the mined output folder (hard links kept as files: each test may break it)."""
    copy = tmp_path / "out"
    shutil.copytree(mined, copy)
    return copy


def one_line(proc: object) -> str:
    text = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in text and "unexpected error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


# ---- links and folders that are not ours ---------------------------------------------------------
def test_a_dangling_link_among_the_export_images_is_replaced_never_followed(out: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    first = cli_here("export", "-o", str(out), "--format", "label-studio", "--dest", str(dest))
    assert first.returncode == 0, first.stdout
    name = sorted((dest / "images").iterdir())[0].name
    outside = tmp_path / "outside.jpg"
    (dest / "images" / name).unlink()
    (dest / "images" / name).symlink_to(outside)  # dangling: export used to create the file there
    cvat_images = out / "exports" / "cvat" / "all" / "images"
    cvat_images.mkdir(parents=True)
    (cvat_images / name).symlink_to(tmp_path / "outside-cvat.jpg")
    again = cli_here("export", "-o", str(out), "--format", "label-studio", "--dest", str(dest))
    cvat = cli_here("export", "-o", str(out), "--format", "cvat")
    assert again.returncode == 0 and cvat.returncode == 0, again.stdout + cvat.stdout
    assert not outside.exists() and not (tmp_path / "outside-cvat.jpg").exists()
    for image in (dest / "images" / name, cvat_images / name):
        assert not image.is_symlink() and image.stat().st_size > 1000


def test_a_link_at_an_export_file_never_has_its_target_overwritten(out: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"precious")
    data = out / "exports" / "hf" / "all" / "data"
    data.mkdir(parents=True)
    (out / "exports" / "hf" / "all" / handover.MARKER).write_text(
        json.dumps({"dataset": str(out.resolve()), "format": "hf"}))
    for name in ("train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"):
        (data / name).symlink_to(victim)
    proc = cli_here("export", "-o", str(out), "--format", "hf")
    assert proc.returncode == 0, proc.stdout
    assert victim.read_bytes() == b"precious"
    assert any(p.is_file() and not p.is_symlink() for p in data.iterdir())


@pytest.mark.parametrize("what", ["handed", "exports"])
def test_a_linked_record_or_exports_folder_is_refused_with_one_line(out: Path, tmp_path: Path, what: str) -> None:
    victim = tmp_path / "victim"
    if what == "handed":
        victim.write_text("precious\n")
        folder = out / "exports" / "label-studio"
        folder.mkdir(parents=True)
        (folder / handover.HANDED).symlink_to(victim)
    else:
        victim.mkdir()
        (out / "exports").symlink_to(victim)
    proc = cli_here("export", "-o", str(out), "--format", "label-studio")
    assert proc.returncode == 2
    assert "symbolic link" in one_line(proc)
    assert (victim.read_text() == "precious\n") if what == "handed" else not any(victim.iterdir())


def test_someone_elses_folder_as_dest_is_refused_and_left_as_it_was(out: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("my notes")
    (theirs / "tasks.json").write_text("[1, 2, 3]")
    for fmt in ("label-studio", "hf"):
        proc = cli_here("export", "-o", str(out), "--format", fmt, "--dest", str(theirs))
        assert proc.returncode == 2
        assert "did not write" in one_line(proc) and "--dest" in one_line(proc)
    assert (theirs / "README.md").read_text() == "my notes" and (theirs / "tasks.json").read_text() == "[1, 2, 3]"
    assert sorted(p.name for p in theirs.iterdir()) == ["README.md", "tasks.json"]
    # An earlier export of this dataset is written again; of another format or dataset, it is not.
    ours = tmp_path / "ours"
    assert cli_here("export", "-o", str(out), "--format", "label-studio", "--dest", str(ours)).returncode == 0
    assert cli_here("export", "-o", str(out), "--format", "label-studio", "--dest", str(ours)).returncode == 0
    assert cli_here("export", "-o", str(out), "--format", "cvat", "--dest", str(ours)).returncode == 2


def test_manifest_paths_out_of_the_dataset_are_left_out_with_a_line(out: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for export")
    path = out / "dataset" / "manifest.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    good = [r for r in rows if r["decision"] == "kept"]
    evil = [{**good[0], "frame": "evil@1.000", "image": str(secret)},
            {**good[1], "frame": "evil@2.000", "image": "images/train/../../../../" + str(secret)[1:]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *evil]))
    for fmt in ("label-studio", "hf"):
        proc = cli_here("export", "-o", str(out), "--format", fmt)
        assert proc.returncode == 0, proc.stdout
        assert proc.stdout.count("leads out of the dataset") == 2, proc.stdout
    folder = out / "exports"
    assert not any(p.stat().st_ino == secret.stat().st_ino for p in folder.rglob("*.jpg"))
    assert all(b"not for export" not in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    tasks = json.loads((folder / "label-studio" / "all" / "tasks.json").read_text())
    assert len(tasks) == len(good) and not any(t["data"]["frame"].startswith("evil") for t in tasks)


# ---- records that survive their own damage and concurrency --------------------------------------
def test_a_torn_last_record_is_read_past_with_a_warning(out: Path) -> None:
    assert cli_here("export", "-o", str(out), "--format", "label-studio", "--new-only").returncode == 0
    handed = out / "exports" / "label-studio" / handover.HANDED
    handed.write_text(handed.read_text() + '{"batch": 2, "frames": {"a@1.0')  # a crash mid-append
    for command in (("export", "--new-only"), ("diff",)):
        proc = cli_here(command[0], "-o", str(out), "--format", "label-studio", *command[1:])
        assert proc.returncode == 0, proc.stdout
        assert "torn" in proc.stdout and "unexpected error" not in proc.stdout
    assert "nothing new" in cli_here("export", "-o", str(out), "--format", "label-studio", "--new-only").stdout
    diff = json.loads(cli_here("diff", "-o", str(out), "--format", "label-studio", "--json").stdout)
    assert diff["added"] == [] and diff["removed"] == [] and diff["notes"]


def test_two_exports_at_once_hand_each_frame_over_once(out: Path) -> None:
    batches: list[handover.Batch] = []
    go = threading.Barrier(2)

    def export() -> None:
        go.wait()
        batches.append(handover.export(out, "label-studio", new_only=True))

    threads = [threading.Thread(target=export) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    written = [b for b in batches if b.dest is not None]
    assert len(batches) == 2 and len(written) == 1, batches  # the second found nothing new
    records, problems = handover.handed_records(out / "exports" / "label-studio")
    assert not problems and [r.batch for r in records] == [1]
    assert sorted(records[0].frames) == sorted(r.frame for r in kept(manifest(out)))
    assert written[0].dest is not None and written[0].dest.name == "batch-0001"


# ---- metrics outputs -----------------------------------------------------------------------------
def test_the_textfile_must_be_a_regular_file_outside_the_output_folder(out: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "metrics.prom"
    os.mkfifo(fifo)
    # A child process with a deadline: before the change, a FIFO hung the run before it started.
    proc = cli("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(tmp_path / "o"), "-q",
               "--metrics-textfile", str(fifo), timeout=120)
    assert proc.returncode == 2 and "FIFO" in one_line(proc)
    manifest_file = out / "dataset" / "manifest.jsonl"
    before = manifest_file.read_bytes()
    proc = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(out), "-q",
                    "--metrics-textfile", str(manifest_file))
    assert proc.returncode == 2 and "inside the output folder" in one_line(proc)
    assert manifest_file.read_bytes() == before


@contextmanager
def gateway(behaviour: str) -> Iterator[tuple[str, list[bytes]]]:
    """A Pushgateway on 127.0.0.1 that misbehaves: ``garbage`` (no HTTP at all), ``headers`` (a
    status line, then headers without end), ``trickle`` (a byte every 5 s), or ``auth`` (a real
    200 for the right basic-auth header, 401 otherwise). Yields its URL and the requests' heads."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    heads: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                    data += conn.recv(65536)
            except OSError:
                return
            heads.append(data.split(b"\r\n\r\n")[0])
            try:
                if behaviour == "garbage":
                    conn.sendall(b"\x00\xffSSH-2.0-not-http\r\n\r\n" * 4)
                elif behaviour == "headers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    while not stop.is_set():
                        conn.sendall(b"X-Filler: " + b"a" * 100 + b"\r\n")
                elif behaviour == "trickle":
                    conn.sendall(b"H")
                    while not stop.wait(5):
                        conn.sendall(b"T")
                else:
                    ok = b"authorization: basic dxnlcjpwqhnzoncv" in heads[-1].lower().replace(b"=", b"")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if ok else
                                 b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", heads
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize("behaviour", ["garbage", "headers", "trickle"])
def test_a_pushgateway_that_misbehaves_is_one_warning_and_the_run_ends(behaviour: str, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="video_miner.observe.publish")
    with gateway(behaviour) as (url, heads):
        report = run([str(VIDEOS / "again.mkv")], tmp_path / "o", **{"metrics.pushgateway": url,
                                                                     "metrics.push_timeout_s": 2})
    assert not report.failures and report.export.kept > 0  # the run ended with its summary
    assert heads, "the push reached the gateway"
    warnings = [r.getMessage() for r in caplog.records if "could not push metrics" in r.getMessage()]
    assert len(warnings) == 1, warnings
    if behaviour == "trickle":
        assert "push_timeout_s" in warnings[0]


def test_a_pushgateway_with_credentials_in_its_url_authenticates_and_stays_masked(tmp_path: Path) -> None:
    with gateway("auth") as (url, heads):
        secret_url = url.replace("http://", "http://user:p@ss:w0rd@").replace("p@ss:w0rd", "p%40ss%3Aw0rd")
        proc = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(tmp_path / "o"), "-q",
                        "--pushgateway", secret_url)
    assert proc.returncode == 0, proc.stdout
    assert heads and all(b"p%40ss" not in h for h in heads)  # credentials go in the header, not the path
    assert "p%40ss" not in proc.stdout and "w0rd" not in proc.stdout
    assert not any("w0rd" in p.read_text(errors="replace") for p in (tmp_path / "o").rglob("*.json"))


# ---- config values have bounds ------------------------------------------------------------------
@pytest.mark.fast
def test_a_keep_rule_nested_deep_is_refused_in_words() -> None:
    for text in ("(" * 200 + "car" + ")" * 200, "not " * 100 + "car"):
        with pytest.raises(KeepError, match="nested more than"):
            parse_keep(text, ["car"])
    with pytest.raises(ConfigError, match="nested more than"):
        load_config(None, {"models": [{"name": "coco", "classes": ["car"]}], "keep": "(" * 60 + "car" + ")" * 60})


@pytest.mark.parametrize("device", ["bogus", "cuda:7", "mps"])
def test_a_device_this_machine_lacks_is_refused_before_the_run_naming_those_it_has(device: str, tmp_path: Path
                                                                                     ) -> None:
    from video_miner.detect.detector import devices_here

    if device in devices_here():
        pytest.skip(f"this machine has {device}")
    proc = cli_here("run", str(VIDEOS / "again.mkv"), "--model", str(MODEL), "-o", str(tmp_path / "o"), "-q",
                    "--device", device)
    assert proc.returncode == 2
    line = one_line(proc)
    assert device in line and "devices here: " in line and "cpu" in line
    assert not (tmp_path / "o" / "registry.sqlite").exists(), "refused before the run started"
    doctor = cli_here("doctor", "--model", str(MODEL), "-o", str(tmp_path / "o"), "-c",
                      str(_config(tmp_path, {"filter": {"device": device}})))
    assert doctor.returncode == 1 and "fail device" in doctor.stdout


def _config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / f"c{abs(hash(json.dumps(data)))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_batch_and_queue_sizes_are_bounded_by_what_the_machine_has(tmp_path: Path) -> None:
    for key, value in (("filter.batch_size", 10**9), ("filter.batch_size", 10**5), ("pipeline.queue_size", 10**9),
                       ("live.queue_size", 10**7), ("filter.imgsz", 10**6)):
        with pytest.raises(ConfigError, match=key.split(".")[-1]):
            load_config(None, {key: value})
    from video_miner.detect.detector import Detector, DetectorSpec, batch_limit

    limit = batch_limit(640, "cpu")
    detector = Detector(DetectorSpec(str(MODEL), ("person",), 0.4, batch_size=4096))
    assert detector.batch_size == min(4096, limit) and (limit >= 4096 or detector.clamped == (4096, limit))
    doctor = cli_here("doctor", "--model", str(MODEL), "-o", str(tmp_path / "o"), "-c",
                      str(_config(tmp_path, {"filter": {"batch_size": 4096}})))
    assert limit >= 4096 or f"batches of {limit}" in doctor.stdout


# ---- text other programs interpret ----------------------------------------------------------------
def test_failures_tsv_never_holds_a_formula_and_names_show_their_invisible_characters(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://x/?a="&A1,"go")'
    folder = tmp_path / "in"
    folder.mkdir()
    bidi = folder / "invoice\u202egpj.mp4"
    bidi.write_bytes(b"not a video")
    proc = cli_here("run", formula, str(bidi), "--model", str(MODEL), "-o", str(tmp_path / "o"), "-q")
    assert proc.returncode == 1
    assert "\u202e" not in proc.stdout and "invoice\\u202egpj" in proc.stdout, proc.stdout
    cells = [line.split("\t") for line in (tmp_path / "o" / "failures.tsv").read_text().splitlines()[1:]]
    assert cells and all(not c.startswith(("=", "+", "-", "@")) for row in cells for c in row), cells
    assert any(c == "'" + formula for row in cells for c in row), cells
    status = cli_here("status", "--failed", "-o", str(tmp_path / "o"))
    assert all(not c.startswith(("=", "+", "-", "@")) for line in status.stdout.splitlines() for c in line.split("\t"))
    assert "\u202e" not in (tmp_path / "o" / "failures.tsv").read_text() + status.stdout


def model_with_names(path: Path, names: dict[str, str]) -> Path:
    """The shared model with some class names changed in its metadata (as an exporter might write them)."""
    import onnx

    model = onnx.load(str(MODEL))
    for prop in model.metadata_props:
        if prop.key == "names":
            for old, new in names.items():
                prop.value = prop.value.replace(repr(old), repr(new))
    onnx.save(model, str(path))
    return path


def test_control_characters_in_class_names_and_dest_names_keep_every_export_well_formed(tmp_path: Path) -> None:
    weird = "per\x0bson"
    model = model_with_names(tmp_path / "weird.onnx", {"person": weird})
    out = tmp_path / "out"
    report = run([str(VIDEOS / "again.mkv")], out, **{"filter.model": str(model), "filter.classes": [weird]})
    assert report.export.kept > 0
    dests = [tmp_path / "tab\x0bname", Path(os.fsdecode(bytes(tmp_path) + b"/undecodable-\xff"))]
    for dest in dests:
        for fmt in handover.FORMATS:
            proc = cli_here("export", "-o", str(out), "--format", fmt, "--dest", str(dest / fmt))
            assert proc.returncode == 0, proc.stdout
            assert "surrogates" not in proc.stdout
        ET.parse(dest / "cvat" / "annotations.xml")
        config = ET.parse(dest / "label-studio" / "label_config.xml").getroot()
        shown = [label.get("value") for label in config.iter("Label")]
        assert shown == ["per\\x0bson"]
        tasks = json.loads((dest / "label-studio" / "tasks.json").read_text())
        labels = {lab for t in tasks for r in t["predictions"][0]["result"] for lab in r["value"]["rectanglelabels"]}
        assert labels == set(shown), "the boxes name the classes as the label config does"
        assert _card_names(dest / "hf" / "README.md") == {"0": "per\\x0bson"}


def _card_names(card: Path) -> dict[str, str]:
    front = card.read_text().split("---\n")[1]
    data = yaml.safe_load(front)
    names: dict[str, str] = data["dataset_info"]["features"][0]["struct"][0]["sequence"]["class_label"]["names"]
    return names


def test_the_hf_card_loads_back_with_the_class_names(out: Path) -> None:
    assert cli_here("export", "-o", str(out), "--format", "hf").returncode == 0
    assert _card_names(out / "exports" / "hf" / "all" / "README.md") == {"0": "person", "1": "bottle"}


def test_outputs_take_the_users_umask_like_the_images(out: Path) -> None:
    mode = file_mode()
    for fmt in handover.FORMATS:
        assert cli_here("export", "-o", str(out), "--format", fmt).returncode == 0
    assert cli_here("report", "-o", str(out)).returncode == 0
    written = [out / "gallery.html", out / "metrics.json", out / "dataset" / "manifest.jsonl",
               *(p for p in (out / "exports").rglob("*") if p.is_file() and p.suffix in (".json", ".xml", ".md"))]
    assert len(written) > 8
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))


@pytest.mark.fast
def test_the_module_refuses_fifos_and_writes_nothing_through_links(tmp_path: Path) -> None:
    from video_miner.store import files

    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "fifo")
    for act in (lambda: files.write_text(root / "fifo", "x", root), lambda: files.read_bytes(root / "fifo", 10),
                lambda: files.append_line(root / "fifo", "x", root)):
        with pytest.raises(UnsafePath, match="FIFO"):
            act()
    (tmp_path / "elsewhere").mkdir()
    (root / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="symbolic link"):
        files.write_text(root / "sub" / "x.txt", "x", root)
    assert not any((tmp_path / "elsewhere").iterdir())
    (root / "big").write_bytes(b"x" * 100)
    with pytest.raises(UnsafePath, match="more than"):
        files.read_bytes(root / "big", 10)
    assert files.contained("images/train/a.jpg", root) == root / "images" / "train" / "a.jpg"
    for bad in ("/etc/passwd", "images/../../x", "", "a//b", "a\x00b"):
        assert files.contained(bad, root) is None, bad


@pytest.mark.fast
def test_a_push_takes_at_most_its_deadline_of_a_trickling_server() -> None:
    """The push handler's deadline is for the whole exchange, not per read."""
    from video_miner.observe.publish import _exchange

    with gateway("trickle") as (url, _), pytest.raises(TimeoutError, match="push_timeout_s=1"):
        _exchange(url + "/metrics/job/x", "POST", {}, b"", 1.0)
