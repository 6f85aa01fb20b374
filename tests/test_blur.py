"""Blur judged as a person judges it: sharp frames of plain scenes pass, motion-blurred and
out-of-focus versions of textured ones do not, on frames of the shared videos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from video_miner.config import ExtractConfig, FilterConfig
from video_miner.media.decode import extract_frames
from video_miner.media.prefilter import Prefilter
from video_miner.records import Decision, FrameRecord

from .conftest import BOTTLE, CARS, PERSON


def _frames(video: Path, tmp: Path, every: float) -> list[Image.Image]:
    result = extract_frames(video, tmp, "v", ExtractConfig(mode="interval", every_seconds=every), 1)
    return [Image.open(tmp / f.file).convert("RGB") for f in result.frames]


def _judge(picture: Image.Image, config: FilterConfig | None = None) -> FrameRecord:
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=90)
    frame = FrameRecord("f.jpg", 0.0, 0, picture.width * picture.height, 0.1)
    Prefilter(config or FilterConfig()).check(buf.getvalue(), frame)
    return frame


def _motion(picture: Image.Image, length: int = 15) -> Image.Image:
    a = np.asarray(picture, np.float32)
    kernel = np.ones(length) / length
    smeared = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, a)
    return Image.fromarray(smeared.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    tmp = tmp_path_factory.mktemp("blur")
    return _frames(PERSON, tmp / "p", 30) + _frames(BOTTLE, tmp / "b", 10)


def test_sharp_frames_pass_and_their_blurred_versions_do_not(footage: list[Image.Image]) -> None:
    for picture in footage:
        sharp = _judge(picture)
        assert sharp.decision is None, sharp.reason
        for blurred in (_motion(picture), picture.filter(ImageFilter.GaussianBlur(3))):
            judged = _judge(blurred)
            assert judged.decision == Decision.FILTERED and judged.reason is not None
            assert judged.reason.startswith("blurry: blur 0.") and "filter.max_blur 0.45" in judged.reason
            assert judged.blur > sharp.blur + 0.1


def test_a_sharp_plain_scene_passes_however_few_edges_it_has(tmp_path: Path) -> None:
    """The parking lot seen from above (low texture: the variance of the Laplacian called every
    frame of it blurry), and a small sharp object on a plain sky."""
    for picture in _frames(CARS, tmp_path, 10):
        assert _judge(picture).decision is None
    sky = np.full((360, 640, 3), (150, 190, 235), np.uint8)
    sky[170:182, 300:360] = (40, 40, 45)  # a plane, far away
    sky[150:200, 325:333] = (40, 40, 45)
    plane = Image.fromarray(sky)
    assert _judge(plane).decision is None
    judged = _judge(_motion(plane, 25))
    assert judged.decision == Decision.FILTERED, judged.blur


def test_a_frame_with_no_contrast_is_blank_and_max_blur_1_keeps_everything(tmp_path: Path) -> None:
    grey = Image.new("RGB", (640, 360), (128, 128, 128))
    judged = _judge(grey)
    assert judged.decision == Decision.FILTERED and judged.reason == "blank: no contrast at all"
    assert _judge(_motion(_frames(BOTTLE, tmp_path, 20)[0]), FilterConfig(max_blur=1)).decision is None


SIZES = [(640, 360), (426, 240), (320, 240), (176, 144)]


def test_sharp_footage_passes_at_every_size_and_blurred_footage_does_not(footage: list[Image.Image]) -> None:
    """Copies as footage reaches users, from UCF101's and QCIF's sizes up: a plain downscale and one
    re-encoded at 0.1 bits per pixel pass at every size (they are judged at their own size, never
    upscaled); defocused ones never pass, and nearly all smeared by motion are caught (a smear along
    edges that run with it barely shows: scripts/bench_blur.py's table)."""
    from scripts.bench_blur import defocus, low_bitrate, motion

    pictures = footage[::4]
    for size in SIZES:
        copies = [p.resize(size, Image.Resampling.LANCZOS) for p in pictures]
        for picture in (*copies, *(low_bitrate(c) for c in copies)):
            judged = _judge(picture)
            assert judged.decision is None, (size, judged.reason)
        assert all(_judge(defocus(c)).decision == Decision.FILTERED for c in copies), size
        caught = sum(_judge(motion(c)).decision == Decision.FILTERED for c in copies)
        assert caught >= 0.8 * len(copies), (size, caught, len(copies))


def test_a_sharp_subject_on_a_blurred_background_is_sharp(footage: list[Image.Image]) -> None:
    """A landscape video reposted as 9:16 in the middle of a blurred copy of itself: judged where the
    picture has its edges, the frames are as sharp as the original's; blurred, they are not."""
    from scripts.bench_blur import defocus, repost

    for picture in footage[::3]:
        assert _judge(repost(picture)).decision is None
        assert _judge(repost(defocus(picture))).decision == Decision.FILTERED
