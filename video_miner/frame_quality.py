"""Cheap per-frame measures computed before the detector: sharpness and a perceptual hash."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import imagehash
import numpy as np
from PIL import Image


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurry frames (the classic focus measure)."""
    g = gray.astype(np.int16)  # |Laplacian| <= 4 * 255: int16 is exact and twice as fast as float
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    mean = lap.mean(dtype=np.float64)
    return float(np.square(lap, dtype=np.int32).mean(dtype=np.float64) - mean * mean)


def phash64(image: Image.Image) -> int:
    """imagehash's 64-bit DCT pHash as an unsigned int (what the dedup index stores)."""
    return int(str(imagehash.phash(image, hash_size=8)), 16)


THUMB_SIZE = (64, 36)


def thumbnail(image: Image.Image) -> np.ndarray:
    """A small grayscale copy for comparing consecutive frames."""
    return np.asarray(image.convert("L").resize(THUMB_SIZE, Image.Resampling.BILINEAR), dtype=np.int16)


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """99th percentile of the absolute gray-level difference of two thumbnails.

    Unlike a 64-bit pHash, which barely moves when a small object (a person across a large room)
    enters, this sees any local change, while compression noise stays in the low single digits.
    """
    return float(np.percentile(np.abs(a - b), 99))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def open_gray(source: Path | BinaryIO) -> Image.Image:
    """A JPEG's luma plane only: the prefilters need no colour, and skipping it halves decoding."""
    with Image.open(source) as im:
        if im.format == "JPEG":
            im.draft("L", im.size)
        return im.convert("L")


#: Longer side frames are brought to before their sharpness is compared across copies.
COMMON_SIDE = 320


def common_sharpness(gray: Image.Image) -> float:
    """Sharpness at one scale for every frame: the variance of the Laplacian grows as a picture
    shrinks, so measured at each frame's own size a smaller copy (a re-upload, a thumbnail) looks
    sharper than its original. Brought to a common size, the copy with more detail scores higher."""
    scale = COMMON_SIDE / max(gray.size)
    size = (max(3, round(gray.width * scale)), max(3, round(gray.height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return laplacian_variance(np.asarray(gray.resize(size, resample)))


def measure(gray: Image.Image) -> tuple[float, float, int, np.ndarray]:
    """(blur score, sharpness at the common scale, pHash, thumbnail) of one frame, from its grayscale image."""
    return laplacian_variance(np.asarray(gray)), common_sharpness(gray), phash64(gray), thumbnail(gray)
