"""The cheap per-frame checks that run before the detector, on each sampled frame's JPEG bytes.

They run in the extract stage, while the frame is still in memory: a frame they drop is never
written, read back or decoded again, and the filter stage (the bottleneck: it holds the model)
spends its time on inference only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np

from ..config import FilterConfig
from ..records import Decision, FrameRecord
from .quality import frame_difference, measure, open_gray

#: How a static frame's reason starts: the tracker takes it for the frame it is the same as.
STATIC = "static: "


@dataclass
class Prefilter:
    """Blur and static-frame checks for one video's frames, in time order."""

    cfg: FilterConfig
    #: (thumbnail, seconds) of the last frame that passed: static frames are compared with it.
    _last: tuple[np.ndarray, float] | None = field(default=None, init=False)

    def check(self, data: bytes, frame: FrameRecord) -> None:
        """Give ``frame`` its measures and, if a check drops it, its decision and reason.

        The measures come from the encoded JPEG ``data``, exactly what the detector and dedup see
        later; they are of the picture inside black bars, whose share scales ``frame.pixels``.
        """
        gray = open_gray(io.BytesIO(data))
        blur, sharpness, phash, thumb, content = measure(gray)
        frame.phash, frame.blur, frame.sharpness = phash, round(blur, 3), round(sharpness, 3)
        # Pixels of the picture, not of black bars around it: a letterboxed re-upload has fewer.
        frame.pixels = round(frame.pixels * round(content, 4))
        if min(gray.size) < self.cfg.min_side:
            frame.decision = Decision.FILTERED
            frame.reason = f"too small to label ({gray.width}x{gray.height}, filter.min_side {self.cfg.min_side})"
            return
        if blur > self.cfg.max_blur:
            frame.decision = Decision.FILTERED
            frame.reason = (f"blurry: blur {blur:.2f} > filter.max_blur {self.cfg.max_blur} (its edges are as spread "
                            "as a motion-blurred or out-of-focus picture's)" if blur < 1 else "blank: no contrast at all")
            return
        if self._last is not None and self.cfg.static_max_diff >= 0:
            diff = frame_difference(thumb, self._last[0])
            if diff <= self.cfg.static_max_diff:
                frame.decision = Decision.FILTERED
                frame.reason = (f"{STATIC}same as the frame at {self._last[1]:.3f} s (its most changed patch differs "
                                f"by {diff:.0f} <= filter.static_max_diff {self.cfg.static_max_diff:g})")
                return
        self._last = (thumb, frame.t)
        # Byte-identical frames (the same video listed twice) share one detection.
        frame.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
