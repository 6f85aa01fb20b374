"""Frames as a player shows them, checked against ffmpeg's own output for the same instants:
rotation and mirroring, the main track of several, animated images, non-square pixels, 10-bit and
HDR sources, other codecs; and of near-identical copies, the better one kept."""

from __future__ import annotations

import io
import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video_miner.config import ExtractConfig
from video_miner.errors import NoVideoStream
from video_miner.stages.extract import extract_frames

from .conftest import BOTTLE, PERSON
from .helpers import run

FPS = 1.0


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="the [test] extra installs imageio-ffmpeg")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@pytest.fixture(scope="module")
def media(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("media")

    def make(name: str, *args: str, before: tuple[str, ...] = (), src: Path = BOTTLE, seconds: float = 5) -> Path:
        out = folder / name
        if not out.exists():
            subprocess.run([ffmpeg, "-v", "error", "-y", *before, "-i", str(src), "-t", str(seconds), *args, str(out)],
                           check=True)
        return out

    return make


def ffmpeg_samples(ffmpeg: str, path: Path, vf: str = "") -> list[np.ndarray]:
    """What ffmpeg shows at each whole second (the instants video-miner samples at 1 fps), as RGB."""
    chain = ",".join(f for f in (vf, "fps=1:round=up") if f)
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-vf", chain, "-f", "image2pipe", "-c:v", "png", "-"],
                         check=True, capture_output=True).stdout
    frames, start = [], 0
    while (end := raw.find(b"IEND", start)) != -1:
        with Image.open(io.BytesIO(raw[start:end + 8])) as im:
            frames.append(np.asarray(im.convert("RGB")))
        start = end + 8
    return frames


def ours(path: Path, tmp: Path, **cfg: object):  # type: ignore[no-untyped-def]
    result = extract_frames(path, tmp, "v", ExtractConfig(mode="fps", fps=FPS, max_side=4096, jpeg_quality=95, **cfg), 2)
    return result, [np.asarray(Image.open(tmp / f["file"]).convert("RGB")) for f in result.frames]


def _blocks(a: np.ndarray, n: int = 4) -> np.ndarray:
    h, w = a.shape[0] // n * n, a.shape[1] // n * n
    return a[:h, :w].astype(float).reshape(h // n, n, w // n, n, -1).mean(axis=(1, 3))


def assert_same_pictures(mine: list[np.ndarray], theirs: list[np.ndarray], tolerance: float = 3.0) -> None:
    """The same pictures at the same instants: equal sizes, and colours equal but for JPEG noise
    (compared on 4x4 block means, so the noise of a dithered GIF does not count)."""
    # ffmpeg's fps filter may repeat the last picture once to reach the file's end.
    assert len(mine) >= 3 and len(theirs) - len(mine) in (0, 1), (len(mine), len(theirs))
    for k, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        assert a.shape == b.shape, (k, a.shape, b.shape)
        diff = float(np.abs(_blocks(a) - _blocks(b)).mean())
        assert diff < tolerance, (k, diff)


@pytest.mark.parametrize(("rotation", "mirror", "shown"), [
    (90, False, (640, 360)), (180, False, (360, 640)), (270, False, (640, 360)), (90, True, (640, 360)),
    (0, True, (360, 640))])
def test_rotated_and_mirrored_videos_come_out_as_players_show_them(media, ffmpeg: str, tmp_path: Path, rotation: int,
                                                                   mirror: bool, shown: tuple[int, int]) -> None:
    flags = ("-display_rotation", str(rotation), *(("-display_hflip",) if mirror else ()))
    path = media(f"rot{rotation}{'m' if mirror else ''}.mp4", "-c", "copy", before=flags)
    result, frames = ours(path, tmp_path)
    assert frames[0].shape[:2] == shown
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path))
    assert result.media["rotation"] == rotation and result.media["mirrored"] is mirror
    assert result.media["decoded_size"] == [640, 360]
    assert result.media["display_size"] == [shown[1], shown[0]]


def test_the_main_track_is_decoded_not_a_thumbnail_track_before_it(media, ffmpeg: str, tmp_path: Path) -> None:
    path = media("thumbs-first.mkv", "-filter_complex", "[0:v]fps=1,scale=160:90[t]", "-map", "[t]", "-map", "0:v",
                 "-c:v", "libx264", "-disposition:v:0", "0", "-disposition:v:1", "default")
    result, frames = ours(path, tmp_path)
    assert result.media["track"] == 1
    assert frames[0].shape[:2] == (360, 640)
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path))


def test_a_cover_picture_is_not_the_video(ffmpeg: str, tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    Image.new("RGB", (1000, 1000), (200, 30, 30)).save(cover)  # larger than the video, and first
    path = tmp_path / "with-cover.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(BOTTLE), "-i", str(cover), "-t", "4", "-map", "1",
                    "-map", "0:v", "-c:v:0", "png", "-c:v:1", "libx264", "-disposition:v:0", "attached_pic",
                    str(path)], check=True)
    result, frames = ours(path, tmp_path / "f")
    assert result.media["codec"] == "h264" and frames[0].shape[:2] == (360, 640)


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.apng"])
def test_animated_images_are_videos(media, ffmpeg: str, tmp_path: Path, name: str) -> None:
    extra = {"anim.gif": (), "anim.webp": ("-c:v", "libwebp_anim", "-loop", "0"), "anim.apng": ("-f", "apng")}[name]
    path = media(name, "-vf", "fps=5,scale=320:-2", *extra)
    result, frames = ours(path, tmp_path)
    assert len(frames) == 5 and frames[0].shape[:2] == (180, 320)
    # Lossless palette or RGB: the same pixels as ffmpeg's (the animated WebP is lossy: a little noise).
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path), tolerance=4.0)
    assert [f["t"] for f in result.frames] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_one_frame_gif_is_a_still_image(media, tmp_path: Path) -> None:
    path = media("one.gif", "-frames:v", "1", "-vf", "scale=320:-2")
    with pytest.raises(NoVideoStream, match="still image"):
        extract_frames(path, tmp_path, "v", ExtractConfig(), 1)


def test_non_square_pixels_are_resampled_to_the_display_aspect(media, ffmpeg: str, tmp_path: Path) -> None:
    path = media("anamorphic.mp4", "-vf", "scale=480:360,setsar=4/3", "-c:v", "libx264")
    result, frames = ours(path, tmp_path)
    assert frames[0].shape[:2] == (360, 640)
    assert result.media["decoded_size"] == [480, 360] and result.media["sample_aspect_ratio"] == "4:3"
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path, "scale=iw*sar:ih,setsar=1"))


@pytest.mark.parametrize(("name", "args", "pix_fmt"), [
    ("hevc10.mp4", ("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"), "yuv420p10le"),
    ("vp9.webm", ("-c:v", "libvpx-vp9", "-b:v", "400k"), "yuv420p"),
    ("av1.mkv", ("-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "35"), "yuv420p"),
    ("full-range.mp4", ("-c:v", "libx264", "-pix_fmt", "yuvj420p"), "yuvj420p"),
])
def test_other_codecs_and_bit_depths_give_ffmpegs_colours(media, ffmpeg: str, tmp_path: Path, name: str,
                                                         args: tuple[str, ...], pix_fmt: str) -> None:
    path = media(name, *args, seconds=4)
    result, frames = ours(path, tmp_path)
    assert result.media["pixel_format"] == pix_fmt
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path))


def test_hdr_is_tone_mapped_as_ffmpeg_does(media, ffmpeg: str, tmp_path: Path) -> None:
    to_pq = ("zscale=tin=bt709:min=bt709:pin=bt709:t=smpte2084:m=bt2020nc:p=bt2020:npl=100,format=yuv420p10le")
    path = media("hdr-pq.mp4", "-vf", to_pq, "-c:v", "libx265", "-x265-params",
                 "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc", seconds=4)
    result, frames = ours(path, tmp_path)
    assert result.media["hdr"] == "pq" and result.media["pixel_format"] == "yuv420p10le"
    recipe = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,"
              "zscale=t=bt709:m=bt709:r=tv,format=yuv444p")
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path, recipe), tolerance=4.0)
    # Read as if it were SDR, a PQ picture is washed out grey: tone mapped, it has contrast again.
    import av

    with av.open(str(path)) as container:
        naive = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert float(np.std(frames[0])) > 1.3 * float(np.std(naive))


def test_phone_footage_stored_sideways_is_mined_upright(media, tmp_path: Path) -> None:
    """The person video stored as a phone stores portrait footage: pixels turned a quarter, and a
    display matrix that turns them back. Mined, it gives what the upright original gives."""
    sideways = media("person-sideways-raw.mp4", "-vf", "transpose=clock", "-c:v", "libx264", "-crf", "18",
                     src=PERSON, seconds=60)
    phone = media("person-phone.mp4", "-c", "copy", before=("-display_rotation", "90"), src=sideways, seconds=60)
    upright = media("person-upright.mp4", "-c:v", "libx264", "-crf", "18", src=PERSON, seconds=60)
    reports = {name: run([str(p)], tmp_path / name) for name, p in (("phone", phone), ("upright", upright))}
    rows = {name: [json.loads(line) for line in (tmp_path / name / "dataset" / "manifest.jsonl").read_text().splitlines()]
            for name in reports}
    kept = {name: [r for r in rows[name] if r["decision"] == "kept"] for name in rows}
    assert len(kept["upright"]) >= 5
    assert len(kept["phone"]) >= len(kept["upright"]) - 1, (len(kept["phone"]), len(kept["upright"]))
    for r in kept["phone"]:
        with Image.open(tmp_path / "phone" / "dataset" / r["image"]) as im:
            assert im.size == (768, 432)
        assert r["rotation"] == 90 and r["decoded_size"] == [432, 768] and r["display_size"] == [768, 432]
    # The boxes are where the upright original's are.
    by_time = {r["timestamp"]: r["detections"] for r in kept["upright"]}
    matched = [r for r in kept["phone"] if r["timestamp"] in by_time]
    assert matched
    for r in matched:
        a, b = r["detections"][0]["xywhn"], by_time[r["timestamp"]][0]["xywhn"]
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.05, (a, b)


@pytest.mark.parametrize("reupload_first", [False, True])
def test_the_original_is_kept_over_a_lower_quality_reupload(media, tmp_path: Path, reupload_first: bool) -> None:
    """The person video beside a 480-wide CRF-28 re-encode of it: near-identical frames, and the
    kept ones come from the original whichever is listed first."""
    original = media("person-60s.mp4", "-c", "copy", src=PERSON, seconds=60)
    reupload = media("person-reupload.mp4", "-vf", "scale=480:-2", "-c:v", "libx264", "-crf", "28", src=PERSON,
                     seconds=60)
    inputs = [str(reupload), str(original)] if reupload_first else [str(original), str(reupload)]
    report = run(inputs, tmp_path / "out")
    assert not report.failures
    rows = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    kept = Counter(r["source"] == str(original) for r in rows if r["decision"] == "kept")
    assert kept[True] >= 5
    assert kept[True] / (kept[True] + kept[False]) >= 0.95, kept
