"""Cheap per-frame measures computed before the detector: sharpness and a perceptual hash."""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurry frames (the classic focus measure)."""
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


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


def measure(image: Image.Image) -> tuple[float, int]:
    """(blur score, pHash) of one frame."""
    return laplacian_variance(np.asarray(image.convert("L"))), phash64(image)
