"""Which video track of a file to decode: the one a player (or ``ffmpeg``) shows."""

from __future__ import annotations

from typing import Any

import av.stream

#: Tracks that are pictures about the video, not the video: cover art, chapter thumbnails.
_NOT_THE_VIDEO = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails


def pick_video_stream(container: Any) -> Any | None:
    """The main video track: not a cover picture or a thumbnail track; one that moves before a
    one-frame track (an animated AVIF's still primary picture); the one marked default first, then
    the largest picture, then the first. None if the file has no such track."""
    candidates = [s for s in container.streams.video if not (s.disposition & _NOT_THE_VIDEO)]
    if not candidates:
        return None

    def rank(stream: Any) -> tuple[bool, bool, int, int]:
        ctx = stream.codec_context
        area = (ctx.width * ctx.height) if ctx is not None else 0
        return stream.frames != 1, bool(stream.disposition & av.stream.Disposition.default), area, -stream.index

    return max(candidates, key=rank)


def only_cover_pictures(container: Any) -> bool:
    return bool(container.streams.video) and pick_video_stream(container) is None
