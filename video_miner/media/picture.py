"""One decoded frame as a player shows it: square pixels (the sample aspect ratio applied), at most
``max_side`` on its longer side, turned and mirrored by the display matrix, in 8-bit RGB with the
frame's own colour matrix and range; HDR (PQ, HLG) tone-mapped to SDR as ffmpeg's
``zscale``+``tonemap=hable`` recipe does (PyAV's FFmpeg has no zscale, so those few steps are here)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..records import MediaInfo
from .orientation import UPRIGHT, Orientation, frame_orientation

#: FFmpeg's AVColorTransferCharacteristic values for HDR transfers.
TRC_PQ, TRC_HLG = 16, 18
#: AVColorRange: full ("JPEG") range; swscale assumes limited range unless told.
RANGE_FULL = 2


@dataclass(frozen=True)
class Geometry:
    """How one video's frames are shown: what the manifest records for each of its frames."""

    decoded: tuple[int, int]
    #: After the sample aspect ratio and the rotation, before ``max_side``.
    display: tuple[int, int]
    orientation: Orientation = UPRIGHT
    sar: Fraction = Fraction(1)
    hdr: str | None = None  # "pq" or "hlg"

    def output_size(self, max_side: int) -> tuple[int, int]:
        """(width, height) of the picture written, as shown."""
        w, h = self.display
        scale = min(1.0, max_side / max(w, h))
        return (max(2, round(w * scale)), max(2, round(h * scale))) if scale < 1 else (w, h)

    def describe(self, media: MediaInfo) -> None:
        """Record in ``media`` how frames of this geometry are shown."""
        media.decoded_size, media.display_size = list(self.decoded), list(self.display)
        media.rotation, media.mirrored = self.orientation.rotation, self.orientation.mirrored
        media.sample_aspect_ratio = f"{self.sar.numerator}:{self.sar.denominator}"
        media.hdr = self.hdr


def _sar(frame: Any, stream: Any) -> Fraction:
    for source in (stream.codec_context if stream is not None else None, stream):
        ratio = getattr(source, "sample_aspect_ratio", None) if source is not None else None
        if ratio and ratio.numerator > 0 and ratio.denominator > 0:
            return Fraction(ratio.numerator, ratio.denominator)
    return Fraction(1)


def geometry(frame: Any, stream: Any = None) -> Geometry:
    orientation = frame_orientation(frame)
    sar = _sar(frame, stream)
    width = max(2, round(frame.width * sar)) if sar != 1 else frame.width
    hdr = {TRC_PQ: "pq", TRC_HLG: "hlg"}.get(int(frame.color_trc or 0))
    return Geometry((frame.width, frame.height), orientation.shown_size(width, frame.height), orientation, sar, hdr)


def to_rgb(frame: Any, geo: Geometry, max_side: int) -> np.ndarray:
    """The frame as shown, (H, W, 3) uint8. Scaling happens in the decoded orientation (one
    swscale call that also converts the colours), then the turn: the same pixels either way."""
    out_w, out_h = geo.output_size(max_side)
    w, h = (out_h, out_w) if geo.orientation.swaps_sides else (out_w, out_h)
    size: dict[str, Any] = {}
    if (w, h) != (frame.width, frame.height):
        # AREA averages when shrinking; when only the sample aspect ratio stretches, bicubic (ffmpeg's default).
        size = {"width": w, "height": h, "interpolation": "AREA" if w <= frame.width and h <= frame.height else "BICUBIC"}
    colour: dict[str, Any] = {}
    if int(frame.color_range or 0) == RANGE_FULL:
        colour["src_color_range"] = RANGE_FULL
    if geo.hdr is None:
        rgb = frame.to_ndarray(format="rgb24", **size, **colour)
    else:
        rgb = tone_map(frame.to_ndarray(format="rgb48le", **size, **colour), geo.hdr)
    return geo.orientation.apply(rgb)


# ---- HDR ----------------------------------------------------------------------------------------
# SMPTE ST 2084 (PQ) constants.
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
#: Linear BT.2020 -> BT.709 primaries.
_BT2020_TO_BT709 = np.array([[1.660491, -0.587641, -0.072850],
                             [-0.124550, 1.132900, -0.008349],
                             [-0.018151, -0.100579, 1.118730]], dtype=np.float32)
#: Nominal white, as zscale's ``npl=100``: linear 1.0 is 100 cd/m2.
_REFERENCE_WHITE = 100.0
#: Signal peak (in units of reference white) when a file carries no mastering metadata: ffmpeg's
#: tonemap filter assumes 12 then.
_DEFAULT_PEAK = 12.0


def _pq_to_linear(e: np.ndarray) -> np.ndarray:
    p = np.power(np.clip(e, 0, 1), 1 / _M2)
    return np.power(np.maximum(p - _C1, 0) / (_C2 - _C3 * p), 1 / _M1) * (10000 / _REFERENCE_WHITE)


def _hlg_to_linear(e: np.ndarray) -> np.ndarray:
    """BT.2100 HLG: inverse OETF, then the OOTF for a 1000 cd/m2 display (system gamma 1.2)."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(e, 0, 1)
    scene = np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)
    luma = 0.2627 * scene[..., 0] + 0.6780 * scene[..., 1] + 0.0593 * scene[..., 2]
    return scene * np.power(np.maximum(luma, 1e-9), 0.2)[..., None] * (1000 / _REFERENCE_WHITE)


def _hable(x: np.ndarray | float) -> Any:
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (x * a + b * c) + d * e) / (x * (x * a + b) + d * f) - e / f


def _bt1886_encode(linear: np.ndarray) -> np.ndarray:
    """Display light to a BT.709 signal: the inverse of BT.1886's gamma 2.4 (what zimg does for
    display-referred linear light, and so what ffmpeg's recipe gives)."""
    return np.power(np.clip(linear, 0, 1), 1 / 2.4)


def tone_map(rgb48: np.ndarray, transfer: str) -> np.ndarray:
    """BT.2020 PQ/HLG RGB (uint16, non-linear) to BT.709 SDR uint8: linearize, convert the
    primaries, Hable on the brightest channel (ffmpeg's tonemap filter, desat 0), BT.1886 gamma."""
    signal = rgb48.astype(np.float32) / 65535.0
    linear = _pq_to_linear(signal) if transfer == "pq" else _hlg_to_linear(signal)
    linear = linear @ _BT2020_TO_BT709.T
    brightest = np.maximum(linear.max(axis=-1, keepdims=True), 1e-6)
    mapped = linear * (_hable(brightest) / _hable(_DEFAULT_PEAK) / brightest)
    return np.round(_bt1886_encode(mapped) * 255).astype(np.uint8)
