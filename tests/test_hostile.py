"""Hostile and degenerate inputs, each made here: memory bombs, degenerate pictures, links out of
the output folder, paths in edited files, secrets in URLs, markup and control characters in
names, floods of bad inputs, options yt-dlp does not read, damaged media, pickled code."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scripts.media import gif_bomb
from video_miner.config import load_config
from video_miner.errors import ConfigError, ModelError, UnknownHost, environment_error
from video_miner.redact import printable

from .conftest import BOTTLE, MODEL, ROOT, VIDEOS
from .helpers import cli_here, dataset_files, run
from .http_server import serve

AGAIN = VIDEOS / "again.mkv"
BOOK = VIDEOS / "book.mkv"
#: The peak RSS of this process's own program: VmHWM (ru_maxrss keeps the parent's from before exec).
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024"
#: Runs the CLI in a child and prints its peak RSS: what one run of it took.
PEAK = ("import sys\nfrom video_miner.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
        f"    code = e.code\nprint('PEAK_MB', {HWM}, code)\n")


def cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "video_miner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def peak_mb(*args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PEAK_MB"))
    return int(line.split()[1]), proc


def rows(out: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{out / 'registry.sqlite'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {r["input"]: dict(r) for r in conn.execute("SELECT * FROM videos")}


def no_traceback(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "MarkupError" not in text, text
    return text


# ---- 1. memory bounded by design ---------------------------------------------------------------
@pytest.mark.timeout(600)
def test_gif_bombs_fail_alone_within_a_normal_runs_memory(tmp_path: Path) -> None:
    """Two 800-byte GIFs declaring 16000x16000 canvases (20 GB decoded, as a watched folder or a URL
    list could bring) fail with one line each; the good video beside them is mined; the run's peak
    memory stays within a fixed margin of a run of the good video alone."""
    bombs = [gif_bomb(tmp_path / f"bomb{k}.gif") for k in range(2)]
    assert all(b.stat().st_size < 1000 for b in bombs)
    normal, proc = peak_mb("run", str(AGAIN), "--model", str(MODEL), "-o", str(tmp_path / "normal"), "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bombed, proc = peak_mb("run", *map(str, bombs), str(AGAIN), "--model", str(MODEL), "-o", str(tmp_path / "bombed"),
                           "-q")
    text = no_traceback(proc)
    assert "PEAK_MB" in proc.stdout and proc.stdout.split()[-1] == "1", text  # some inputs failed
    assert bombed < normal + 250, (bombed, normal)
    registry = rows(tmp_path / "bombed")
    for bomb in bombs:
        assert registry[str(bomb)]["state"] == "failed" and registry[str(bomb)]["error_class"] == "too_large"
        assert "16000x16000" in registry[str(bomb)]["error_message"]
    assert registry[str(AGAIN)]["state"] == "done"
    assert dataset_files(tmp_path / "bombed" / "dataset") == dataset_files(tmp_path / "normal" / "dataset")


def _animated_gif(path: Path, frames: int) -> Path:
    from PIL import Image

    palette = [v for k in range(256) for v in (k, 255 - k, (k * 7) % 256)]
    pictures = []
    for k in range(frames):
        a = np.zeros((270, 480), np.uint8)
        a[:, (k * 9) % 480:(k * 9) % 480 + 40] = 200
        a[(k * 5) % 270:(k * 5) % 270 + 30, :] = 90
        picture = Image.fromarray(a, "P")
        picture.putpalette(palette)
        pictures.append(picture)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=40, loop=0)
    return path


def test_an_animation_is_decoded_a_frame_at_a_time(tmp_path: Path) -> None:
    """320 frames take no more memory than 32: the animation is never held whole (it was a list)."""
    script = ("import sys\nfrom pathlib import Path\nfrom video_miner.config import ExtractConfig\n"
              "from video_miner.media.decode import extract_frames\n"
              "r = extract_frames(Path(sys.argv[1]), Path(sys.argv[2]), 'g', ExtractConfig(fps=1), 1)\n"
              f"print(len(r.frames), {HWM})\n")
    peaks = {}
    for frames in (32, 320):
        gif = _animated_gif(tmp_path / f"a{frames}.gif", frames)
        proc = subprocess.run([sys.executable, "-c", script, str(gif), str(tmp_path / f"f{frames}")], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        count, peaks[frames] = map(int, proc.stdout.split())
        assert count == -(-frames * 40 // 1000)  # one a second of its 40 ms frames
    assert peaks[320] < peaks[32] + 60, peaks  # held whole, 320 decoded frames are 160 MB more


# ---- 2. a bad file fails alone -------------------------------------------------------------------
def _tiny_media(folder: Path) -> dict[str, Path]:
    from fractions import Fraction

    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGB", (1, 1), (k * 80, 0, 0)) for k in range(3)]
    frames[0].save(folder / "one-pixel.gif", save_all=True, append_images=frames[1:], duration=500, loop=0)
    made = {"one-pixel.gif": folder / "one-pixel.gif"}
    for name, size, value in (("two-pixels.mp4", 2, None), ("black.mp4", 160, 0)):
        with av.open(str(folder / name), "w") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(30):
                level = value if value is not None else i * 8
                frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), level, np.uint8), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 10)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        made[name] = folder / name
    return made


def test_degenerate_pictures_are_filtered_and_never_break_the_registry(tmp_path: Path) -> None:
    """A 1x1 GIF and a 2x2 clip (their sharpness was NaN: SQLite refused it and every run ended with
    a false 'damaged registry') and an all-black clip: filtered with a reason, the run goes on."""
    media = _tiny_media(tmp_path / "in")
    report = run([*map(str, media.values()), str(AGAIN)], tmp_path / "out")
    assert not report.failures, [f.line() for f in report.failures]
    assert report.videos_done == 4 and report.export.kept > 0
    manifest = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in manifest:
        by_video.setdefault(Path(row["source"]).name, []).append(row)
    for name in ("one-pixel.gif", "two-pixels.mp4"):
        assert by_video[name] and all(r["decision"] == "filtered" and r["reason"].startswith("too small")
                                      for r in by_video[name]), by_video[name]
    assert all(r["decision"] == "filtered" for r in by_video["black.mp4"])
    assert all(np.isfinite(r["blur"]) and np.isfinite(r["sharpness"]) for r in manifest)
    again = run([*map(str, media.values()), str(AGAIN)], tmp_path / "out")  # a re-run: nothing is damaged
    assert not again.failures and again.videos_skipped == 4


def test_only_a_real_integrity_failure_says_damaged_and_names_the_right_folder(tmp_path: Path) -> None:
    db = tmp_path / "out" / "registry.sqlite"
    for exc in (sqlite3.IntegrityError("NOT NULL constraint failed: frames.blur"),
                sqlite3.ProgrammingError("Error binding parameter 1"), sqlite3.InterfaceError("bad parameter")):
        assert environment_error(exc, db) is None, exc
    for exc in (sqlite3.DatabaseError("database disk image is malformed"),
                sqlite3.DatabaseError("file is not a database")):
        for where in (db, db.parent):  # the registry or its output folder: the hint names the output folder
            fault = environment_error(exc, where)
            assert fault is not None and fault.kind == "registry_damaged", exc
            assert f"video-miner repair -o {tmp_path / 'out'}`" in str(fault), str(fault)
    assert environment_error(sqlite3.OperationalError("database or disk is full"), db).kind == "disk_full"  # type: ignore[union-attr]


# ---- 3. nothing outside the output folder -------------------------------------------------------
@pytest.mark.parametrize("name", [".video-miner.lock", "registry.sqlite", "registry.sqlite-wal", "gallery.html",
                                  "timeline.png", "metrics.json", "work", "dataset.staging"])
def test_a_link_in_the_output_folder_is_refused_and_its_target_untouched(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    if name.startswith("registry"):  # another application's database
        with sqlite3.connect(victim) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES ('keep me')")
    elif name in ("work", "dataset.staging"):
        victim.mkdir()
    else:
        victim.write_text("precious")
    before = sorted(victim.rglob("*")) if victim.is_dir() else victim.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    proc = cli_here("run", str(AGAIN), "--model", str(MODEL), "-o", str(out), "-q")
    text = no_traceback(proc)
    assert proc.returncode == 2, text
    assert "symbolic link" in text and str(out / name) in text, text
    assert (sorted(victim.rglob("*")) if victim.is_dir() else victim.read_bytes()) == before


def test_report_replaces_a_linked_gallery_or_timeline_instead_of_writing_through_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([str(AGAIN)], out)
    for name in ("gallery.html", "timeline.png"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious")
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(victim)
    proc = cli_here("report", "-o", str(out))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("gallery.html", "timeline.png"):
        assert (tmp_path / f"victim-{name}").read_text() == "precious"
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 1000


def test_repair_and_export_never_take_a_path_out_of_the_folder(tmp_path: Path) -> None:
    """An edited manifest row names ../../secret as its image; repair refuses that row (one line),
    and the re-run's dataset holds no secret."""
    secret = tmp_path / "secret" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    out = tmp_path / "out"
    run([str(AGAIN)], out)
    manifest = out / "dataset" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    kept = next(r for r in lines if r["decision"] == "kept")
    kept["image"] = "../../../../" + str(secret.relative_to("/"))
    evil = {**kept, "video_id": "../../escape", "frame": "../../escape@1.000"}
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [*lines, evil]))
    for suffix in ("", "-wal", "-shm"):
        (out / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    proc = cli_here("repair", "-o", str(out))
    text = no_traceback(proc)
    assert proc.returncode == 0, text
    assert text.count("refused") == 2 and "leads out of the dataset" in text and "not a name video-miner gives" in text
    report = run([str(AGAIN)], out)
    assert not report.failures
    for path in (out / "dataset").rglob("*"):
        assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path


def test_a_registry_row_pointing_outside_is_neither_mined_nor_deleted(tmp_path: Path) -> None:
    """A URL input's row edited to 'downloaded' with a path outside the folder: the run downloads
    again, mines what it downloaded, and cleanup.videos deletes only that."""
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(BOOK.read_bytes())
    out = tmp_path / "out"
    with serve({"/v/again.mkv": AGAIN}) as (base, state):
        url = f"{base}/v/again.mkv"
        run([url], out, **{"cleanup.videos": True})
        with sqlite3.connect(out / "registry.sqlite") as conn:
            conn.execute("UPDATE videos SET state='downloaded', path=? WHERE input=?", (str(outside), url))
            conn.execute("DELETE FROM frames")
        hits = state.hits["/v/again.mkv"]
        report = run([url], out, **{"cleanup.videos": True})
        assert state.hits["/v/again.mkv"] > hits, "downloaded again rather than taking the edited path"
    assert not report.failures and report.videos_done == 1
    assert outside.read_bytes() == BOOK.read_bytes()
    manifest = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"] for r in manifest} == {url}


def test_a_watched_folder_does_not_follow_links_out_of_it(tmp_path: Path) -> None:
    import asyncio

    from video_miner.config import WatchConfig
    from video_miner.inputs.watch import FolderWatcher

    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "real.mp4").write_bytes(b"x")
    (watched / "passwd.mp4").symlink_to("/etc/passwd")
    (watched / "outside.mkv").symlink_to(AGAIN)
    (watched / "inside.mkv").symlink_to(watched / "real.mp4")

    async def first(config: WatchConfig) -> set[str]:
        watcher = FolderWatcher([watched], config, first_order=0, stride=1)
        found: set[str] = set()

        async def collect() -> None:
            async for src in watcher.sources():
                found.add(Path(src.raw).name)

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(1.0)
        watcher.stop()
        await task
        return found

    assert asyncio.run(first(WatchConfig(settle_s=0))) == {"real.mp4", "inside.mkv"}
    assert asyncio.run(first(WatchConfig(settle_s=0, follow_symlinks=True))) == \
        {"real.mp4", "inside.mkv", "passwd.mp4", "outside.mkv"}


# ---- 4. secrets redacted -------------------------------------------------------------------------
SECRET = "s3cr3tPa55"


def test_credentials_in_urls_appear_nowhere_a_person_reads(bottle_head: Path, tmp_path: Path) -> None:
    """A link with user info and a token, and a camera with a password that is down: the summary,
    status, failures.tsv, metrics.json, the manifest, the gallery, the lock file and the logs
    never show the secrets; the registry keeps them, to reconnect."""
    out = tmp_path / "out"
    with serve({"/v/clip.mp4": bottle_head}) as (base, _):
        link = base.replace("http://", f"http://miner:{SECRET}@") + f"/v/clip.mp4?token={SECRET}&v=1"
        camera = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"
        proc = cli("--debug", "run", link, camera, "--classes", "bottle", "--model", str(MODEL), "-o", str(out),
                   "-c", str(_config(tmp_path, {"live": {"reconnect_timeout_s": 0}})))
    text = no_traceback(proc)
    assert proc.returncode == 1, text  # the camera failed
    assert "***" in text and SECRET not in text, text
    status = cli_here("status", "-o", str(out))
    failed = cli_here("status", "--failed", "-o", str(out))
    assert status.returncode == failed.returncode == 0
    assert cli_here("report", "-o", str(out)).returncode == 0
    for shown in (status.stdout, failed.stdout):
        assert SECRET not in shown and "***" in shown, shown
    for path in out.rglob("*"):
        if path.is_file() and path.name != "registry.sqlite" and "registry.sqlite" not in path.name:
            assert SECRET.encode() not in path.read_bytes(), path
    kept = {r["input"] for r in rows(out).values()}
    assert link in kept and camera in kept, "the registry keeps what reconnecting needs"


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_redactor_masks_user_info_and_credential_parameters_only() -> None:
    from video_miner.redact import Redactor

    r = Redactor.with_extra(["hdnea"])
    assert r.url("https://www.youtube.com/watch?v=abc&t=10") == "https://www.youtube.com/watch?v=abc&t=10"
    assert r.url("rtsp://admin:pw@cam.local:554/s1") == "rtsp://***@cam.local:554/s1"
    assert r.url("https://b.s3.amazonaws.com/x.mp4?X-Amz-Signature=abc&X-Amz-Credential=k&x=1") == \
        "https://b.s3.amazonaws.com/x.mp4?X-Amz-Signature=***&X-Amz-Credential=***&x=1"
    assert r.url("https://cdn/x?hdnea=st=1~exp=2~hmac=3") == "https://cdn/x?hdnea=***"
    assert r.text("ERROR: HTTP Error 403 for https://u:p@h/x?api_key=9 (see https://ok/)") == \
        "ERROR: HTTP Error 403 for https://***@h/x?api_key=*** (see https://ok/)"


# ---- 5. the gallery and the terminal ------------------------------------------------------------
HOSTILE = "[bold red]x[/x] <!--<script>alert(1)</script>%DATA%\u2028\x1b[2J"


def test_hostile_names_print_as_plain_text_everywhere(tmp_path: Path) -> None:
    """A folder whose videos' names hold markup, an escape sequence, a comment opener and a
    template slot: the summary, status and the live log print them escaped, without a crash."""
    folder = tmp_path / "in"
    folder.mkdir()
    name = "clip " + HOSTILE.replace("/", "|") + "\nnext line.mkv"
    (folder / name).write_bytes(BOOK.read_bytes()[:5000])  # damaged: it fails, and is named in the summary
    (folder / "ok.mkv").write_bytes(AGAIN.read_bytes())
    out = tmp_path / "%DATA%[out]"
    proc = cli("run", str(folder), f"https://example.invalid/[/x]?token={SECRET}", "--model", str(MODEL),
               "-o", str(out), "--progress-every", "0.2")
    text = no_traceback(proc)
    assert proc.returncode == 1, text
    assert "\x1b" not in text and "\\x1b[2J" in text and "\\nnext line" in text, text
    assert "[bold red]x[|x]" in text  # markup shown as it is
    status = cli_here("status", "-o", str(out))
    assert status.returncode == 0, status.stdout + status.stderr
    no_traceback(status)
    assert "\x1b" not in status.stdout


def test_the_gallery_data_block_is_inert_whatever_the_names_hold(tmp_path: Path) -> None:
    from video_miner.dataset.gallery import script_json, write_gallery

    data = {"name": HOSTILE}
    block = script_json(data)
    assert not set("<>&\u2028\u2029") & set(block) and json.loads(block) == data
    out = tmp_path / "%DATA%"
    run([str(AGAIN)], out)
    manifest = out / "dataset" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**r, "source": HOSTILE}) + "\n" for r in lines))
    page = write_gallery(out).read_text()
    title = page[page.index("<title>"):page.index("</title>")]
    assert "%DATA%" in title and '"frames"' not in title, title
    script = page[page.index('id="data">') + 10:page.index("</script>", page.index('id="data">'))]
    # Inert as data, and shown with its escape sequence and line separator escaped, never drawn.
    assert json.loads(script)["videos"][0][1] == printable(HOSTILE) == HOSTILE.replace("\u2028", "\\u2028").replace(
        "\x1b", "\\x1b")


def test_thirty_failures_are_grouped_by_class_with_the_full_list_in_a_file(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join([*(str(tmp_path / f"gone{k}.mp4") for k in range(26)), "notaurl://a", "notaurl://b",
                                  "notaurl://c", "ftp://127.0.0.1:9/x.mp4", str(AGAIN)]) + "\n")
    out = tmp_path / "out"
    proc = cli_here("run", str(listing), "--model", str(MODEL), "-o", str(out))
    text = no_traceback(proc)
    assert proc.returncode == 1
    failed_lines = [line for line in text.splitlines() if line.startswith("failed")]
    assert [line.split(",")[0] for line in failed_lines] == \
        ["failed 26 not_found", "failed 3 unsupported_url", "failed 1 connection"], text  # a line per class
    listed = (out / "failures.tsv").read_text().splitlines()
    assert listed[0] == "class\tmessage\tinput" and len(listed) == 31
    assert "failures.tsv" in text
    failed = cli_here("status", "--failed", "-o", str(out))
    assert len(failed.stdout.strip().splitlines()) == 30


# ---- 6. yt-dlp options, damaged media, words not class names, pickled code -----------------------
def test_the_allowed_ytdlp_options_are_all_options_ytdlp_reads() -> None:
    import yt_dlp

    from video_miner.config import ALLOWED_OPTIONS

    read = set(yt_dlp.parse_options([]).ydl_opts)
    assert read >= ALLOWED_OPTIONS, sorted(ALLOWED_OPTIONS - read)
    for insecure in ("nocheckcertificate", "legacyserverconnect"):
        with pytest.raises(ConfigError, match="allow_insecure"):
            load_config(None, {"download.ytdlp_options": {insecure: True}})
        assert load_config(None, {"download.ytdlp_options": {insecure: True}, "download.allow_insecure": True})
    with pytest.raises(ConfigError, match="unknown or unsupported yt-dlp option 'match_filter_str'"):
        load_config(None, {"download.ytdlp_options": {"match_filter_str": "duration > 5"}})


def test_a_match_filter_leaves_a_video_out_in_words(tmp_path: Path) -> None:
    with serve({"/v/book.mkv": BOOK}) as (base, _):
        report = run([f"{base}/v/book.mkv"], tmp_path / "out",
                     **{"download.ytdlp_options": {"match_filter": "duration > 99999"}})
    assert [f.kind for f in report.failures] == ["match_filter"], [f.line() for f in report.failures]
    assert "does not pass filter" in report.failures[0].message


def _damaged_index(path: Path, box: bytes, value: bytes) -> Path:
    """The bottle video with the first entry of an index box (stco: chunk offsets) overwritten."""
    data = bytearray(BOTTLE.read_bytes())
    at = data.find(box)
    data[at + 12:at + 16] = value
    path.write_bytes(bytes(data))
    return path


def test_a_file_that_promises_video_and_gives_no_frame_says_so(tmp_path: Path) -> None:
    """A bad chunk offset (stco) used to end "done, 0 frames" without a word."""
    bad = _damaged_index(tmp_path / "badstco.mp4", b"stco", (0xFFFFFF00).to_bytes(4, "big"))
    report = run([str(bad), str(AGAIN)], tmp_path / "out")
    assert [f.kind for f in report.failures] == ["corrupt_media"], [f.line() for f in report.failures]
    assert "promises 39.9 s of video" in report.failures[0].message
    assert report.videos_done == 1


def test_an_object_store_host_that_does_not_resolve_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from video_miner.download import remote

    def no_dns(url: str) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(remote, "open_filesystem", no_dns)
    with pytest.raises(UnknownHost, match="does not resolve"):
        remote.copy_remote("ftp://nowhere.example/x.mp4", tmp_path)


def test_the_environments_problems_are_classes_with_a_hint_never_internal_errors(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing object-store credentials, DNS, TLS and a proxy that refuses: each a class that says
    what to do; and an s3:// input on a machine without credentials fails alone, saying so."""
    import socket
    import ssl

    from botocore.exceptions import NoCredentialsError

    from video_miner import errors
    from video_miner.stages.base import classify

    cases = [(NoCredentialsError(), "store_access"), (socket.gaierror(-2, "Name or service not known"), "unknown_host"),
             (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls"),
             (OSError("Tunnel connection failed: 407 Proxy Authentication Required"), "proxy"),
             (OSError("[Errno -3] Temporary failure in name resolution"), "unknown_host")]
    for exc, kind in cases:
        error = classify(exc, "v")
        assert error.kind == kind and error.hint and "a bug" not in str(error), (exc, error)
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.MinerError)]
    assert all(c.hint for c in classes if c is not errors.MinerError), [c for c in classes if not c.hint]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud's metadata address
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3fs = pytest.importorskip("s3fs")
    try:
        report = run(["s3://bucket/clip.mp4", str(AGAIN)], tmp_path / "out")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs keeps one per process: not this credential-less one
    failures = {f.input: f for f in report.failures}
    assert report.videos_done == 1 and set(failures) == {"s3://bucket/clip.mp4"}, [f.line() for f in report.failures]
    assert failures["s3://bucket/clip.mp4"].kind == "store_access", failures


def test_failures_are_words_not_class_names() -> None:
    from PIL import Image

    from video_miner.stages.base import classify

    bomb = classify(Image.DecompressionBombError("Image size (300000000 pixels) exceeds limit"), "v")
    assert bomb.kind == "too_large" and "DecompressionBombError" not in str(bomb)
    odd = classify(KeyError("x"), "v")
    assert odd.kind == "internal_error" and "KeyError" not in str(odd) and "unexpected error" in str(odd)


def test_a_pickled_model_that_would_run_code_is_refused_before_it_loads(tmp_path: Path) -> None:
    import pickle

    import torch

    from video_miner.detect.detector import Detector, DetectorSpec

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "old.pt").write_bytes(pickle.dumps({"model": Evil()}))
    for name in ("evil.pt", "old.pt"):
        with pytest.raises(ModelError, match="a model file is code"):
            Detector(DetectorSpec(str(tmp_path / name), ("person",), 0.4))
        proc = cli("doctor", "--model", str(tmp_path / name))
        assert "a model file is code" in proc.stdout and not marker.exists()
    assert not marker.exists()
    # A real Ultralytics checkpoint (built from its yaml, offline) passes.
    from ultralytics import YOLO

    from video_miner.detect.model_file import check_model_file

    YOLO("yolov8n.yaml").save(tmp_path / "built.pt")
    check_model_file(tmp_path / "built.pt")


# ---- real footage, small but wrong -------------------------------------------------------------
def _ts(path: Path, width: int, height: int, start: int) -> bytes:
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(30):
            a = np.zeros((height, width, 3), np.uint8)
            a[:, (i * 13) % width:(i * 13) % width + 20] = 200
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            frame.pts, frame.time_base = start + i, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def test_a_resolution_change_mid_stream_is_in_each_frames_manifest_row(tmp_path: Path) -> None:
    changing = tmp_path / "camera.ts"
    changing.write_bytes(_ts(tmp_path / "a.ts", 640, 360, 0) + _ts(tmp_path / "b.ts", 1280, 720, 30))
    run([str(changing)], tmp_path / "out", **{"filter.max_blur": 1, "filter.static_max_diff": -1})
    manifest = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    sizes = {round(r["timestamp"]): (r["decoded_size"], r["display_size"]) for r in manifest}
    assert sizes[1] == ([640, 360], [640, 360]) and sizes[4] == ([1280, 720], [1280, 720]), sizes


def test_timestamps_are_chosen_as_ffmpeg_chooses_them() -> None:
    """FFmpeg's best-effort timestamp: pts unless they go backwards more often than dts (packed
    B-frames in an AVI carry pts in decode order)."""
    from video_miner.media.decode import BestEffortClock

    clock = BestEffortClock()
    assert [clock.pick(p, d) for p, d in [(0, 0), (1, 1), (2, 2)]] == [0, 1, 2]
    clock = BestEffortClock()
    packed = [(0, 0), (3, 1), (1, 2), (2, 3), (6, 4), (4, 5), (5, 6)]  # pts out of order, dts in order
    assert [clock.pick(p, d) for p, d in packed][-3:] == [4, 5, 6]
    assert [BestEffortClock().pick(None, 7), BestEffortClock().pick(5, None)] == [7, 5]


def test_a_truncated_files_warning_says_where_decoding_stopped(tmp_path: Path) -> None:
    """It counted the frames decoded (91), while seeking had skipped most: "stopped at 69.6 s"
    says what a person wants to know."""
    import re

    from .conftest import PERSON

    cut = tmp_path / "cut.mp4"
    data = PERSON.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    report = run([str(cut)], tmp_path / "out", **{"extract.fps": 0.5})
    assert not report.failures and len(report.warnings) == 1, report.warnings
    match = re.match(r"decoding stopped at ([0-9.]+) s of ([0-9.]+) s: ", report.warnings[0][1])
    assert match is not None, report.warnings
    manifest = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    last = max(r["timestamp"] for r in manifest)
    assert last <= float(match.group(1)) < last + 10 and float(match.group(2)) > 130
