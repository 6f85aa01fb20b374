"""The cheap per-frame checks that run before the detector, on each sampled frame's JPEG bytes.

They run in the extract stage, while the frame is still in memory: a frame they drop is never
written, read back or decoded again, and the filter stage (the bottleneck: it holds the model)
spends its time on inference only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

from .config import FilterConfig
from .frame_quality import frame_difference, measure, open_gray
from .registry import Decision


@dataclass
class Prefilter:
    """Blur and static-frame checks for one video's frames, in time order."""

    cfg: FilterConfig
    #: (thumbnail, frame index) of the last frame that passed: static frames are compared with it.
    _last: tuple[Any, int] | None = field(default=None, init=False)

    def check(self, data: bytes, index: int) -> dict[str, Any]:
        """The frame's measures and, if a check drops it, the decision and reason.

        The measures come from the encoded JPEG, exactly what the detector and dedup see later.
        """
        blur, sharpness, phash, thumb, content = measure(open_gray(io.BytesIO(data)))
        row: dict[str, Any] = {"phash": phash, "blur": round(blur, 3), "sharpness": round(sharpness, 3),
                               "content": round(content, 4), "decision": None, "reason": None}
        if blur < self.cfg.blur_threshold:
            row.update(decision=Decision.FILTERED, reason=f"blurry (sharpness {blur:.1f} < {self.cfg.blur_threshold})")
            return row
        if self._last is not None and self.cfg.static_max_diff >= 0:
            diff = frame_difference(thumb, self._last[0])
            if diff <= self.cfg.static_max_diff:
                row.update(decision=Decision.FILTERED, reason=f"static: same as frame {self._last[1]} (difference {diff:.0f})")
                return row
        self._last = (thumb, index)
        # Byte-identical frames (the same video listed twice) share one detection.
        row["digest"] = hashlib.blake2b(data, digest_size=16).hexdigest()
        return row
