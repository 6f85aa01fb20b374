"""Animated images (GIF, APNG, animated WebP) are videos: FFmpeg decodes GIF and APNG; the
animated WebP that PyAV's FFmpeg cannot decode comes from Pillow, with each frame's duration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class StillFrame:
    """A frame of an animation decoded by Pillow: its time and pixels, as shown."""

    time: float
    rgb: np.ndarray


def pillow_frames(path: Path) -> tuple[int, Iterator[StillFrame]]:
    """(frame count, frames with their start times) of an image Pillow can read."""
    image = Image.open(path)
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
