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
            assert judged.reason.startswith("blurry: blur 0.") and "filter.max_blur 0.5" in judged.reason
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
