"""Cheap per-frame measures computed before the detector: sharpness and a perceptual hash."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import imagehash
import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter, uniform_filter1d


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurry frames (the classic focus measure);
    0 for a picture too small to have an inside."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    g = gray.astype(np.int16)  # |Laplacian| <= 4 * 255: int16 is exact and twice as fast as float
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    mean = lap.mean(dtype=np.float64)
    return float(np.square(lap, dtype=np.int32).mean(dtype=np.float64) - mean * mean)


def phash64(image: Image.Image) -> int:
    """imagehash's 64-bit DCT pHash as an unsigned int (what the dedup index stores)."""
    return int(str(imagehash.phash(image, hash_size=8)), 16)


#: Frames are compared as gray thumbnails of this size: a plate or a sign of a few percent of
#: the frame still covers a patch of pixels (at 64x36 it was three rows, averaged away).
THUMB_SIZE = (160, 90)
#: Side, in thumbnail pixels, of the patch whose mean change is measured (9 of 160: a person far
#: across a room, a number plate, a changed sign).
PATCH = 9


def thumbnail(image: Image.Image) -> np.ndarray:
    """A small grayscale copy for comparing consecutive frames."""
    return np.asarray(image.convert("L").resize(THUMB_SIZE, Image.Resampling.BILINEAR), dtype=np.float32)


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest local change between two thumbnails: the mean absolute gray-level difference
    of the PATCH x PATCH patch that changed most. A new small object, another number plate or a
    changed sign is a small region of a large frame: a mean or a percentile over the whole frame
    hides it, while compression noise and flicker stay low in every patch."""
    return float(uniform_filter(np.abs(a - b), PATCH, mode="nearest").max())


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def open_gray(source: Path | BinaryIO) -> Image.Image:
    """A JPEG's luma plane only: the prefilters need no colour, and skipping it halves decoding."""
    with Image.open(source) as im:
        if im.format == "JPEG":
            im.draft("L", im.size)
        return im.convert("L")


#: Longer side frames are brought to before their sharpness is compared across copies: the
#: variance of the Laplacian grows as a picture shrinks, so measured at each frame's own size a
#: smaller copy (a re-upload, a thumbnail) looked sharper than its original.
COMMON_SIDE = 320
#: Longer side blur is judged at, at most: larger frames are brought down to it (a labeller sees
#: them at about this size); smaller ones are judged as they are, never upscaled (an upscale blurs:
#: sharp 176x144 footage measured as blurry as a defocused 768-pixel frame).
BLUR_SIDE = 480
#: The picture is cut into GRID x GRID tiles; blur is measured over the BLUR_TILES with the most
#: edges: where the subject is. A sharp person in front of a blurred copy of the scene (a landscape
#: video reposted as 9:16) is sharp; a frame blurred by motion or defocus is blurred everywhere.
GRID, BLUR_TILES = 8, 16


def _blur_window(side: int) -> int:
    """The re-blur's width for a picture whose longer side is ``side``: a smaller picture has its
    detail in fewer pixels, so the same smear is a larger share of it (measured on copies of the
    shared videos from 176x144 to full size, see docs/benchmarks.md)."""
    return 11 if side >= 400 else 9 if side >= 300 else 7


#: Luma at or below which a line of pixels is black (video black is 16; JPEG noise adds a little).
BAR_LUMA = 32
#: Bars thinner than this share of the side are not cropped (encoders pad 1080 to 1088, cameras
#: leave a dark line): a picture without bars keeps its exact measures.
MIN_BAR_SHARE = 0.02


def _bars(dark: np.ndarray) -> tuple[int, int]:
    """Leading and trailing dark lines."""
    lit = np.flatnonzero(~dark)
    if lit.size == 0:
        return 0, 0
    return int(lit[0]), int(dark.size - 1 - lit[-1])


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside black bars, as ffmpeg's cropdetect finds
    them: a re-upload letterboxed or pillarboxed into another shape (a landscape video posted as a
    portrait short) shows the same picture in a smaller box. A line is black when at most 1% of its
    pixels are brighter than :data:`BAR_LUMA`."""
    h, w = gray.shape
    bright = gray > BAR_LUMA
    top, bottom = _bars(bright.mean(axis=1) <= 0.01)
    if top + bottom < MIN_BAR_SHARE * h or h - top - bottom < h / 4:
        top = bottom = 0
    left, right = _bars(bright[top:h - bottom].mean(axis=0) <= 0.01)
    if left + right < MIN_BAR_SHARE * w or w - left - right < w / 4:
        left = right = 0
    return left, top, w - right, h - bottom


def at_common_scale(gray: Image.Image, side: int = COMMON_SIDE) -> np.ndarray:
    """The picture with its longer side at ``side``, so measures compare across copies."""
    scale = side / max(gray.size)
    size = (max(3, round(gray.width * scale)), max(3, round(gray.height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(gray.resize(size, resample))


def blur_effect(picture: np.ndarray) -> float:
    """How blurry a picture looks, 0 (sharp) to 1 (a flat blur), judged against its own content:
    the no-reference perceptual blur metric of Crete-Roffet et al. (2007), as scikit-image's
    ``measure.blur_effect`` computes it, over the part of the picture with the most edges. The
    picture is blurred again along each axis; a sharp picture loses much of its
    neighbour-to-neighbour contrast to that, one already blurred by motion or defocus little. Few
    edges do not make a picture blurry (a plane against a clear sky is sharp). A picture with no
    contrast at all is 1: nothing to see."""
    if picture.shape[0] < 3 or picture.shape[1] < 3 or int(picture.max()) - int(picture.min()) < 2:
        return 1.0
    image = picture.astype(np.float32) / 255.0
    rows, cols = image.shape
    grid = min(GRID, rows - 1, cols - 1)
    th, tw = (rows - 1) // grid, (cols - 1) // grid
    window = _blur_window(max(rows, cols))
    sums = []
    for axis in (0, 1):
        sharp = np.abs(np.diff(image, axis=axis))[:th * grid, :tw * grid]
        again = np.abs(np.diff(uniform_filter1d(image, window, axis=axis), axis=axis))[:th * grid, :tw * grid]
        lost = np.maximum(0.0, sharp - again)
        # Per tile: the contrast there is, and what re-blurring took of it.
        sums.append((sharp.reshape(grid, th, grid, tw).sum(axis=(1, 3)).ravel(),
                     lost.reshape(grid, th, grid, tw).sum(axis=(1, 3)).ravel()))
    edges = sums[0][0] + sums[1][0]
    subject = np.argsort(edges, kind="stable")[::-1][:BLUR_TILES]
    blur = 0.0
    for contrast, lost in sums:
        total = float(contrast[subject].sum())
        blur = max(blur, (total - float(lost[subject].sum())) / total if total > 0 else 1.0)
    return blur if np.isfinite(blur) else 1.0


def at_most(gray: Image.Image, side: int) -> np.ndarray:
    """The picture with its longer side brought down to ``side`` (never up)."""
    if max(gray.size) <= side:
        return np.asarray(gray)
    return at_common_scale(gray, side)


def measure(gray: Image.Image) -> tuple[float, float, int, np.ndarray, float]:
    """(blur, sharpness at the common scale, pHash, thumbnail, share of the frame inside black bars)
    of one frame, from its grayscale image. Blur, sharpness and pHash are of the picture inside the
    bars: a letterboxed copy hashes like its original, and its bars do not count as blur."""
    pixels = np.asarray(gray)
    box = content_box(pixels)
    inner = gray if box == (0, 0, gray.width, gray.height) else gray.crop(box)
    share = (box[2] - box[0]) * (box[3] - box[1]) / (gray.width * gray.height)
    return (blur_effect(at_most(inner, BLUR_SIDE)), laplacian_variance(at_common_scale(inner)), phash64(inner),
            thumbnail(gray), share)
