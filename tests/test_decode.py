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
from video_miner.media.decode import extract_frames

from .conftest import BOTTLE, PERSON
from .helpers import run

FPS = 1.0


#: Seconds of the person video the copies below are made of (two visits: people to keep).
PERSON_SECONDS = 30


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


def ffmpeg_samples(ffmpeg: str, path: Path, vf: str = "", track: str | None = None) -> list[np.ndarray]:
    """What ffmpeg shows at each whole second (the instants video-miner samples at 1 fps), as RGB;
    of ``track`` (``-map``) or of the track ffmpeg picks."""
    chain = ",".join(f for f in (vf, "fps=1:round=up") if f)
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), *(("-map", track) if track else ()), "-vf", chain,
                          "-f", "image2pipe", "-c:v", "png", "-"], check=True, capture_output=True).stdout
    frames, start = [], 0
    while (end := raw.find(b"IEND", start)) != -1:
        with Image.open(io.BytesIO(raw[start:end + 8])) as im:
            frames.append(np.asarray(im.convert("RGB")))
        start = end + 8
    return frames


def ours(path: Path, tmp: Path, **cfg: object):  # type: ignore[no-untyped-def]
    result = extract_frames(path, tmp, "v", ExtractConfig(mode="fps", fps=FPS, max_side=4096, jpeg_quality=95, **cfg), 2)
    return result, [np.asarray(Image.open(tmp / f.file).convert("RGB")) for f in result.frames]


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
    assert result.media.rotation == rotation and result.media.mirrored is mirror
    assert result.media.decoded_size == [640, 360]
    assert result.media.display_size == [shown[1], shown[0]]


def test_the_main_track_is_decoded_not_a_thumbnail_track_before_it(media, ffmpeg: str, tmp_path: Path) -> None:
    path = media("thumbs-first.mkv", "-filter_complex", "[0:v]fps=1,scale=160:90[t]", "-map", "[t]", "-map", "0:v",
                 "-c:v", "libx264", "-disposition:v:0", "0", "-disposition:v:1", "default")
    result, frames = ours(path, tmp_path)
    assert result.media.track == 1
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
    assert result.media.codec == "h264" and frames[0].shape[:2] == (360, 640)


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.apng", "anim.avif"])
def test_animated_images_are_videos(media, ffmpeg: str, tmp_path: Path, name: str) -> None:
    extra = {"anim.gif": (), "anim.webp": ("-c:v", "libwebp_anim", "-loop", "0"), "anim.apng": ("-f", "apng"),
             # An animated AVIF holds a still primary picture beside the animation: the animation is shown.
             "anim.avif": ("-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "20")}[name]
    path = media(name, "-vf", "fps=5,scale=320:-2", *extra)
    result, frames = ours(path, tmp_path)
    assert len(frames) == 5 and frames[0].shape[:2] == (180, 320)
    # Lossless palette or RGB: the same pixels as ffmpeg's (the animated WebP is lossy: a little noise).
    # ffmpeg itself picks an animated AVIF's still picture; browsers, and video-miner, the animation.
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path, track="0:1" if name.endswith("avif") else None),
                         tolerance=4.0)
    assert [f.t for f in result.frames] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("name", ["one.gif", "one.avif"])
def test_a_one_frame_animated_image_format_is_a_still_image(media, tmp_path: Path, name: str) -> None:
    path = media(name, "-frames:v", "1", "-vf", "scale=320:-2", *(("-c:v", "libaom-av1") if name.endswith("avif") else ()))
    with pytest.raises(NoVideoStream, match="still image"):
        extract_frames(path, tmp_path, "v", ExtractConfig(), 1)


def test_non_square_pixels_are_resampled_to_the_display_aspect(media, ffmpeg: str, tmp_path: Path) -> None:
    path = media("anamorphic.mp4", "-vf", "scale=480:360,setsar=4/3", "-c:v", "libx264")
    result, frames = ours(path, tmp_path)
    assert frames[0].shape[:2] == (360, 640)
    assert result.media.decoded_size == [480, 360] and result.media.sample_aspect_ratio == "4:3"
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
    assert result.media.pixel_format == pix_fmt
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path))


def test_hdr_is_tone_mapped_as_ffmpeg_does(media, ffmpeg: str, tmp_path: Path) -> None:
    to_pq = ("zscale=tin=bt709:min=bt709:pin=bt709:t=smpte2084:m=bt2020nc:p=bt2020:npl=100,format=yuv420p10le")
    path = media("hdr-pq.mp4", "-vf", to_pq, "-c:v", "libx265", "-x265-params",
                 "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc", seconds=4)
    result, frames = ours(path, tmp_path)
    assert result.media.hdr == "pq" and result.media.pixel_format == "yuv420p10le"
    recipe = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,"
              "zscale=t=bt709:m=bt709:r=tv,format=yuv444p")
    assert_same_pictures(frames, ffmpeg_samples(ffmpeg, path, recipe), tolerance=4.0)
    # Read as if it were SDR, a PQ picture is washed out grey: tone mapped, it has contrast again.
    import av

    with av.open(str(path)) as container:
        naive = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert float(np.std(frames[0])) > 1.3 * float(np.std(naive))

def test_a_raw_h264_stream_is_read_through(media, ffmpeg: str, tmp_path: Path) -> None:
    """A Raspberry Pi camera's .h264: no container, no timestamps (25 fps assumed, as ffmpeg does);
    it cannot seek, so a start is reached by decoding through, not by a seek that reads to the end."""
    path = media("pi-camera.h264", "-an", "-c:v", "libx264", "-g", "10", "-f", "h264", seconds=6)
    theirs = ffmpeg_samples(ffmpeg, path)
    _, frames = ours(path, tmp_path / "all")
    assert_same_pictures(frames, theirs)
    result, frames = ours(path, tmp_path / "part", start=3.0)
    assert [round(f.t) for f in result.frames][:2] == [3, 4]  # no frame at exactly 3 s at 29.83 fps
    assert_same_pictures(frames, theirs[3:])


@pytest.mark.parametrize(("name", "args"), [
    # A camera's recording: MPEG-TS stamped with the camera's clock, an hour in.
    ("camera.ts", ("-c:v", "libx264", "-an", "-output_ts_offset", "3600", "-f", "mpegts")),
    # Fragmented MP4 (no edit list): the first frame is shown after the B-frame delay.
    ("fragmented.mp4", ("-c:v", "libx264", "-an", "-movflags", "+frag_keyframe+empty_moov")),
])
def test_times_count_from_the_start_of_the_file_as_players_do(media, ffmpeg: str, tmp_path: Path, name: str,
                                                              args: tuple[str, ...]) -> None:
    path = media(name, *args, src=PERSON, seconds=6)
    result, frames = ours(path, tmp_path / "all")
    assert [f.t for f in result.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert result.frames[2].file == "v_000002000ms.jpg"
    theirs = ffmpeg_samples(ffmpeg, path)
    assert_same_pictures(frames, theirs)
    # extract.start and extract.end are seconds into the video too (a seek across the offset).
    result, frames = ours(path, tmp_path / "part", start=2.0, end=4.0)
    assert [f.t for f in result.frames] == [2.0, 3.0, 4.0]
    assert_same_pictures(frames, theirs[2:5])



def test_phone_footage_stored_sideways_is_mined_upright(media, tmp_path: Path) -> None:
    """The person video stored as a phone stores portrait footage: pixels turned a quarter, and a
    display matrix that turns them back. Mined, it gives what the upright original gives."""
    sideways = media("person-sideways-raw.mp4", "-vf", "transpose=clock", "-c:v", "libx264", "-preset", "veryfast",
                     "-crf", "18", src=PERSON, seconds=PERSON_SECONDS)
    phone = media("person-phone.mp4", "-c", "copy", before=("-display_rotation", "90"), src=sideways,
                  seconds=PERSON_SECONDS)
    upright = media("person-upright.mp4", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", src=PERSON,
                    seconds=PERSON_SECONDS)
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
    original = media("person-head.mp4", "-c", "copy", src=PERSON, seconds=PERSON_SECONDS)
    reupload = media("person-reupload.mp4", "-vf", "scale=480:-2", "-c:v", "libx264", "-preset", "veryfast", "-crf",
                     "28", src=PERSON, seconds=PERSON_SECONDS)
    inputs = [str(reupload), str(original)] if reupload_first else [str(original), str(reupload)]
    report = run(inputs, tmp_path / "out")
    assert not report.failures
    rows = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    kept = Counter(r["source"] == str(original) for r in rows if r["decision"] == "kept")
    assert kept[True] >= 5
    assert kept[True] / (kept[True] + kept[False]) >= 0.95, kept


def test_a_letterboxed_repost_is_a_duplicate_of_its_original(media, tmp_path: Path) -> None:
    """The person video reposted as a portrait short: scaled to 720 wide inside black bars above and
    below. Its frames are the original's pictures: the dataset is what the original alone gives."""
    original = media("person-head.mp4", "-c", "copy", src=PERSON, seconds=PERSON_SECONDS)
    short = media("person-short.mp4", "-vf", "scale=720:-2,pad=720:1280:0:(oh-ih)/2:black", "-c:v", "libx264",
                  "-preset", "veryfast", src=PERSON, seconds=PERSON_SECONDS)
    alone = run([str(original)], tmp_path / "alone")
    both = run([str(short), str(original)], tmp_path / "both")
    assert not both.failures and alone.export.kept >= 5
    rows = [json.loads(line) for line in (tmp_path / "both" / "dataset" / "manifest.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["decision"] == "kept"]
    assert len(kept) <= alone.export.kept + 1, (len(kept), alone.export.kept)
    assert Counter(r["source"] == str(original) for r in kept)[True] >= 0.95 * len(kept)


@pytest.mark.parametrize(("bars", "box"), [
    ("letterbox", (0, 140, 320, 500)), ("pillarbox", (40, 0, 280, 640)), ("none", (0, 0, 320, 640)),
    ("thin", (0, 0, 320, 640)), ("black", (0, 0, 320, 640))])
def test_black_bars_are_found_as_cropdetect_finds_them(bars: str, box: tuple[int, int, int, int]) -> None:
    from video_miner.media.quality import content_box

    rng = np.random.default_rng(0)
    gray = np.full((640, 320), 16, np.uint8)
    picture = rng.integers(0, 256, (640, 320), dtype=np.uint8)
    if bars == "letterbox":
        gray[140:500] = picture[140:500]
    elif bars == "pillarbox":
        gray[:, 40:280] = picture[:, 40:280]
    elif bars in ("none", "thin"):
        gray[:] = picture
        if bars == "thin":  # a dark line or two at the edge (encoder padding) is not a bar
            gray[:6] = 16
    assert content_box(gray) == box
