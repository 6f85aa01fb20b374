"""The display matrix (how phones store portrait and rotated footage): which way a player turns
and mirrors the decoded picture. The same choices as ``ffmpeg``'s autorotate, so the frames match
what it and every player show."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The same operations as (counter-clockwise degrees, mirrored left-right afterwards).
_AS_ROTATION = {
    (None, False, False): (0, False), (None, True, False): (0, True), (None, False, True): (180, True),
    (None, True, True): (180, False), ("cclock", False, False): (90, False), ("clock", False, False): (270, False),
    ("clock_flip", False, False): (90, True), ("cclock_flip", False, False): (270, True),
}


@dataclass(frozen=True)
class Orientation:
    """What is done to the decoded picture, in ffmpeg's terms: one of its transpose filter's
    modes, and/or hflip and vflip."""

    transpose: str | None = None
    hflip: bool = False
    vflip: bool = False

    @property
    def swaps_sides(self) -> bool:
        return self.transpose is not None

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise the picture is turned to be shown (as ffmpeg's
        ``-display_rotation`` counts them), before any mirror."""
        return _AS_ROTATION[(self.transpose, self.hflip, self.vflip)][0]

    @property
    def mirrored(self) -> bool:
        """Whether it is also mirrored left-right (after the rotation)."""
        return _AS_ROTATION[(self.transpose, self.hflip, self.vflip)][1]

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The picture as shown: an (H, W, C) array turned and mirrored."""
        if self.transpose == "clock":
            rgb = np.rot90(rgb, k=-1)
        elif self.transpose == "cclock":
            rgb = np.rot90(rgb, k=1)
        elif self.transpose == "cclock_flip":
            rgb = rgb.transpose(1, 0, 2)
        elif self.transpose == "clock_flip":
            rgb = rgb[::-1, ::-1].transpose(1, 0, 2)
        if self.hflip:
            rgb = rgb[:, ::-1]
        if self.vflip:
            rgb = rgb[::-1]
        return np.ascontiguousarray(rgb)

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.swaps_sides else (width, height)


UPRIGHT = Orientation()


def _rotation_get(m: tuple[int, ...]) -> float:
    """libavutil's av_display_rotation_get: the counter-clockwise angle, NaN if degenerate."""
    a, b, c, d = (v / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if sx == 0 or sy == 0:
        return math.nan
    return -math.degrees(math.atan2(b / sy, a / sx))


def from_display_matrix(matrix: bytes | None) -> Orientation:
    """ffmpeg's choice of filters for a display matrix (fftools: get_rotation + autorotate)."""
    if not matrix or len(matrix) < 36:
        return UPRIGHT
    m = struct.unpack("<9i", matrix[:36])
    angle = _rotation_get(m)
    if math.isnan(angle):
        return UPRIGHT
    theta = -round(angle)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return Orientation("cclock_flip" if m[3] > 0 else "clock")
    if abs(theta - 180) < 1:
        return Orientation(None, m[0] < 0, m[4] < 0)
    if abs(theta - 270) < 1:
        return Orientation("clock_flip" if m[3] < 0 else "cclock")
    if abs(theta) < 1 and m[4] < 0:
        return Orientation(None, False, True)
    # Other angles (never seen from cameras) would need ffmpeg's rotate filter: shown as stored.
    return UPRIGHT


def frame_orientation(frame: Any) -> Orientation:
    """From the frame's display-matrix side data (FFmpeg copies the track's matrix onto frames)."""
    for side in frame.side_data:
        if side.type.name == "DISPLAYMATRIX":
            return from_display_matrix(bytes(side))
    return UPRIGHT
