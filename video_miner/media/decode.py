"""Decoding a file's sampled frames with PyAV, as a player shows them: straight through, converting
only the frames sampled, seeking across long gaps, skipping never-sampled non-reference frames;
animated images as the videos they are."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.stream
import numpy as np
from PIL import Image

from ..config import ExtractConfig
from ..errors import CorruptMedia, NoVideoStream, UnsupportedCodec
from ..records import FrameRecord, MediaInfo
from ..store.layout import ExtractionIndex
from .animated import pillow_frames
from .formats import STILL_FORMATS, check_pixels, is_image_container
from .picture import Geometry, geometry, to_rgb
from .prefilter import Prefilter
from .sampler import Sampler
from .tracks import only_cover_pictures, pick_video_stream
from .writer import FrameWriter

log = logging.getLogger(__name__)
#: libavformat's flag of formats without timestamps.
AVFMT_NOTIMESTAMPS = 0x80
#: Seek instead of decoding through when the next sample is this many keyframe gaps away.
SEEK_GOPS = 4
#: Before two keyframes have been seen the GOP is unknown: seek only across gaps this long.
SEEK_UNKNOWN_GOP_S = 20.0
#: Progress of one video: seconds into it, and its duration when known.
Progress = Callable[[float, float | None], None]


@dataclass
class Extraction:
    frames: list[FrameRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Frames the decoder produced, kept or not (seeking keeps this far below the video's length).
    decoded: int = 0
    #: How the video was decoded and is shown: track, codec, sizes, rotation (the manifest's media fields).
    media: MediaInfo = field(default_factory=MediaInfo)

    def index(self, video_id: str) -> ExtractionIndex:
        return ExtractionIndex(video_id, self.frames, self.warnings, self.media)


def open_media(path: Path) -> Any:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise CorruptMedia(f"{path.name}: not a readable media file ({exc})") from exc
    except av.error.FFmpegError as exc:
        raise CorruptMedia(f"{path.name}: cannot open ({exc})") from exc


def every_frame_small(path: Path, size: tuple[int, int], threads: int) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of ``path``'s video track (the one the extract stage decodes) as (seconds from
    the file's start, RGB picture of ``size``): what a model of whole videos (shot boundaries) reads.
    Animated images have no shots: nothing."""
    with open_media(path) as container:
        stream = pick_video_stream(container)
        if stream is None or is_image_container(container):
            return
        for other in container.streams:
            if other is not stream:
                other.discard = av.stream.Discard.all
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        start = timeline_start(container, stream)
        clock = BestEffortClock()
        for decoded, frame in enumerate(container.decode(stream)):
            t = _frame_time(frame, start, float(stream.average_rate or 25), decoded, clock)
            yield t, frame.to_ndarray(width=size[0], height=size[1], format="rgb24")


def bits_per_pixel(container: Any, stream: Any, path: Path | None = None) -> float:
    """The stream's bits per pixel per frame: how hard it was compressed (0 when unknown)."""
    ctx = stream.codec_context
    rate = stream.bit_rate or container.bit_rate
    if not rate and path is not None and container.duration:
        rate = path.stat().st_size * 8 / (container.duration / av.time_base)
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if not rate or not fps or ctx is None or not ctx.width or not ctx.height:
        return 0.0
    return float(f"{rate / (ctx.width * ctx.height * fps):.4g}")


def extract_frames(path: Path, out_dir: Path, video_id: str, cfg: ExtractConfig, threads: int,
                   prefilter: Prefilter | None = None, progress: Progress | None = None) -> Extraction:
    """Decode ``path``'s sampled frames into ``out_dir``. With a ``prefilter``, each sampled frame
    gets its measures and only those it passes are written. ``progress(seconds, duration)`` hears
    how far into the video each sampled frame is."""
    result = Extraction()
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = FrameWriter(out_dir, video_id, cfg, prefilter, media=result.media)
    with open_media(path) as container:
        if is_image_container(container):
            _extract_animation(container, path, writer, result)
        else:
            decoder = _VideoDecoder(container, path, threads, writer, result, progress)
            decoder.run()
            if not result.frames and not result.warnings and decoder.promised():
                # A damaged index (a huge stsz, a bad stco) ends demuxing at once, without an error.
                raise CorruptMedia(f"{path.name}: no frame could be decoded, though its header promises "
                                   f"{decoder.duration:.1f} s of video")
    if not result.frames and result.warnings:
        raise CorruptMedia(f"{path.name}: no frame could be decoded ({result.warnings[0]})")
    return result


def _extract_animation(container: Any, path: Path, writer: FrameWriter, result: Extraction) -> None:
    """A GIF, APNG or animated WebP: a video if it has more than one frame, else a still image."""
    stream = container.streams.video[0] if container.streams.video else None
    frames: Iterator[Any] = iter(())
    count = 0
    peeked: list[Any] = []
    if stream is not None and stream.codec_context is not None:
        check_pixels(path, stream.codec_context.width, stream.codec_context.height, writer.cfg.max_pixels)
        decoded = container.decode(stream)
        try:
            peeked = [f for _, f in zip(range(2), decoded, strict=False)]
            frames, count = decoded, len(peeked)
        except av.error.FFmpegError:  # e.g. animated WebP: PyAV's FFmpeg has no decoder for it
            peeked = []
    if not peeked:
        count, frames = pillow_frames(path, writer.cfg.max_pixels)
    if count < 2:
        raise NoVideoStream(f"{path.name} is a still image, not a video")
    sampler = Sampler(writer.cfg)
    start = timeline_start(container, stream) if stream is not None else Fraction(0)
    result.media.track = stream.index if stream is not None else 0
    # One frame at a time, never the whole animation in a list (a 300-frame GIF is 600 MB decoded).
    for k, frame in enumerate(itertools.chain(peeked, frames)):
        result.decoded += 1
        t = _frame_time(frame, start, 1.0, 0) if isinstance(frame, av.VideoFrame) else frame.time
        if sampler.past_end(t):
            break
        if not sampler.due(t):
            continue
        if isinstance(frame, av.VideoFrame):
            check_pixels(path, frame.width, frame.height, writer.cfg.max_pixels)
            geo = geometry(frame, stream)
            rgb = to_rgb(frame, geo, writer.cfg.max_side)
        else:
            h, w = frame.rgb.shape[:2]
            geo = Geometry((w, h), (w, h))
            out_w, out_h = geo.output_size(writer.cfg.max_side)
            rgb = frame.rgb if (out_w, out_h) == (w, h) else \
                np.asarray(Image.fromarray(frame.rgb).resize((out_w, out_h), Image.Resampling.BOX))
        result.frames.append(writer.keep(t, k, rgb, geo))
        sampler.take(t)
        if sampler.full:
            break


@dataclass
class _Pass:
    """How one pass of decoding (from a seek, or from the start) ended."""

    #: The next instant to seek to, when the gap to it is long.
    reseek: float | None = None
    #: A seek landed past the instant wanted (or on nothing): aim earlier.
    landed_late: bool = False


class _VideoDecoder:
    """One video file's decode/seek loop. A pass decodes from where the demuxer is; it ends at the
    end, at ``end``/``max_frames``, or where the next sample is far enough to seek to instead."""

    def __init__(self, container: Any, path: Path, threads: int, writer: FrameWriter, result: Extraction,
                 progress: Progress | None) -> None:
        self.container, self.path, self.writer, self.result, self.progress = container, path, writer, result, progress
        self.cfg = writer.cfg
        self.stream = self._open_stream(threads)
        self.sampler = Sampler(self.cfg)
        self.start = timeline_start(container, self.stream)
        self.duration = _duration(container, self.stream)
        if self.cfg.end is not None and self.duration is not None:
            self.duration = min(self.duration, self.cfg.end)
        # Keyframe spacing, from two keyframes in a row (the last one before a seek and the first
        # after it are not in a row: their distance is the seek's).
        self.gop = 0.0
        self._last_key: float | None = None
        #: The latest instant decoded (seeking skips frames, so a count of them says little).
        self.reached = 0.0
        self.rate = float(self.stream.average_rate or self.stream.guessed_rate or 25)
        self.aim_back = 0.0
        # Raw H.264/HEVC elementary streams carry no timestamps to seek by (and an attempt reads to
        # the end); their frames are timed as ffmpeg times them, at the rate the bitstream declares,
        # not at the demuxer's 25 fps default.
        self.seekable = not container.format.flags & AVFMT_NOTIMESTAMPS
        if not self.seekable:
            self.rate = float(self.stream.guessed_rate or self.rate)
        writer.bpp = bits_per_pixel(container, self.stream, path)
        self.result.media.track, self.result.media.codec = self.stream.index, self.stream.codec_context.name

    def _open_stream(self, threads: int) -> Any:
        container, path = self.container, self.path
        stream = pick_video_stream(container)
        if stream is None:
            what = "only a cover picture" if only_cover_pictures(container) else "no video stream"
            raise NoVideoStream(f"{path.name} has {what}")
        if stream.codec_context is None:
            # A stream FFmpeg has no decoder for (or a damaged codec tag): PyAV gives it no codec context.
            tag = getattr(stream, "codec_tag", None) or "unknown"
            raise UnsupportedCodec(f"{path.name}: no decoder for its video codec ({tag})")
        if stream.frames == 1 and path.suffix.lower() in STILL_FORMATS:
            raise NoVideoStream(f"{path.name} is a still image, not a video")
        check_pixels(path, stream.codec_context.width, stream.codec_context.height, self.cfg.max_pixels)
        # Only the chosen track is demuxed and decoded.
        for other in container.streams:
            if other is not stream:
                other.discard = av.stream.Discard.all
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if self.cfg.mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        return stream

    def promised(self) -> bool:
        """Whether the header says there is video at the first instant to sample."""
        return self.duration is not None and self.duration > self.cfg.start

    def run(self) -> None:
        seek_to: float | None = self.cfg.start if self.cfg.start > 0 else None
        while True:
            aim = None if seek_to is None else max(0.0, seek_to - self.aim_back)
            seeked = aim is not None and self.seekable and _seek(self.container, self.stream, self.start, aim)
            if aim is not None and not seeked:
                self.seekable = False  # a raw elementary stream: decode on from where it is
            ended = self._pass(seek_to if seeked else None)
            if ended.landed_late and aim and seek_to is not None and \
                    (self.duration is None or seek_to < self.duration):
                # Files without an index (MPEG-TS, MPEG-PS, raw streams) seek by bytes and can land
                # past the instant, or on frames that do not decode until the next keyframe: aim
                # earlier, for the rest of this file, down to its start.
                self.aim_back = SEEK_UNKNOWN_GOP_S if self.aim_back == 0 else self.aim_back * 4
                continue
            if ended.reseek is None:
                return
            seek_to = ended.reseek

    def _pass(self, seeked_to: float | None) -> _Pass:
        """Decode from where the demuxer is. ``seeked_to``: the instant a seek aimed at, if one did."""
        first: float | None = None
        self._last_key = None
        clock = BestEffortClock()  # the decoder starts over after a seek, and so do FFmpeg's counts
        ended = _Pass()
        try:
            # The lambda reads next_t as it advances: late binding is the point here.
            upcoming = None if self.sampler.keyframes_only else lambda: self.sampler.next_t
            for frame in _decode(self.container, self.stream, self.start, upcoming):
                t = _frame_time(frame, self.start, self.rate, self.result.decoded, clock)
                self.result.decoded += 1
                self.reached = max(self.reached, t)
                if first is None:
                    first = t
                    if seeked_to is not None and t > seeked_to + 1e-6:
                        break  # landed past the instant wanted: aim earlier
                if not self._keep_going(frame, t, ended):
                    break
        except av.error.FFmpegError as exc:
            reached = f"{self.reached:.1f} s" + (f" of {self.duration:.1f} s" if self.duration else "")
            self.result.warnings.append(f"decoding stopped at {reached}: {exc}")
            log.warning("%s: decoding stopped at %s: %s; keeping %d frames", self.path.name, reached, exc,
                        len(self.result.frames))
        ended.landed_late = seeked_to is not None and (first is None or first > seeked_to + 1e-6)
        return ended

    def _keep_going(self, frame: Any, t: float, ended: _Pass) -> bool:
        """Sample ``frame`` if it is due; False when this pass ends here (``ended`` says why)."""
        sampler = self.sampler
        if frame.key_frame:
            if self._last_key is not None and t > self._last_key:
                self.gop = t - self._last_key
            self._last_key = t
        if sampler.past_end(t):
            return False
        if not sampler.due(t, frame.key_frame):
            return True
        check_pixels(self.path, frame.width, frame.height, self.cfg.max_pixels)  # a resolution change mid-stream
        geo = geometry(frame, self.stream)
        if self.result.media.pixel_format is None:
            self.result.media.pixel_format = frame.format.name
        self.result.frames.append(self.writer.keep(t, round(t * self.rate), to_rgb(frame, geo, self.cfg.max_side), geo))
        if self.progress is not None:
            self.progress(t, self.duration)
        sampler.take(t)
        if sampler.full:
            return False
        if sampler.keyframes_only:
            return True
        if self.seekable and sampler.next_t - t > (SEEK_GOPS * self.gop if self.gop > 0 else SEEK_UNKNOWN_GOP_S):
            ended.reseek = sampler.next_t
            return False
        return True


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def timeline_start(container: Any, stream: Any) -> Fraction:
    """Where the file's timeline starts. Times count from here, as in ffmpeg and players (``-ss 5``
    is 5 s into the video): an MPEG-TS starts at 1.4 s or at its camera's clock, hours in, a
    Matroska file often one frame in, a fragmented MP4 at its first frame's reordering delay."""
    if container.start_time is not None:
        return Fraction(container.start_time, av.time_base)
    if stream.start_time is not None and stream.time_base:
        return Fraction(stream.start_time) * stream.time_base
    return Fraction(0)


def _seek(container: Any, stream: Any, start: Fraction, seconds: float) -> bool:
    """To the keyframe at or before ``seconds`` after ``start``; False where the file cannot seek."""
    if not stream.time_base:
        return False
    target = int((Fraction(seconds) + start) / stream.time_base)
    try:
        # Back to the start: timestamp 0 (or the start, if negative) lands on the first packet even
        # where a byte-seeking demuxer would skip the first keyframe aiming at its exact time.
        container.seek(target if seconds > 0 else min(0, target), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        return False
    return True


def _decode(container: Any, stream: Any, start: Fraction, next_sample: Callable[[], float] | None) -> Iterator[Any]:
    """The stream's frames from where the demuxer is. With ``next_sample``, a packet shown before
    the next sampling instant is decoded only if other frames refer to it: a non-reference frame
    (most B-frames, half the frames of a typical H.264 stream) that is never sampled is skipped
    outright. The decision uses the packet's own presentation time, so the sampled frames are
    unchanged."""
    codec = stream.codec_context
    base = float(stream.time_base) if stream.time_base else 0.0
    offset = float(start)
    for packet in container.demux(stream):
        if next_sample is not None:
            early = packet.pts is not None and base > 0 and packet.pts * base - offset + 1e-6 < next_sample()
            codec.skip_frame = "NONREF" if early else "DEFAULT"
        yield from codec.decode(packet)


class BestEffortClock:
    """Which timestamp a decoded frame is shown at, chosen as FFmpeg chooses its
    ``best_effort_timestamp`` (libavcodec's ``guess_correct_pts``): the frame's pts, unless pts go
    backwards more often than the packets' dts do. An AVI of packed B-frames (old XviD/DivX) carries
    pts in decode order: trusting them puts frames a frame early or late."""

    def __init__(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def pick(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


def _frame_time(frame: Any, start: Fraction, rate: float, decoded: int, clock: BestEffortClock | None = None) -> float:
    """Seconds after the timeline's start, computed exactly (a frame at 1.033 s of a file starting
    at 0.033 s is at 1 s, not at 0.99999)."""
    ts = frame.pts if clock is None else clock.pick(frame.pts, frame.dts)
    if ts is not None and frame.time_base:
        return float(ts * frame.time_base - start)
    return decoded / rate

