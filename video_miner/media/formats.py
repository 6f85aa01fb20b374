"""Which files are videos: the extensions listed folders and object-store prefixes are expanded
to, the containers that hold pictures rather than videos, and the largest picture decoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TooLarge

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".f4v", ".wmv",
     ".asf", ".3gp", ".ogv", ".vob", ".mxf", ".y4m",
     # Raw elementary streams, as a Raspberry Pi camera or an NVR export writes them.
     ".h264", ".264", ".h265", ".265", ".hevc",
     # Animated images are videos too (a one-frame one fails as a still image).
     ".gif", ".apng", ".webp", ".avif"}
)
#: Image formats in video containers (HEIF: MP4's boxes), one frame when not animated.
STILL_FORMATS = frozenset({".avif", ".heic", ".heif"})
#: Demuxers of pictures rather than videos (one file, one or more frames).
_IMAGE_FORMATS = {"gif", "apng", "image2", "webp_pipe", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe"}


def is_image_container(container: Any) -> bool:
    name = container.format.name
    return name in _IMAGE_FORMATS or name.endswith("_pipe")


def check_pixels(path: Path, width: int, height: int, limit: int) -> None:
    """Refuse pictures past ``extract.max_pixels`` before decoding them (their size is in the header)."""
    if width * height > limit:
        raise TooLarge(f"{path.name}: {width}x{height} pictures ({width * height / 1e6:.0f} MP) are more than "
                       f"extract.max_pixels ({limit / 1e6:.0f} MP)")
