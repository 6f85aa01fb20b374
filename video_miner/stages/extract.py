"""Stage 2: decode a video with PyAV, run the prefilters on each sampled frame and write the
frames that pass as JPEGs."""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error
from PIL import Image

from async_pipeline import StageMessage, StageOutput

from ..config import ExtractConfig
from ..errors import CorruptMedia, NoVideoStream, UnsupportedCodec
from ..fsutil import atomic_write_json, link_or_copy, read_json
from ..prefilter import Prefilter
from ..registry import State
from .base import MinerStage

log = logging.getLogger(__name__)
INDEX = "frames.json"
#: Seek instead of decoding through when the next sample is this many keyframe gaps away.
SEEK_GOPS = 4
#: Before two keyframes have been seen the GOP is unknown: seek only across gaps this long.
SEEK_UNKNOWN_GOP_S = 20.0
_STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "tiff_pipe")


@dataclass
class Extraction:
    frames: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Frames the decoder produced, kept or not (seeking keeps this far below the video's length).
    decoded: int = 0


def frame_name(video_id: str, seconds: float) -> str:
    return f"{video_id}_{round(seconds * 1000):09d}ms.jpg"


def _open(path: Path) -> Any:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise CorruptMedia(f"{path.name}: not a readable media file ({exc})") from exc
    except av.error.FFmpegError as exc:
        raise CorruptMedia(f"{path.name}: cannot open ({exc})") from exc


def extract_frames(path: Path, out_dir: Path, video_id: str, cfg: ExtractConfig, threads: int,
                   prefilter: Prefilter | None = None) -> Extraction:
    """Decode straight through, converting only the frames sampled; seek across long gaps.
    With a ``prefilter``, each sampled frame gets its measures and only those it passes are written."""
    result = Extraction()
    out_dir.mkdir(parents=True, exist_ok=True)
    with _open(path) as container:
        if container.format.name in _STILL_FORMATS or container.format.name.endswith("_pipe"):
            raise NoVideoStream(f"{path.name} is a still image, not a video")
        if not container.streams.video:
            raise NoVideoStream(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise UnsupportedCodec(f"{path.name}: no decoder for codec {stream.codec.name if stream.codec else '?'}")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        keyframes_only = cfg.mode == "keyframes"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        interval = 0.0 if keyframes_only else (1.0 / cfg.fps if cfg.mode == "fps" else cfg.every_seconds)
        next_t = cfg.start
        seek_to: float | None = cfg.start if cfg.start > 0 else None
        keyframe_times: list[float] = []
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        while True:
            reseek: float | None = None
            try:
                # The lambda reads next_t as it advances: late binding is the point here.
                upcoming = None if keyframes_only else lambda: next_t  # noqa: B023
                for frame in _decode(container, stream, seek_to, upcoming):
                    t = _frame_time(frame, rate, result.decoded)
                    result.decoded += 1
                    if frame.key_frame and (not keyframe_times or t > keyframe_times[-1]):
                        keyframe_times = [*keyframe_times[-1:], t]
                    if cfg.end is not None and t > cfg.end:
                        break
                    if t + 1e-6 < next_t:
                        continue
                    data = _encode(frame, cfg)
                    name, index = frame_name(video_id, t), round(t * rate)
                    row: dict[str, Any] = {"file": name, "t": round(t, 6), "index": index}
                    if prefilter is not None:
                        row |= prefilter.check(data, index)
                    if row.get("decision") is None:
                        (out_dir / name).write_bytes(data)
                    result.frames.append(row)
                    if cfg.max_frames is not None and len(result.frames) >= cfg.max_frames:
                        break
                    if keyframes_only:
                        continue
                    next_t += interval * max(1, math.floor((t - next_t) / interval + 1e-9) + 1)
                    gop = keyframe_times[1] - keyframe_times[0] if len(keyframe_times) == 2 else 0.0
                    if next_t - t > (SEEK_GOPS * gop if gop > 0 else SEEK_UNKNOWN_GOP_S):
                        reseek = next_t
                        break
            except av.error.FFmpegError as exc:
                result.warnings.append(f"decoding stopped after {result.decoded} frames: {exc}")
                log.warning("%s: decoding stopped after %d frames: %s; keeping %d frames", path.name, result.decoded,
                            exc, len(result.frames))
            if reseek is None:
                break
            seek_to = reseek
    if not result.frames and result.warnings:
        raise CorruptMedia(f"{path.name}: no frame could be decoded ({result.warnings[0]})")
    return result


def _decode(container: Any, stream: Any, seek_to: float | None,
            next_sample: Callable[[], float] | None) -> Iterator[Any]:
    """The stream's frames from ``seek_to``. With ``next_sample``, a packet shown before the next
    sampling instant is decoded only if other frames refer to it: a non-reference frame (most
    B-frames, half the frames of a typical H.264 stream) that is never sampled is skipped outright.
    The decision uses the packet's own presentation time, so the sampled frames are unchanged."""
    if seek_to is not None and stream.time_base:
        container.seek(int(seek_to / stream.time_base), stream=stream, backward=True, any_frame=False)
    codec = stream.codec_context
    base = float(stream.time_base) if stream.time_base else 0.0
    for packet in container.demux(stream):
        if next_sample is not None:
            early = packet.pts is not None and base > 0 and packet.pts * base + 1e-6 < next_sample()
            codec.skip_frame = "NONREF" if early else "DEFAULT"
        yield from codec.decode(packet)


def _frame_time(frame: Any, rate: float, decoded: int) -> float:
    if frame.time is not None:
        return float(frame.time)
    return decoded / rate


def _encode(frame: Any, cfg: ExtractConfig) -> bytes:
    w, h = frame.width, frame.height
    scale = min(1.0, cfg.max_side / max(w, h))
    size = {"width": max(2, round(w * scale)), "height": max(2, round(h * scale)), "interpolation": "AREA"} \
        if scale < 1 else {}
    # to_ndarray converts in one swscale call; VideoFrame.to_image is over 10x slower per frame.
    buf = io.BytesIO()
    Image.fromarray(frame.to_ndarray(format="rgb24", **size)).save(buf, "JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue()


class ExtractStage(MinerStage):
    thread_safe = True

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
        result = self._extract(msg.input_path, out_dir, video_id)
        self.ctx.counters.add(frames_extracted=len(result.frames))
        self.ctx.registry.set_state(video_id, State.EXTRACTED, n_extracted=len(result.frames),
                                    warning="; ".join(result.warnings) or None)
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
                                    Prefilter(self.ctx.config.filter))
            _commit(out_dir, video_id, result)
            done = out_dir
            return result
        finally:
            self.ctx.same_content.settle(key, path, done)


def _commit(out_dir: Path, video_id: str, result: Extraction) -> None:
    """The index is the commit point: frames without it are an interrupted extraction."""
    atomic_write_json(out_dir / INDEX, {"video_id": video_id, "frames": result.frames, "warnings": result.warnings})


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
    return Extraction(frames=frames, warnings=list(src["warnings"]), decoded=0)


def read_index(frames_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = read_json(frames_dir / INDEX)
    return data
