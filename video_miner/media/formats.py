"""Which files are videos: the extensions listed folders and object-store prefixes are expanded
to, and the containers that hold pictures rather than videos."""

from __future__ import annotations

from typing import Any

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
