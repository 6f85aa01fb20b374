"""Live sources against real streams on 127.0.0.1: an FFmpeg process serving a shared video in real
time as MPEG-TS over TCP, an RTSP camera (tests/rtsp_server.py), a live HLS playlist whose segments
appear over time, a folder that keeps receiving files. Retried connects, reconnects, drops under a
slow detector, Ctrl-C and restart."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from video_miner.config import load_config
from video_miner.errors import ConfigError
from video_miner.live.stats import LiveSnapshot
from video_miner.run.compose import mine
from video_miner.run.request import MiningReport, RunRequest, StopSignal

from .conftest import BOTTLE, MODEL, ROOT, VIDEOS
from .helpers import by_frame, cli_args, done_videos, free_port, kept, make_config, manifest, metrics, videos, wait_for
from .rtsp_server import rtsp_camera

pytestmark = pytest.mark.timeout(300)
LIVE = {"live.reconnect_timeout_s": 3, "live.read_timeout_s": 3, "live.backoff_max_s": 0.5,
        "filter.classes": ["bottle", "person"]}
#: The bottle video's rate: a stream of it sends this many frames a second.
FPS = 30


@contextmanager
def tcp_stream(ffmpeg: str, port: int, seconds: float, start: float = 0.0, loop: bool = False,
               src: Path = BOTTLE) -> Iterator[subprocess.Popen[bytes]]:
    """``src`` served in real time as MPEG-TS on tcp://127.0.0.1:port (FFmpeg listens, and sends
    nothing before a client connects; short GOPs, as cameras send)."""
    args = [ffmpeg, "-v", "error", "-re", *(["-stream_loop", "-1"] if loop else []), "-ss", str(start), "-i", str(src),
            "-t", str(seconds), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10",
            "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class Mining:
    """A run in a thread of this process: the test stops it (as Ctrl-C would) when it has seen
    what it waits for, instead of guessing a duration."""

    def __init__(self, inputs: list[str], out: Path, watch: list[Path] | None = None, duration: float | None = None,
                 engine: str = "async", **overrides: Any) -> None:
        self.out, self.stop = out, StopSignal()
        self.error: BaseException | None = None
        self.report: MiningReport | None = None
        request = RunRequest(inputs, make_config(out, **{**LIVE, **overrides}), watch=watch or [], duration_s=duration,
                             stop=self.stop, engine=engine)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self._go, args=(request,))
        self.thread.start()

    def _go(self, request: RunRequest) -> None:
        try:
            self.report = mine(request)
        except BaseException as exc:  # the test re-raises it
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, timeout: float = 200) -> MiningReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def stream_stopped(caplog: pytest.LogCaptureFixture, url: str, times: int = 1) -> Callable[[], bool]:
    """Whether the reader of ``url`` has read a stream to its end ``times`` times (it says so, then
    waits live.reconnect_timeout_s for it to come back: the test stops the run instead)."""
    return lambda: sum(f"{url}: the stream stopped" in r.getMessage() for r in caplog.records) >= times


def slowed(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, seconds_per_image: float) -> None:
    """A test-only wrapper: ``cls.method`` (a model's batch call) takes this long per image first."""
    real = getattr(cls, method)

    def slow(self: Any, images: list[Any]) -> Any:
        time.sleep(seconds_per_image * len(images))
        return real(self, images)

    monkeypatch.setattr(cls, method, slow)


def live_metrics(out: Path, source: str) -> LiveSnapshot:
    live = metrics(out).live
    assert live is not None, "no live sources in metrics.json"
    return LiveSnapshot(source=source, **live[source].model_dump())


def decided_frames(out: Path) -> int:
    """Live frames committed so far (read beside the run)."""
    try:
        with sqlite3.connect(f"file:{out / 'registry.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0])
    except sqlite3.Error:
        return 0


def latency_is_measured(stats: LiveSnapshot) -> None:
    """Every decided frame's capture-to-decision time is in the figures (how long it is, is the
    benchmark's business: scripts/bench_live.py)."""
    assert 0 < stats.latency_p50_s <= stats.latency_p95_s <= stats.latency_max_s < float("inf"), stats


def test_a_stream_that_is_not_up_yet_is_retried_then_mined_beside_a_file(ffmpeg: str, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="video_miner.live.reader")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    run = Mining([url, str(VIDEOS / "again.mkv")], tmp_path / "out")
    wait_for(lambda: "not up" in caplog.text, "the reader's first failed attempt", alive=run.alive)
    seconds = 3
    with tcp_stream(ffmpeg, port, seconds=seconds):
        wait_for(stream_stopped(caplog, url), "the stream read to its end", alive=run.alive)
        run.stop.set()
        report = run.finish()
    assert not report.failures, [f.line() for f in report.failures]
    stats = live_metrics(tmp_path / "out", url)
    # FFmpeg sends nothing before the reader connects: every frame of the stream is received.
    assert stats.state == "ended" and stats.frames_captured == seconds * FPS, stats
    assert stats.frames_sampled == seconds, stats  # extract.fps 1, in the stream's time
    assert stats.frames_decided >= 1 and stats.frames_dropped == 0, stats
    assert stats.frames_decided + stats.frames_filtered == stats.frames_sampled, stats
    latency_is_measured(stats)
    rows = manifest(tmp_path / "out")
    live_rows = [r for r in rows if r.source == url]
    assert live_rows and {r.video_id for r in rows} > {r.video_id for r in live_rows}, "the file was mined too"
    assert kept(live_rows)
    assert all(r.media.display_size == [640, 360] for r in live_rows)
    assert not list((tmp_path / "out" / "work" / "live").rglob("*.jpg")), "undecided frames are not left behind"


def test_an_ip_camera_over_rtsp_is_mined(ffmpeg: str, tmp_path: Path) -> None:
    """A camera that sends RTP inside its RTSP connection only (a client asking for UDP is refused
    and comes back over TCP, as behind NAT); stopped as Ctrl-C does, with the dataset exported."""
    out = tmp_path / "out"
    with rtsp_camera(ffmpeg, BOTTLE, tmp_path) as url:
        run = Mining([url], out)
        wait_for(lambda: decided_frames(out) >= 2, "two decided frames", alive=run.alive)
        run.stop.set()
        report = run.finish()
    assert not report.failures, [f.line() for f in report.failures]
    assert report.stopped
    stats = live_metrics(out, url)
    assert stats.frames_captured >= stats.frames_sampled >= stats.frames_decided >= 2, stats
    assert stats.frames_dropped == 0, stats
    rows = [r for r in manifest(out) if r.source == url]
    assert kept(rows)
    assert all(r.media.display_size == [640, 360] for r in rows)


def test_duration_ends_an_open_ended_run_with_its_export(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    started = time.monotonic()
    report = Mining([], tmp_path / "out", watch=[inbox], duration=1.5).finish()
    assert time.monotonic() - started >= 1.5, "nothing but the duration ends a watch"
    assert report.stopped and not report.failures
    assert (tmp_path / "out" / "dataset" / "manifest.jsonl").exists()


def test_live_ffmpeg_options_reach_the_stream(ffmpeg: str, tmp_path: Path) -> None:
    """live.ffmpeg_options are FFmpeg's: UDP only, against a camera that sends over TCP only, never
    comes up, and says so in one line."""
    with rtsp_camera(ffmpeg, BOTTLE, tmp_path) as url:
        report = Mining([url], tmp_path / "out", **{"live.ffmpeg_options": {"rtsp_transport": "udp"},
                                                   "live.reconnect_timeout_s": 2}).finish()
    assert [f.input for f in report.failures] == [url]
    assert "never came up" in report.failures[0].line()


def test_a_stream_whose_clock_goes_back_is_sampled_on(ffmpeg: str, tmp_path: Path) -> None:
    """An encoder restarted behind one connection: the MPEG-TS clock starts over mid-stream (two
    recordings joined byte for byte, sent at their real-time rate). Sampling goes on through it."""
    parts = []
    for k, start in enumerate((0, 10)):
        part = tmp_path / f"part{k}.ts"
        subprocess.run([ffmpeg, "-v", "error", "-ss", str(start), "-i", str(BOTTLE), "-t", "3", "-an", "-c:v", "libx264",
                        "-preset", "ultrafast", "-g", "10", "-f", "mpegts", str(part)], check=True)
        parts.append(part.read_bytes())
    data = b"".join(parts)
    server = socket.create_server(("127.0.0.1", 0))
    url = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def send() -> None:
        conn, _ = server.accept()
        with conn:
            chunk = len(data) // 30 + 1
            for k in range(0, len(data), chunk):  # 6 s of video in 6 s
                conn.sendall(data[k:k + chunk])
                time.sleep(0.2)

    sender = threading.Thread(target=send)
    sender.start()
    out = tmp_path / "out"
    report = Mining([url], out, **{"live.reconnect_timeout_s": 0}).finish()
    sender.join()
    server.close()
    assert not report.failures
    stats = live_metrics(out, url)
    # 3 s, then the clock starts over for 3 s more: 6 samples at 1 fps (3 if sampling stopped at the reset).
    assert stats.frames_sampled >= 5, stats
    times = [r.timestamp for r in manifest(out) if r.source == url]
    assert len(times) == len(set(times))


def test_a_stream_killed_midway_and_restarted_is_reconnected(ffmpeg: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="video_miner.live.reader")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    run = Mining([url], out)
    with tcp_stream(ffmpeg, port, seconds=30) as first:
        wait_for(lambda: decided_frames(out) >= 2, "frames of the first connection", alive=run.alive)
        first.kill()  # the camera drops
    down = 1.5
    time.sleep(down)  # the camera stays down this long
    with tcp_stream(ffmpeg, port, seconds=3, start=20):
        wait_for(stream_stopped(caplog, url, times=2), "the second connection read to its end", alive=run.alive)
        run.stop.set()
        report = run.finish()
    assert not report.failures
    stats = live_metrics(out, url)
    assert stats.reconnects >= 1 and stats.gap_seconds >= down - 0.5, stats
    segments = [r for r in videos(out) if r.parent and r.kind == "live"]
    assert len(segments) >= 2 and all(r.state == "done" for r in segments)
    assert len({r.video_id for r in manifest(out)}) >= 2, "frames from both connections"


@pytest.mark.parametrize("policy", ["drop_oldest", "block"])
def test_a_slow_detector_drops_frames_counted_per_source_with_bounded_latency(
        ffmpeg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    from video_miner.detect.detector import Detector

    # drop_oldest: 5 frames a second against at most 2.5 detected; block: every frame waits its turn
    slowed(monkeypatch, Detector, "detect_each", 0.4 if policy == "drop_oldest" else 0.2)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    seconds = 3
    # The stream listens first: the reader connects at once, and 1 s after the end the run ends.
    with tcp_stream(ffmpeg, port, seconds=seconds):
        run = Mining([url], tmp_path / "out", **{
            "extract.fps": 5, "filter.static_max_diff": -1, "filter.max_blur": 1, "dedup.skip_detection": False,
            "live.queue_policy": policy, "live.queue_size": 2, "live.workers": 1, "filter.batch_size": 1,
            "live.reconnect_timeout_s": 1})
        report = run.finish()
    stats = live_metrics(tmp_path / "out", url)
    assert not report.failures
    sampled, dropped, decided = stats.frames_sampled, stats.frames_dropped, stats.frames_decided
    assert sampled == seconds * 5, stats  # every frame of the stream is read, whatever the detector does
    if policy == "drop_oldest":
        # 5 frames a second against at most 2.5 detected (0.4 s each, whatever the machine): at
        # least a third dropped, every one of them counted.
        assert dropped >= 0.3 * sampled, stats
        assert decided + dropped == sampled, stats
    else:
        assert dropped == 0 and decided == sampled, stats
    latency_is_measured(stats)
    assert not list((tmp_path / "out" / "work" / "live").rglob("*.jpg")), "dropped frames' files are deleted"
    stage = metrics(tmp_path / "out").stages["live_filter"]
    # What bounds the latency: a decided frame waited at most for the queue (2 frames) and the
    # frame in the detector.
    assert stage.queue_high_water <= 2 and stage.dropped == dropped


@pytest.mark.parametrize("wait_all", [False, True])
def test_a_slow_model_beside_a_fast_one_never_holds_a_live_stream_back(
        ffmpeg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait_all: bool) -> None:
    """A detector and an OCR made slow (1 s a frame, a test-only wrapper) on a 5 fps stream, joined
    with the realtime synchronizer: frames go on without the OCR's answer (partial) or are dropped
    waiting for it (expired), counted per source; the OCR takes only the frames it has room for."""
    from video_miner.detect.ocr import TextReader

    slowed(monkeypatch, TextReader, "read_each", 1.0)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    seconds = 5
    started = time.monotonic()
    with tcp_stream(ffmpeg, port, seconds=seconds):  # listening first: the reader connects at once
        run = Mining([url], out, **{
            "extract.fps": 5, "filter.static_max_diff": -1, "filter.max_blur": 1, "dedup.skip_detection": False,
            "models": [{"name": "coco", "classes": ["bottle", "person"]},
                       {"name": "signs", "kind": "ocr", "batch_size": 1}],
            "live.sync_tolerance_ms": 300, "live.wait_all": wait_all, "live.reconnect_timeout_s": 1})
        report = run.finish()
    took = time.monotonic() - started
    assert not report.failures
    stats = live_metrics(out, url)
    figures = metrics(out).models
    assert figures is not None
    models, join = figures.models, figures.joins["live"]
    sampled, dropped, decided = stats.frames_sampled, stats.frames_dropped, stats.frames_decided
    assert sampled == seconds * 5 and decided + dropped == sampled and decided >= 1, stats
    # At 1 s a frame the OCR read at most one frame a second of the run (and the one in flight).
    assert 1 <= models["signs"].calls <= took + 1, (models, took)
    # The detector is fast, but on a loaded machine it too may miss the join's tolerance: each
    # decided frame has its answer, or (realtime) was counted as decided without one.
    coco = models["coco"].calls
    if wait_all:
        assert coco >= decided, (models, stats)
    else:
        assert coco <= decided and decided - coco <= stats.frames_partial, (models, stats)
    assert models["signs"].busy > 0, models
    late = stats.frames_expired if wait_all else stats.frames_partial
    assert late > 0 and (stats.frames_partial if wait_all else stats.frames_expired) == 0, stats
    assert (join.expired if wait_all else join.partial) >= late and join.waiting == 0, join
    latency_is_measured(stats)
    if wait_all:
        kept_rows = kept(manifest(out))
        assert all({d.model for d in r.detections} >= {"coco"} for r in kept_rows)
        expired = [r for r in manifest(out) if r.reason and "gave no answer in time" in r.reason]
        assert expired and all(r.decision == "filtered" for r in expired)


def test_ctrl_c_exports_exit_0_and_a_restart_appends_without_duplicates(ffmpeg: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "live.yaml"
    config.write_text("live:\n  reconnect_timeout_s: 3\n  read_timeout_s: 3\n  backoff_max_s: 0.5\nfilter:\n"
                      "  classes: [bottle, person]\nextract:\n  fps: 3\n")

    def run_until_ctrl_c(port: int) -> subprocess.CompletedProcess[str]:
        args = cli_args("run", f"tcp://127.0.0.1:{port}", "--model", str(MODEL), "-c", str(config), "-o", str(out), "-q")
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        before = decided_frames(out)
        wait_for(lambda: decided_frames(out) >= before + 3, "three decided frames", alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(args, proc.returncode, stdout, "")

    port = free_port()
    with tcp_stream(ffmpeg, port, seconds=300, loop=True):
        first = run_until_ctrl_c(port)
    assert first.returncode == 0, first.stdout
    assert "Traceback" not in first.stdout
    before = manifest(out)
    kept_before = {r.frame for r in kept(before)}
    assert before and kept_before
    # The restart, in this process, stopped the same way once it has decided new frames.
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with tcp_stream(ffmpeg, port, seconds=300, loop=True):
        again = Mining([url], out, **{"filter.classes": ["bottle", "person"], "extract.fps": 3})
        count = decided_frames(out)
        wait_for(lambda: decided_frames(out) >= count + 3, "three new decided frames", alive=again.alive)
        again.stop.set()
        assert not again.finish().failures
    after = manifest(out)
    rows = by_frame(after)
    # Appended: every frame of the first run is still there, each kept one kept or represented.
    assert {r.frame for r in before} <= set(rows)
    for frame in kept_before:
        assert rows[frame].decision == "kept" or rows[rows[frame].duplicate_of or ""].decision == "kept"
    assert len({r.video_id for r in after}) > len({r.video_id for r in before})
    hashes = [r.phash for r in kept(after)]
    assert all((a ^ b).bit_count() > 6 for a, b in combinations(hashes, 2)), "no duplicates among the kept frames"
    assert len({r.frame for r in after}) == len(after)


class _LivePlaylist:
    """An HLS live playlist on 127.0.0.1 whose segments appear in real time, then ENDLIST."""

    def __init__(self, folder: Path, segments: list[str], seconds: float) -> None:
        self.folder, self.segments, self.seconds = folder, segments, seconds
        self.started = time.monotonic()
        #: How many segments each request of the playlist was shown.
        self.shown: list[int] = []

    def playlist(self) -> str:
        shown = min(len(self.segments), 2 + int((time.monotonic() - self.started) / self.seconds))
        self.shown.append(shown)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(self.seconds) + 1}",
                 "#EXT-X-MEDIA-SEQUENCE:0"]
        for name in self.segments[:shown]:
            lines += [f"#EXTINF:{self.seconds:.3f},", name]
        if shown == len(self.segments):
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


@contextmanager
def hls_server(ffmpeg: str, folder: Path) -> Iterator[tuple[str, _LivePlaylist]]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg, "-v", "error", "-i", str(BOTTLE), "-t", "8", "-an", "-c:v", "libx264", "-g", "30",
                    "-sc_threshold", "0", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0",
                    "-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "vod.m3u8")], check=True)
    live = _LivePlaylist(folder, sorted(p.name for p in folder.glob("seg*.ts")), 2.0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            if name == "live.m3u8":
                body, kind = live.playlist().encode(), "application/vnd.apple.mpegurl"
            elif (folder / name).is_file() and name.startswith("seg"):
                body, kind = (folder / name).read_bytes(), "video/mp2t"
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/live.m3u8", live
    finally:
        server.shutdown()
        server.server_close()


def test_a_live_hls_playlist_is_read_as_it_grows_and_ends_with_it(ffmpeg: str, tmp_path: Path) -> None:
    """yt-dlp finds the playlist live (no ENDLIST yet): it is read as a stream, not downloaded, and
    the run ends when the playlist does."""
    with hls_server(ffmpeg, tmp_path / "hls") as (url, live):
        report = Mining([url], tmp_path / "out").finish()
    assert not report.failures, [f.line() for f in report.failures]
    stats = live_metrics(tmp_path / "out", url)
    assert stats.state == "ended" and stats.frames_sampled >= 4, stats
    # Read at the stream's pace: the playlist was asked for again as it grew, up to its end.
    assert len(set(live.shown)) >= 2 and live.shown[-1] == len(live.segments), live.shown
    rows = videos(tmp_path / "out")
    assert [r.kind for r in rows if r.input == url and not r.parent] == ["live"]


def test_a_watched_folder_mines_files_once_they_are_complete(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "cam1").mkdir(parents=True)
    shutil.copy(VIDEOS / "book.mkv", inbox / "already-there.mkv")
    # What a Mac or a sync tool leaves beside footage is not footage.
    (inbox / "._already-there.mkv").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))
    (inbox / ".sync").mkdir()
    shutil.copy(VIDEOS / "book.mkv", inbox / ".sync" / "conflicted-copy.mkv")
    out = tmp_path / "out"
    run = Mining([], out, watch=[inbox], **{"watch.settle_s": 1.0})
    wait_for(lambda: done_videos(out) == 1, "the file already there mined", alive=run.alive)
    data = (VIDEOS / "again.mkv").read_bytes()
    part = inbox / "cam1" / "clip.mkv.part"
    with part.open("wb") as fh:  # written under a temporary name, slowly
        for k in range(0, len(data), len(data) // 5 + 1):
            fh.write(data[k:k + len(data) // 5 + 1])
            fh.flush()
            time.sleep(0.2)
    os.replace(part, inbox / "cam1" / "clip.mkv")
    # A folder of clips moved in whole: the OS reports the folder, not the files in it.
    batch = tmp_path / "batch"
    (batch / "day2").mkdir(parents=True)
    shutil.copy(VIDEOS / "bottle-detection.mp4", batch / "day2" / "moved.mp4")
    os.replace(batch, inbox / "batch")
    slow = inbox / "cam1" / "direct.mkv"  # written in place, with pauses shorter than settle_s
    with slow.open("wb") as fh:
        for k in range(0, len(data), len(data) // 4 + 1):
            fh.write(data[k:k + len(data) // 4 + 1])
            fh.flush()
            time.sleep(0.3)
    wait_for(lambda: done_videos(out) == 4, "every complete file mined", alive=run.alive)
    run.stop.set()
    report = run.finish()
    assert not report.failures, [f.line() for f in report.failures]
    rows = [r for r in videos(out) if r.kind == "local"]
    names = sorted(Path(r.input).name for r in rows)
    assert names == ["already-there.mkv", "clip.mkv", "direct.mkv", "moved.mp4"], names
    assert all(r.state == "done" for r in rows)
    # The complete file, not a prefix of it: as many frames as mining it directly gives.
    direct = next(r for r in rows if r.input.endswith("direct.mkv"))
    clip = next(r for r in rows if r.input.endswith("clip.mkv"))
    assert direct.n_extracted == clip.n_extracted > 0
    # A restart mines nothing again.
    again = Mining([], out, watch=[inbox], duration=2, **{"watch.settle_s": 1.0}).finish()
    assert again.counters.get("frames_extracted", 0) == 0 and again.videos_skipped == 0
    assert len([r for r in videos(out) if r.kind == "local"]) == 4


def test_a_source_that_never_comes_up_fails_alone_with_a_reason(tmp_path: Path) -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    report = Mining([dead, str(VIDEOS / "again.mkv")], tmp_path / "out", **{"live.reconnect_timeout_s": 2}).finish()
    failures = {f.input: f for f in report.failures}
    assert set(failures) == {dead}
    assert failures[dead].kind == "live_unavailable" and "never came up" in failures[dead].message
    assert "\n" not in failures[dead].message
    assert report.videos_done == 1


def test_live_sources_need_the_stage_pipeline(tmp_path: Path) -> None:
    """--sequential runs one video at a time, without queues: no live sources (on Ray they run:
    tests/test_ray.py)."""
    with pytest.raises(ConfigError, match="live sources and --watch need the stage pipeline"):
        mine(RunRequest(["rtsp://127.0.0.1:8554/cam"], load_config(None, {"output": str(tmp_path),
                                                                          "filter.model": str(MODEL)}),
                        engine="sequential"))


def test_a_folder_on_a_network_filesystem_is_polled(tmp_path: Path) -> None:
    """Other machines' writes to an NFS or SMB folder raise no inotify event here: such folders are
    listed every second instead, and files that land there are mined all the same."""
    from video_miner.inputs.watch import filesystem_type, needs_polling

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nnas:/cams /mnt/my\\040nas nfs4 rw 0 0\n"
                      "//srv/share /mnt/smb cifs rw 0 0\n/dev/sdb1 /mnt/my\\040nas/local ext4 rw 0 0\n")
    text = mounts.read_text()
    assert filesystem_type(Path("/mnt/my nas/cam1/a.mp4"), text) == "nfs4"
    assert filesystem_type(Path("/mnt/my nas/local/a.mp4"), text) == "ext4"  # the deepest mount holds it
    assert needs_polling([Path("/data"), Path("/mnt/smb/x")], mounts)
    assert not needs_polling([Path("/data"), Path("/mnt/my nas/local")], mounts)

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    out = tmp_path / "out"
    run = Mining([], out, watch=[inbox], **{"watch.settle_s": 1.0, "watch.force_polling": True})
    wait_for(lambda: out.joinpath("registry.sqlite").exists(), "the run started", alive=run.alive)
    shutil.copy(VIDEOS / "book.mkv", inbox / "from-another-machine.mkv")
    wait_for(lambda: done_videos(out) == 1, "the file mined", alive=run.alive)
    run.stop.set()
    report = run.finish()
    assert not report.failures
    assert [Path(r.input).name for r in videos(out) if r.state == "done"] == ["from-another-machine.mkv"]
