"""Every kind of garbage input fails with its own class, while the good inputs of the same run
still complete."""

from __future__ import annotations

import socket
from pathlib import Path

import av
import numpy as np
import pytest

from video_miner.errors import DiskFull
from video_miner.store.registry import Registry

from .conftest import PERSON, VIDEOS
from .helpers import run
from .http_server import serve


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def matrix(bottle_head: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[dict[str, dict], dict[str, str], object]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 100)
    data = PERSON.read_bytes()  # its index is at the front (faststart): half of it still plays
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    _audio_only(d / "audio.m4a")
    import ultralytics

    (d / "still.jpg").write_bytes((Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes())
    (d / "novideos").mkdir()
    (d / "novideos" / "notes.txt").write_text("nothing here")
    port = _refused_port()
    files = {"/ok/again.mkv": VIDEOS / "again.mkv", "/flaky/book.mkv": VIDEOS / "book.mkv",
             "/x/..%2F..%2Fescape%0A%1B.mkv": VIDEOS / "again.mkv"}
    with serve(files, flaky={"/flaky/book.mkv": 1}) as (base, state):
        cases = {
            "missing": str(d / "does-not-exist.mp4"),
            "empty": str(d / "empty.mp4"),
            "text": str(d / "text.mp4"),
            "truncated": str(d / "truncated.mp4"),
            "audio": str(d / "audio.m4a"),
            "still": str(d / "still.jpg"),
            "novideos": str(d / "novideos"),
            "http404": f"{base}/nope/video.mp4",
            "http500_then_ok": f"{base}/flaky/book.mkv",
            "hang": f"{base}/hang/video.mp4",
            "refused": f"http://127.0.0.1:{port}/video.mp4",
            "malformed": "http:///no-host.mp4",
            "traversal": f"{base}/x/..%2F..%2Fescape%0A%1B.mkv",
            "good_local": str(bottle_head),
            "good_http": f"{base}/ok/again.mkv",
        }
        listing = d / "urls.txt"
        listing.write_text("\n".join([*cases.values(), cases["good_local"], cases["good_http"]]) + "\n")
        report = run([str(listing)], d / "out", **{"download.retries": 1, "download.socket_timeout": 2,
                                                   "extract.fps": 0.5})
        hits = dict(state.hits)
    reg = Registry(d / "out" / "registry.sqlite")
    rows = {r.input: r for r in reg.videos()}
    reg.close()
    return {name: rows[value] for name, value in cases.items()}, hits, report


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("missing", "not_found"),
        ("empty", "corrupt_media"),
        ("text", "corrupt_media"),
        ("audio", "no_video_stream"),
        ("still", "no_video_stream"),
        ("novideos", "empty_input"),
        ("http404", "not_found"),
        ("hang", "timeout"),
        ("refused", "connection"),
        ("malformed", "unsupported_url"),
    ],
)
def test_bad_input_fails_with_its_class(matrix, case: str, kind: str) -> None:
    rows, _, report = matrix
    row = rows[case]
    assert row.state == "failed", row
    assert row.error_class == kind, row
    assert row.error_message
    assert any(f.video_id == row.video_id and kind in f.line() for f in report.failures)


def test_truncated_file_keeps_the_frames_that_decode_with_a_warning(matrix) -> None:
    rows, _, report = matrix
    row = rows["truncated"]
    assert row.state == "done"
    assert 5 <= row.n_extracted < 60, row.n_extracted  # the whole video gives 70 at 0.5 fps
    assert "decoding stopped" in row.warning
    assert any(src == row.input for src, _ in report.warnings)


def test_good_inputs_complete_beside_bad_ones(matrix) -> None:
    rows, hits, report = matrix
    for case in ("good_local", "good_http", "http500_then_ok", "traversal"):
        assert rows[case].state == "done", rows[case]
    assert hits["/flaky/book.mkv"] >= 2, "the 500 was retried"
    assert report.videos_done == 5  # the four above and the truncated file


def test_transient_failures_were_retried_permanent_ones_not(matrix) -> None:
    rows, hits, _ = matrix
    assert rows["hang"].attempts == 2
    assert rows["refused"].attempts == 2
    assert rows["http404"].attempts == 1
    assert hits["/nope/video.mp4"] >= 1


def test_duplicate_lines_run_once(matrix) -> None:
    rows, hits, _ = matrix
    assert hits["/ok/again.mkv"] >= 1
    # The listing repeats the two good inputs; the registry holds each once and each was done once.
    assert rows["good_local"].attempts == 1 and rows["good_http"].attempts == 1


def test_hostile_names_stay_inside_the_output(matrix) -> None:
    rows, _, report = matrix
    vid = rows["traversal"].video_id
    assert vid.startswith("escape") and "/" not in vid and ".." not in vid
    assert all(c.isalnum() or c in "._-" for c in vid)
    path = Path(rows["traversal"].path).resolve()
    assert path.is_relative_to((report.output / "work" / "videos" / vid).resolve())
    assert all(c.isalnum() or c in "._-" for c in path.name)
    images = list((report.output / "dataset" / "images").rglob(f"{vid}_*.jpg"))
    assert all(p.resolve().is_relative_to(report.output.resolve()) for p in images)


def test_disk_floor_stops_new_downloads_with_a_clear_message(tmp_path: Path) -> None:
    """Below download.min_free_gb no download starts; the videos stay unfinished, not failed, so a
    plain re-run with room mines them all."""
    files = {f"/v/{i}.mkv": VIDEOS / "again.mkv" for i in range(6)}
    with serve(files) as (base, state):
        urls = [f"{base}/v/{i}.mkv" for i in range(6)]
        with pytest.raises(DiskFull) as err:
            run(urls, tmp_path / "out", **{"download.min_free_gb": 1e9})
        hits = sum(state.hits.values())
        assert hits == 0, "nothing was downloaded below the floor"
        message = str(err.value)
        assert "\n" not in message and "download.min_free_gb" in message and "free there" in message
        reg = Registry(tmp_path / "out" / "registry.sqlite", readonly=True)
        states = {r.state for r in reg.videos()}
        reg.close()
        assert states == {"queued"}, states
        again = run(urls, tmp_path / "out")
    assert not again.failures and again.videos_done == 6


def test_a_folder_lists_its_videos_not_the_system_files_beside_them(tmp_path: Path) -> None:
    from video_miner.inputs.listing import expand_sources

    (tmp_path / "Phone" / ".thumbnails").mkdir(parents=True)
    (tmp_path / ".Trash").mkdir()
    for name in ("a.mp4", "Phone/IMG_0001.MOV", "Phone/.thumbnails/t.mp4", ".Trash/old.mp4", "._a.mp4",
                 "~$draft.mp4", "notes.txt", "a.mp4.part"):
        (tmp_path / name).write_bytes(b"x")
    sources = expand_sources([str(tmp_path)])
    assert [Path(s.normalized).relative_to(tmp_path).as_posix() for s in sources] == ["Phone/IMG_0001.MOV", "a.mp4"]


def test_a_list_saved_on_windows_reads_like_any_other(tmp_path: Path) -> None:
    from video_miner.inputs.listing import read_input_lines

    listing = tmp_path / "urls.txt"
    listing.write_bytes("\ufeffhttps://example.com/a.mp4\r\n# a comment\r\n\r\n  /data/b.mkv  \r\n".encode())
    assert read_input_lines([str(listing)]) == ["https://example.com/a.mp4", "/data/b.mkv"]
