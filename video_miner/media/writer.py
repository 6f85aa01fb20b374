"""Each sampled picture encoded once as a JPEG, measured and prefiltered in memory, and written
only if it passed: a dropped frame is never written, read back or decoded again."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ExtractConfig
from ..records import FrameRecord, MediaInfo
from ..store.files import write_new
from ..store.layout import frame_name
from .picture import Geometry
from .prefilter import Prefilter


@dataclass
class FrameWriter:
    out_dir: Path
    video_id: str
    cfg: ExtractConfig
    prefilter: Prefilter | None
    #: Bits per pixel of the source (how compressed it is), the same for each of its frames.
    bpp: float = 0.0
    #: How the source is decoded and shown, for the manifest: filled from the first sampled frame.
    media: MediaInfo = field(default_factory=MediaInfo)

    def keep(self, t: float, index: int, rgb: np.ndarray, geo: Geometry) -> FrameRecord:
        """The frame's record: measures and, if a prefilter dropped it, the decision (then no file)."""
        data = jpeg(rgb, self.cfg.jpeg_quality)
        frame = FrameRecord(frame_name(self.video_id, t), round(t, 6), index, geo.display[0] * geo.display[1], self.bpp)
        if self.prefilter is not None:
            self.prefilter.check(data, frame)
        if frame.decision is None:
            write_new(self.out_dir / frame.file, data)
        if self.media.display_size is None:  # as the first sampled frame shows it
            geo.describe(self.media)
            self.media.bpp = self.bpp
        elif [*geo.decoded] != self.media.decoded_size or [*geo.display] != self.media.display_size:
            frame.decoded_size, frame.display_size = [*geo.decoded], [*geo.display]  # the stream changed size
        return frame


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


#: Longer side of the small copies kept of frames the models did not keep (the gallery shows them).
THUMB_SIDE = 240


def thumbnail_jpeg(path: Path) -> bytes:
    """A small JPEG of the frame at ``path``."""
    with Image.open(path) as im:
        im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
        small = im.convert("RGB")
        small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return buf.getvalue()
