"""Animated images (GIF, APNG, animated WebP) are videos: FFmpeg decodes GIF and APNG; the
animated WebP that PyAV's FFmpeg cannot decode comes from Pillow, with each frame's duration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import TooLarge
from .formats import check_pixels


@dataclass(frozen=True)
class StillFrame:
    """A frame of an animation decoded by Pillow: its time and pixels, as shown."""

    time: float
    rgb: np.ndarray


def pillow_frames(path: Path, max_pixels: int) -> tuple[int, Iterator[StillFrame]]:
    """(frame count, frames with their start times, decoded one at a time) of an image Pillow can
    read; one larger than ``max_pixels`` is refused before any frame is decoded."""
    image = Image.open(path)
    try:
        check_pixels(path, image.width, image.height, max_pixels)
    except TooLarge:
        image.close()
        raise
    count = int(getattr(image, "n_frames", 1))

    def frames() -> Iterator[StillFrame]:
        t = 0.0
        with image:
            for k in range(count):
                image.seek(k)
                yield StillFrame(t, np.asarray(image.convert("RGB")))
                # Pillow reports each frame's own display time in milliseconds.
                t += max(0.0, float(image.info.get("duration") or 100)) / 1000
    return count, frames()
