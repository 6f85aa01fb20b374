"""One live source (rtsp://, udp://, tcp://, srt://, rtmp://, live HLS/DASH, a V4L2 device): opened
with PyAV, retried with backoff while it is not up or after it drops, read at its own pace and
sampled at ``extract.fps`` in stream time. Each sampled frame is decoded as a player shows it, goes
through the prefilters and, if it passes, is written and handed on; the reader never waits for the
detector (the live pipeline's queue drops instead, as ``live.queue_policy`` says)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from async_pipeline import StageMessage

from ..config import ExtractConfig, MinerConfig
from ..errors import NoVideoStream
from ..media.decode import bits_per_pixel
from ..media.picture import geometry, to_rgb
from ..media.prefilter import Prefilter
from ..media.sampler import Sampler
from ..media.tracks import pick_video_stream
from ..media.writer import FrameWriter
from ..records import LiveFrame
from .stats import LiveStats

log = logging.getLogger(__name__)
#: A clock going back more than this within one connection is a restart of the stream's timeline.
CLOCK_JUMP_S = 1.0


@dataclass(frozen=True)
class Segment:
    """One connection to a source: a registry row of its own, so its frames commit as they come."""

    video_id: str
    source_id: str
    order: int
    folder: Path


#: (source, segment) -> a new segment; segment -> closed; message -> handed to the live pipeline.
OpenSegment = Callable[[], Segment]
CloseSegment = Callable[[Segment], None]
Emit = Callable[[StageMessage[LiveFrame]], None]


def live_extract(config: ExtractConfig) -> ExtractConfig:
    """The sampling settings that make sense for an endless stream (no start, end or frame cap)."""
    return config.model_copy(update={"start": 0.0, "end": None, "max_frames": None})


class LiveReader:
    """Reads one source (:meth:`run`, in a thread of its own) until the stream ends, the reconnect
    window passes, or ``stop`` is set."""

    def __init__(self, url: str, config: MinerConfig, stats: LiveStats, stop: threading.Event, open_segment: OpenSegment,
                 close_segment: CloseSegment, emit: Emit, options: dict[str, str] | None = None,
                 ends_cleanly: bool = False) -> None:
        self.url = url
        self.config = config
        self.stats = stats
        self.stop = stop
        self.open_segment, self.close_segment, self.emit = open_segment, close_segment, emit
        self.options = options or {}
        #: A clean end of stream means the source ended (an HLS playlist's ENDLIST), not that it dropped.
        self.ends_cleanly = ends_cleanly

    def _open(self) -> Any:
        live = self.config.live
        fmt = "v4l2" if self.url.startswith("/dev/video") else None
        # A live stream is probed for a moment, not FFmpeg's default 5 s: its first frames count.
        options = {"analyzeduration": "2000000", **live.ffmpeg_options, **self.options}
        # PyAV's timeout covers opening and every read, for every protocol.
        return av.open(self.url, format=fmt, options=options, timeout=(live.read_timeout_s, live.read_timeout_s),
                       metadata_errors="ignore")

    def run(self) -> None:
        live = self.config.live
        deadline = time.monotonic() + live.reconnect_timeout_s
        backoff, connected, lost_at = 0.5, False, None
        while not self.stop.is_set():
            try:
                container = self._open()
            except (av.error.FFmpegError, OSError) as exc:
                self.stats.error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    break
                self.stats.state = "retrying"
                log.info("%s: not up (%s); retrying in %.1fs", self.url, exc, backoff)
                self.stop.wait(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(2 * backoff, live.backoff_max_s)
                continue
            if lost_at is not None:
                self.stats.gap_seconds += time.monotonic() - lost_at
                self.stats.add(reconnects=1)
                log.warning("%s: back after %.1fs", self.url, time.monotonic() - lost_at)
            connected, backoff, self.stats.state, self.stats.error = True, 0.5, "live", None
            ended = False
            try:
                ended = self._read(container)
            except (av.error.FFmpegError, OSError, NoVideoStream) as exc:
                self.stats.error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: dropped (%s)", self.url, exc)
            finally:
                container.close()
            if ended or self.stop.is_set():
                break
            lost_at = time.monotonic()
            deadline = lost_at + live.reconnect_timeout_s
            self.stats.state = "retrying"
            log.info("%s: the stream stopped; trying it again for up to %gs", self.url, live.reconnect_timeout_s)
        if connected or self.stop.is_set():
            self.stats.state = "ended"
        else:
            self.stats.state = "failed"
            self.stats.error = (f"never came up within live.reconnect_timeout_s={live.reconnect_timeout_s:g}s "
                                f"({self.stats.error or 'no answer'})")

    def _read(self, container: Any) -> bool:
        """Sample the stream until it ends (True if it ended cleanly and that means the end)."""
        stream = pick_video_stream(container)
        if stream is None:
            raise NoVideoStream(f"{self.url} has no video stream")
        segment = self.open_segment()
        try:
            return self._sample(container, stream, segment)
        finally:
            self.close_segment(segment)

    def _sample(self, container: Any, stream: Any, segment: Segment) -> bool:
        extract = live_extract(self.config.sampling)
        sampler = Sampler(extract)
        prefilter = Prefilter(self.config.filter)
        segment.folder.mkdir(parents=True, exist_ok=True)
        writer = FrameWriter(segment.folder, segment.video_id, extract, prefilter, bits_per_pixel(container, stream))
        codec = stream.codec_context
        codec.thread_type = "AUTO"
        base = float(stream.time_base) if stream.time_base else 0.0
        first: float | None = None
        last_t = 0.0
        for packet in container.demux(stream):
            if self.stop.is_set():
                return False
            if packet.size == 0:
                continue
            self.stats.add(frames_captured=1)
            # Never-sampled non-reference frames are not decoded at all (as in the extract stage).
            if first is not None and packet.pts is not None and base > 0 and not sampler.keyframes_only:
                codec.skip_frame = "NONREF" if packet.pts * base - first + 1e-6 < sampler.next_t else "DEFAULT"
            try:
                frames = codec.decode(packet)
            except av.error.InvalidDataError:
                # Joined mid-stream (no keyframe yet) or a damaged packet: skip it, as players do.
                self.stats.add(frames_corrupt=1)
                continue
            for frame in frames:
                if frame.time is None:
                    continue
                if first is None:
                    first = float(frame.time)
                t = float(frame.time) - first
                if t < last_t - CLOCK_JUMP_S:
                    # The stream's clock went back (an encoder restarted, an HLS discontinuity): go on
                    # from where the timeline was, or nothing would be sampled until it caught up.
                    log.warning("%s: the stream's clock went back %.1fs; going on from %.1fs", self.url, last_t - t, last_t)
                    first = float(frame.time) - last_t
                    t = last_t
                last_t = t
                if not sampler.due(t, frame.key_frame):
                    continue
                sampler.take(t)
                captured_at = time.time()
                self.stats.add(frames_sampled=1)
                geo = geometry(frame, stream)
                # The sample's number in its segment: unique, where frame numbers of a stream are not.
                record = writer.keep(t, sampler.taken, to_rgb(frame, geo, extract.max_side), geo)
                if record.decision is not None:
                    self.stats.add(frames_filtered=1)
                    continue
                item = LiveFrame(record, segment.video_id, segment.source_id, segment.order, captured_at, writer.media)
                self.emit(StageMessage(f"{segment.video_id}@{record.t:.3f}", segment.folder / record.file, payload=item))
        return self.ends_cleanly
