"""Stage 2: decode a video with PyAV as a player shows it (:mod:`video_miner.media`), run the
prefilters on each sampled frame and write the frames that pass as JPEGs."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
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

from async_pipeline import StageMessage, StageOutput

from ..config import ExtractConfig
from ..errors import CorruptMedia, NoVideoStream, UnsupportedCodec
from ..fsutil import atomic_write_json, link_or_copy, read_json
from ..media.animated import is_image_container, pillow_frames
from ..media.picture import Geometry, geometry, to_rgb
from ..media.tracks import only_cover_pictures, pick_video_stream
from ..prefilter import Prefilter
from ..registry import State
from .base import MinerStage

log = logging.getLogger(__name__)
INDEX = "frames.json"
#: libavformat's flag of formats without timestamps.
AVFMT_NOTIMESTAMPS = 0x80
#: Image formats in video containers (HEIF: MP4's boxes), one frame when not animated.
STILL_FORMATS = frozenset({".avif", ".heic", ".heif"})
#: Seek instead of decoding through when the next sample is this many keyframe gaps away.
SEEK_GOPS = 4
#: Before two keyframes have been seen the GOP is unknown: seek only across gaps this long.
SEEK_UNKNOWN_GOP_S = 20.0


@dataclass
class Extraction:
    frames: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Frames the decoder produced, kept or not (seeking keeps this far below the video's length).
    decoded: int = 0
    #: How the video was decoded and is shown: track, codec, sizes, rotation (the manifest's media fields).
    media: dict[str, Any] = field(default_factory=dict)


def frame_name(video_id: str, seconds: float) -> str:
    return f"{video_id}_{round(seconds * 1000):09d}ms.jpg"


def _open(path: Path) -> Any:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise CorruptMedia(f"{path.name}: not a readable media file ({exc})") from exc
    except av.error.FFmpegError as exc:
        raise CorruptMedia(f"{path.name}: cannot open ({exc})") from exc


@dataclass
class Sampler:
    """Which instants to keep: every 1/fps or ``every_seconds`` from ``start`` (or every keyframe),
    up to ``end`` and ``max_frames``. Shared by files, animations and live streams."""

    cfg: ExtractConfig
    next_t: float = 0.0
    taken: int = 0

    def __post_init__(self) -> None:
        self.next_t = self.cfg.start

    @property
    def keyframes_only(self) -> bool:
        return self.cfg.mode == "keyframes"

    @property
    def interval(self) -> float:
        return 1.0 / self.cfg.fps if self.cfg.mode == "fps" else self.cfg.every_seconds

    def past_end(self, t: float) -> bool:
        return self.cfg.end is not None and t > self.cfg.end

    def due(self, t: float, key_frame: bool = True) -> bool:
        if self.keyframes_only:
            return key_frame and t + 1e-6 >= self.cfg.start
        return t + 1e-6 >= self.next_t

    def take(self, t: float) -> None:
        """``t`` was kept: the next instant is the first grid point after it."""
        self.taken += 1
        if not self.keyframes_only:
            self.next_t += self.interval * max(1, math.floor((t - self.next_t) / self.interval + 1e-9) + 1)

    @property
    def full(self) -> bool:
        return self.cfg.max_frames is not None and self.taken >= self.cfg.max_frames


@dataclass
class FrameWriter:
    """Encodes each sampled picture, runs the prefilters on it and writes those that pass."""

    out_dir: Path
    video_id: str
    cfg: ExtractConfig
    prefilter: Prefilter | None
    #: Bits per pixel of the source (how compressed it is), the same for each of its frames.
    bpp: float = 0.0
    #: How the source is decoded and shown (track, codec, sizes, rotation), for the manifest.
    media: dict[str, Any] = field(default_factory=dict)

    def keep(self, t: float, index: int, rgb: np.ndarray, geo: Geometry) -> dict[str, Any]:
        """The frame's row: measures and, if a prefilter dropped it, the decision (then no file)."""
        data = _jpeg(rgb, self.cfg.jpeg_quality)
        name = frame_name(self.video_id, t)
        row: dict[str, Any] = {"file": name, "t": round(t, 6), "index": index,
                               "pixels": geo.display[0] * geo.display[1], "bpp": self.bpp}
        if self.prefilter is not None:
            row |= self.prefilter.check(data, index)
            # Pixels of the picture, not of black bars around it: a letterboxed re-upload has fewer.
            row["pixels"] = round(row["pixels"] * row.pop("content"))
        if row.get("decision") is None:
            (self.out_dir / name).write_bytes(data)
        if "display_size" not in self.media:  # as the first sampled frame shows it
            self.media.update(geo.describe(), bpp=self.bpp)
        return row


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


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
                   prefilter: Prefilter | None = None,
                   progress: Callable[[float, float | None], None] | None = None) -> Extraction:
    """Decode straight through, converting only the frames sampled; seek across long gaps.
    With a ``prefilter``, each sampled frame gets its measures and only those it passes are written.
    ``progress(seconds, duration)`` hears how far into the video each sampled frame is."""
    result = Extraction()
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = FrameWriter(out_dir, video_id, cfg, prefilter, media=result.media)
    with _open(path) as container:
        if is_image_container(container):
            _extract_animation(container, path, writer, result)
        else:
            _extract_video(container, path, threads, writer, result, progress)
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
        decoded = container.decode(stream)
        try:
            peeked = [f for _, f in zip(range(2), decoded, strict=False)]
            frames, count = decoded, len(peeked)
        except av.error.FFmpegError:  # e.g. animated WebP: PyAV's FFmpeg has no decoder for it
            peeked = []
    if not peeked:
        count, frames = pillow_frames(path)
    if count < 2:
        raise NoVideoStream(f"{path.name} is a still image, not a video")
    sampler = Sampler(writer.cfg)
    start = timeline_start(container, stream) if stream is not None else Fraction(0)
    result.media["track"] = stream.index if stream is not None else 0
    for k, frame in enumerate([*peeked, *frames] if peeked else frames):
        result.decoded += 1
        t = _frame_time(frame, start, 1.0, 0) if isinstance(frame, av.VideoFrame) else frame.time
        if sampler.past_end(t):
            break
        if not sampler.due(t):
            continue
        if isinstance(frame, av.VideoFrame):
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


def _extract_video(container: Any, path: Path, threads: int, writer: FrameWriter, result: Extraction,
                   progress: Callable[[float, float | None], None] | None = None) -> None:
    cfg = writer.cfg
    stream = pick_video_stream(container)
    if stream is None:
        what = "only a cover picture" if only_cover_pictures(container) else "no video stream"
        raise NoVideoStream(f"{path.name} has {what}")
    if stream.codec_context is None:
        raise UnsupportedCodec(f"{path.name}: no decoder for codec {stream.codec.name if stream.codec else '?'}")
    if stream.frames == 1 and path.suffix.lower() in STILL_FORMATS:
        raise NoVideoStream(f"{path.name} is a still image, not a video")
    # Only the chosen track is demuxed and decoded.
    for other in container.streams:
        if other is not stream:
            other.discard = av.stream.Discard.all
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    sampler = Sampler(cfg)
    if sampler.keyframes_only:
        stream.codec_context.skip_frame = "NONKEY"
    writer.bpp = bits_per_pixel(container, stream, path)
    result.media.update(track=stream.index, codec=stream.codec_context.name)
    seek_to: float | None = cfg.start if cfg.start > 0 else None
    start = timeline_start(container, stream)
    duration = _duration(container, stream)
    if cfg.end is not None and duration is not None:
        duration = min(duration, cfg.end)
    # Keyframe spacing, from two keyframes in a row (the last one before a seek and the first after
    # it are not in a row: their distance is the seek's).
    gop = 0.0
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    aim_back = 0.0
    # Raw H.264/HEVC elementary streams carry no timestamps to seek by (and an attempt reads to the
    # end); their frames are timed as ffmpeg times them, at the rate the bitstream declares, not at
    # the demuxer's 25 fps default.
    seekable = not container.format.flags & AVFMT_NOTIMESTAMPS
    if not seekable:
        rate = float(stream.guessed_rate or rate)
    while True:
        reseek: float | None = None
        aim = None if seek_to is None else max(0.0, seek_to - aim_back)
        seeked = aim is not None and seekable and _seek(container, stream, start, aim)
        if aim is not None and not seeked:
            seekable = False  # a raw elementary stream: decode on from where it is
        first: float | None = None
        last_key: float | None = None
        try:
            # The lambda reads next_t as it advances: late binding is the point here.
            upcoming = None if sampler.keyframes_only else lambda: sampler.next_t
            for frame in _decode(container, stream, start, upcoming):
                t = _frame_time(frame, start, rate, result.decoded)
                result.decoded += 1
                if first is None:
                    first = t
                    if seeked and seek_to is not None and t > seek_to + 1e-6:
                        break  # landed past the instant wanted: aim earlier (below)
                if frame.key_frame:
                    if last_key is not None and t > last_key:
                        gop = t - last_key
                    last_key = t
                if sampler.past_end(t):
                    break
                if not sampler.due(t, frame.key_frame):
                    continue
                geo = geometry(frame, stream)
                result.media.setdefault("pixel_format", frame.format.name)
                result.frames.append(writer.keep(t, round(t * rate), to_rgb(frame, geo, cfg.max_side), geo))
                if progress is not None:
                    progress(t, duration)
                sampler.take(t)
                if sampler.full:
                    break
                if sampler.keyframes_only:
                    continue
                if seekable and sampler.next_t - t > (SEEK_GOPS * gop if gop > 0 else SEEK_UNKNOWN_GOP_S):
                    reseek = sampler.next_t
                    break
        except av.error.FFmpegError as exc:
            result.warnings.append(f"decoding stopped after {result.decoded} frames: {exc}")
            log.warning("%s: decoding stopped after %d frames: %s; keeping %d frames", path.name, result.decoded,
                        exc, len(result.frames))
        if seeked and aim and seek_to is not None and (first is None or first > seek_to + 1e-6) and \
                (duration is None or seek_to < duration):
            # Files without an index (MPEG-TS, MPEG-PS, raw streams) seek by bytes and can land past
            # the instant, or on frames that do not decode until the next keyframe: aim earlier, for
            # the rest of this file, down to its start.
            aim_back = SEEK_UNKNOWN_GOP_S if aim_back == 0 else aim_back * 4
            continue
        if reseek is None:
            break
        seek_to = reseek


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


def _frame_time(frame: Any, start: Fraction, rate: float, decoded: int) -> float:
    """Seconds after the timeline's start, computed exactly (a frame at 1.033 s of a file starting
    at 0.033 s is at 1 s, not at 0.99999)."""
    if frame.pts is not None and frame.time_base:
        return float(frame.pts * frame.time_base - start)
    return decoded / rate


class ExtractStage(MinerStage):
    thread_safe = True
    progress_unit = "s"

    def __init__(self, ctx: Any, decoder_threads: int | None = None) -> None:
        super().__init__(ctx)
        workers = ctx.config.pipeline.extract_workers
        # Concurrent decoders share the cores instead of each grabbing all of them.
        self.decoder_threads = decoder_threads or max(1, (os.cpu_count() or 2) // workers)

    def handle(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata["video_id"]
        out_dir = self.ctx.frames_dir / video_id
        index_path = out_dir / INDEX
        row = self.ctx.registry.video(video_id)
        if row and row["state"] in (State.EXTRACTED, State.FILTERED) and index_path.exists():
            return msg.evolve(input_path=out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        assert msg.input_path is not None
        self.ctx.check_free_space(out_dir)
        result = self._extract(msg.input_path, out_dir, video_id)
        self.ctx.counters.add(frames_extracted=len(result.frames))
        self.ctx.registry.set_state(video_id, State.EXTRACTED, n_extracted=len(result.frames),
                                    warning="; ".join(result.warnings) or None, media_json=json.dumps(result.media))
        return msg.evolve(input_path=out_dir, metadata={"warnings": result.warnings})

    def _extract(self, path: Path, out_dir: Path, video_id: str) -> Extraction:
        """Decode and commit, unless an input with the same bytes was decoded in this run: then its
        frames. Only the first one's frames folder is shared, never its rows: they stay on disk."""
        key, earlier = self.ctx.same_content.claim(path)
        if earlier is not None and (src_dir := earlier.result()) is not None:  # waits while it decodes
            try:
                result = _same_frames(src_dir, out_dir, video_id)
                self.ctx.counters.add(videos_same_content=1)
                _commit(out_dir, video_id, result)
                return result
            except OSError as exc:  # its frames are gone (collected, cleaned up): decode after all
                log.debug("%s: cannot reuse the frames of identical %s (%s)", path.name, src_dir, exc)
                shutil.rmtree(out_dir, ignore_errors=True)
        done: Path | None = None
        try:
            result = extract_frames(path, out_dir, video_id, self.ctx.config.extract, self.decoder_threads,
                                    Prefilter(self.ctx.config.filter),
                                    lambda done, total: self.report_progress(video_id, done, total))
            _commit(out_dir, video_id, result)
            done = out_dir
            return result
        finally:
            self.ctx.same_content.settle(key, path, done)


def _commit(out_dir: Path, video_id: str, result: Extraction) -> None:
    """The index is the commit point: frames without it are an interrupted extraction."""
    atomic_write_json(out_dir / INDEX, {"video_id": video_id, "frames": result.frames, "warnings": result.warnings,
                                        "media": result.media})


def _same_frames(src_dir: Path, out_dir: Path, video_id: str) -> Extraction:
    """Another input's committed extraction of the same bytes, as this video's: its frames linked
    under this video's names, their rows (measures, decisions) unchanged."""
    src = read_index(src_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for row in src["frames"]:
        name = frame_name(video_id, row["t"])
        if row.get("decision") is None:  # written, not dropped by a prefilter
            link_or_copy(src_dir / row["file"], out_dir / name)
        frames.append({**row, "file": name})
    return Extraction(frames=frames, warnings=list(src["warnings"]), decoded=0, media=dict(src.get("media") or {}))


def read_index(frames_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = read_json(frames_dir / INDEX)
    return data
