"""Downloading as it works today: yt-dlp with a JavaScript runtime and the EJS scripts, polite to
each host (a few connections, pauses, Retry-After), failures a user can act on, and only safe
yt-dlp options. All offline: the servers are on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from video_miner.config import load_config
from video_miner.download.ytdlp import runtime_report, ydl_options
from video_miner.errors import ConfigError

from .conftest import MODEL, ROOT, VIDEOS
from .helpers import cli_here, make_config, run
from .http_server import serve


def test_the_download_stages_yt_dlp_has_a_js_runtime_and_the_ejs_scripts(tmp_path: Path) -> None:
    from yt_dlp import YoutubeDL
    from yt_dlp.extractor.youtube.jsc._builtin import vendor

    config = make_config(tmp_path / "out")
    with YoutubeDL(ydl_options(config.download, tmp_path / "v")) as ydl:
        report = runtime_report(ydl)
    deno = report["runtimes"]["deno"]
    assert deno is not None and deno["supported"], report
    assert Path(deno["path"]).is_file() and deno["version"].split(".")[0].isdigit()
    # The solver scripts yt-dlp runs in it come from the yt-dlp-ejs package, the version it expects.
    assert report["ejs"] == vendor.VERSION


@pytest.mark.timeout(300)
def test_downloads_are_polite_to_each_host(tmp_path: Path) -> None:
    """Eight videos on two hosts (127.0.0.1 and localhost: one server), six download workers: never
    more than max_per_host connections to a host, both hosts served side by side."""
    files = {f"/v/{i}.mkv": VIDEOS / "again.mkv" for i in range(8)}
    with serve(files, body_seconds=0.6) as (base, state):
        port = base.rsplit(":", 1)[1]
        urls = [f"http://{'127.0.0.1' if i % 2 else 'localhost'}:{port}/v/{i}.mkv" for i in range(8)]
        report = run(urls, tmp_path / "out", **{"pipeline.download_workers": 6, "download.max_per_host": 2,
                                                 "download.sleep_s": 0.0, "extract.fps": 0.5})
    assert not report.failures, [f.line() for f in report.failures]
    assert report.videos_done == 8
    assert state.peak["127.0.0.1"] == 2 and state.peak["localhost"] == 2, state.peak


@pytest.mark.timeout(300)
def test_a_pause_between_downloads_from_one_host(tmp_path: Path) -> None:
    files = {f"/v/{i}.mkv": VIDEOS / "again.mkv" for i in range(3)}
    with serve(files) as (base, state):
        report = run([f"{base}/v/{i}.mkv" for i in range(3)], tmp_path / "out",
                     **{"pipeline.download_workers": 3, "download.max_per_host": 1, "download.sleep_s": 1.0})
    assert not report.failures
    firsts = sorted(state.log[f"/v/{i}.mkv"][0][0] for i in range(3))
    assert all(b - a >= 1.0 for a, b in pairwise(firsts)), firsts
    assert state.peak["127.0.0.1"] == 1


@pytest.mark.timeout(300)
def test_429_pauses_the_host_for_retry_after_then_succeeds_or_fails_with_a_hint(tmp_path: Path) -> None:
    files = {"/v/once.mkv": VIDEOS / "again.mkv", "/v/always.mkv": VIDEOS / "book.mkv"}
    with serve(files, limited={"/v/once.mkv": 1, "/v/always.mkv": 99}, retry_after=1.5) as (base, state):
        report = run([f"{base}/v/once.mkv", f"{base}/v/always.mkv"], tmp_path / "out",
                     **{"download.retries": 2, "download.backoff_s": 0.05, "download.sleep_s": 0.0,
                        "download.max_per_host": 1})
    failures = {f.input.rsplit("/", 1)[1]: f for f in report.failures}
    assert set(failures) == {"always.mkv"}, [f.line() for f in report.failures]
    assert failures["always.mkv"].kind == "rate_limited"
    assert "download.max_per_host" in failures["always.mkv"].message
    # After a 429, nothing went to the host before its Retry-After had passed (one at a time, so
    # no request was already on its way).
    once = state.log["/v/once.mkv"]
    assert once[0][1] == 429 and once[-1][1] == 200
    everything = sorted(t for log in state.log.values() for t, _ in log)
    after = [t for t in everything if t > once[0][0]]
    assert after and after[0] - once[0][0] >= 1.4, (once, everything)
    assert state.hits["/v/always.mkv"] == 3  # the first try and two retries


def test_unknown_or_unsafe_ytdlp_options_are_refused(tmp_path: Path) -> None:
    for options, words in (({"exec": "rm -rf ~"}, "refused: it runs a shell command"),
                           ({"postprocessors": [{"key": "Exec"}]}, "refused"),
                           ({"paths": {"home": "/"}}, "writes outside"),
                           ({"fromat": "best"}, "unknown or unsupported yt-dlp option 'fromat'"),
                           ({"format": "best"}, "set by video-miner: use download.format")):
        with pytest.raises(ConfigError) as err:
            load_config(None, {"output": str(tmp_path), "download.ytdlp_options": options})
        assert words in str(err.value) and "download.ytdlp_options" in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="unsupported browser 'netscape'"):
        load_config(None, {"download.cookies_from_browser": "netscape"})
    ok = load_config(None, {"download.cookies_from_browser": "firefox:work", "output": str(tmp_path)})
    assert ydl_options(ok.download, tmp_path)["cookiesfrombrowser"] == ("firefox", "work", None, None)


@pytest.mark.timeout(300)
def test_allowed_ytdlp_options_reach_yt_dlp(tmp_path: Path) -> None:
    with serve({"/v/a.mkv": VIDEOS / "again.mkv"}) as (base, state):
        report = run([f"{base}/v/a.mkv"], tmp_path / "out",
                     **{"download.ytdlp_options": {"http_headers": {"X-Miner-Test": "yes"}}})
    assert not report.failures
    assert any(h.get("X-Miner-Test") == "yes" for h in state.headers)


def test_a_gate_pause_is_bounded_and_resets(tmp_path: Path) -> None:
    from video_miner.download.host_gate import MAX_PAUSE_S, HostGate

    gate = HostGate(max_per_host=1, sleep_s=0.0, backoff_s=2.0)
    assert gate.rate_limited("http://a.example/x", None) == 2.0
    assert gate.rate_limited("http://a.example/y", None) == 4.0  # a second answer in a row doubles it
    assert gate.rate_limited("http://a.example/y", 10**6) == MAX_PAUSE_S
    gate.succeeded("http://a.example/z")
    assert gate.rate_limited("http://a.example/x", None) == 2.0
    assert gate.rate_limited("http://a.example/x", 3600) == MAX_PAUSE_S  # a.example is paused for minutes
    entered = threading.Event()

    def other_host() -> None:
        with gate.slot("http://b.example/v"):  # another host is not held up
            entered.set()

    thread = threading.Thread(target=other_host, daemon=True)
    thread.start()
    assert entered.wait(120), "b.example waited for a.example's pause"
    thread.join()


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "video_miner", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_doctor_says_a_run_can_go_and_how_to_fix_what_cannot(tmp_path: Path) -> None:
    good = _doctor("--model", str(MODEL), "-o", str(tmp_path / "out"))
    assert good.returncode == 0, good.stdout + good.stderr
    for words in ("JS runtime: deno", "EJS scripts: yt-dlp-ejs", "model:", "knows person", "device:", "output:",
                  "ready to run"):
        assert words in good.stdout, (words, good.stdout)
    assert "Loading" not in good.stdout, "one screen: no library chatter"
    # The rest in this process: only the first needed a process of its own (the chatter check).
    bad = cli_here("doctor", "--model", str(MODEL), "--classes", "persn", "-o", str(tmp_path / "out"))
    assert bad.returncode == 1
    assert "fail model: filter.classes: persn" in bad.stdout and "not ready" in bad.stdout
    gpu = cli_here("doctor", "--model", str(MODEL), "-o", str(tmp_path / "out"),
                   "-c", str(_config(tmp_path, "filter:\n  device: cuda:0\n")))
    import torch

    if not torch.cuda.is_available():
        assert gpu.returncode == 1 and "fail device: filter.device is cuda:0 but CUDA is not available" in gpu.stdout
    floor = cli_here("doctor", "--model", str(MODEL), "-o", str(tmp_path / "out"),
                    "-c", str(_config(tmp_path, "download:\n  min_free_gb: 1000000\n")))
    assert floor.returncode == 1 and "below download.min_free_gb" in floor.stdout
    ray = cli_here("doctor", "--model", str(MODEL), "-o", str(tmp_path / "out"), "--engine", "ray",
                  "-c", str(_config(tmp_path, "ray:\n  shared_storage: nosuch://bucket/x\n")))
    assert "ok ray: ray " in ray.stdout and "fail shared storage" in ray.stdout and ray.returncode == 1


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"c{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


def test_doctor_warns_about_an_old_yt_dlp() -> None:
    import datetime as dt

    from video_miner.observe.doctor import OK, WARN, ytdlp_age

    today = dt.date(2026, 11, 24)
    assert ytdlp_age("2026.11.01", today).status == OK
    old = ytdlp_age("2026.08.19", today)
    assert old.status == WARN and "97 days old" in old.detail and "pip install -U" in old.fix
