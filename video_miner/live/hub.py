"""The live sources of one run. Each has a reader thread; the frames they sample come out of
:meth:`LiveHub.frames` (the live pipeline's input) in arrival order. Each connection is a segment:
a registry row of its own (state ``live``) whose frames commit one by one, marked done when the
connection ends, so an export at any moment sees every frame decided so far and a restart appends
new segments beside the old ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from async_pipeline import PipelineEvent, StageMessage

from ..config import MinerConfig
from ..inputs.listing import Source
from ..records import LiveFrame, State
from ..redact import Redactor, printable
from ..store.files import remove_tree
from ..store.layout import OutputLayout
from ..store.naming import slug
from ..store.registry import Registry
from .reader import LiveReader, Segment
from .stats import LiveStats

log = logging.getLogger(__name__)
#: Segments of one source take order keys after the source's own.
_SEGMENT_ORDER_STEP = 1


@dataclass
class _Live:
    source: Source
    reader: LiveReader
    thread: threading.Thread
    segments: int = 0


class LiveHub:
    """Thread-safe where noted: readers call :meth:`emit` and the segment hooks from their threads,
    the download stage may :meth:`add` a source it found to be live."""

    def __init__(self, config: MinerConfig, registry: Registry, layout: OutputLayout,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config, self.registry, self.layout = config, registry, layout
        #: Sources are shown (live table, metrics, metrics.json) with their credentials masked.
        self.redactor = Redactor.with_extra(config.secret_params)
        self.loop = loop
        self.stop_event = threading.Event()
        self.stats: dict[str, LiveStats] = {}
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        # Size 1: a reader's frame is taken at once under a drop policy (the pipeline's first queue
        # never blocks then); under ``block`` the reader waits for room, as the user asked.
        self._queue: asyncio.Queue[StageMessage[LiveFrame] | None] = asyncio.Queue(maxsize=1)
        self._ended = False
        # Frames handed on and not yet committed, dropped or failed: item id -> (segment, sample
        # number). Tracking commits a segment's frames in sample order (see :meth:`first_in_flight`).
        self._flight: dict[str, tuple[str, int]] = {}
        self._more_sources = True
        self._running = 0
        self._started = asyncio.Event()
        self._settled = asyncio.Event()

    @property
    def folder(self) -> Path:
        return self.layout.live_dir

    # ---- sources ----------------------------------------------------------------------------
    def add(self, source: Source, url: str | None = None, options: dict[str, str] | None = None,
            ends_cleanly: bool = False) -> None:
        """Start reading ``source`` (thread-safe). ``url``: the stream to open when it differs from
        the input (a yt-dlp page whose stream is an HLS playlist); ``ends_cleanly``: its end of
        stream means it ended (a playlist's ENDLIST), not that it dropped."""
        with self._lock:
            if source.video_id in self._live or self.stop_event.is_set():
                return
            stats = self.stats.setdefault(source.video_id, LiveStats(self.redactor.url(source.raw), self.redactor))
            reader = LiveReader(url or source.normalized, self.config, stats, self.stop_event,
                                lambda: self._open_segment(source.video_id), self._close_segment, self.emit, options,
                                ends_cleanly)
            thread = threading.Thread(target=self._run_reader, args=(source, reader), daemon=True,
                                      name=f"live-{source.video_id[:24]}")
            self._live[source.video_id] = _Live(source, reader, thread)
            self._running += 1
        self.registry.set_state(source.video_id, State.LIVE)
        thread.start()
        self._tell(self._started)

    def _tell(self, event: asyncio.Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(event.set)

    async def first_source(self) -> bool:
        """Wait until a source is added (True) or none will be (False)."""
        started = asyncio.ensure_future(self._started.wait())
        settled = asyncio.ensure_future(self._settled.wait())
        await asyncio.wait({started, settled}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        settled.cancel()
        return self._started.is_set()

    def _run_reader(self, source: Source, reader: LiveReader) -> None:
        try:
            reader.run()
        except Exception as exc:  # a bug in reading must not take the other sources down
            log.exception("%s: reader crashed", source.raw)
            reader.stats.state, reader.stats.error = "failed", f"{type(exc).__name__}: {exc}"
        if reader.stats.state == "failed":
            self.registry.mark_failed(source.video_id, "live_unavailable", reader.stats.error or "failed")
        else:
            self.registry.set_state(source.video_id, State.DONE)
        with self._lock:
            self._running -= 1
            finished = self._running == 0 and not self._more_sources
        if finished:
            self._end_frames()

    def no_more_sources(self) -> None:
        """No source will be added any more (the inputs are all started): the frames end with the last reader."""
        with self._lock:
            if not self._more_sources:
                return
            self._more_sources = False
            finished = self._running == 0
        self._tell(self._settled)
        if finished:
            self._end_frames()

    def stop(self) -> None:
        """Ctrl-C, --duration: readers stop at their next frame (or read timeout)."""
        self.stop_event.set()
        self.no_more_sources()

    def join(self) -> None:
        with self._lock:
            threads = [live.thread for live in self._live.values()]
        for thread in threads:
            thread.join()

    # ---- segments (reader threads) ----------------------------------------------------------------
    def _open_segment(self, source_id: str) -> Segment:
        with self._lock:
            live = self._live[source_id]
            live.segments += 1
            k = live.segments
        video_id = f"{source_id}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{k}"
        video_id = slug(video_id, 120)
        src = live.source
        self.registry.upsert_video(video_id, input=src.raw, normalized=src.normalized, kind="live",
                                       order=src.order + k * _SEGMENT_ORDER_STEP, parent=source_id,
                                       config_hash=self.config.result_hash())
        self.registry.set_state(video_id, State.LIVE)
        return Segment(video_id, source_id, src.order + k * _SEGMENT_ORDER_STEP, self.folder / video_id)

    def _close_segment(self, segment: Segment) -> None:
        self.registry.set_state(segment.video_id, State.DONE)

    # ---- frames -----------------------------------------------------------------------------
    def emit(self, msg: StageMessage[LiveFrame]) -> None:
        """From a reader thread: hand a frame on (returns at once unless live.queue_policy is block)."""
        if self.stop_event.is_set():
            self.discard(msg)
            return
        with self._lock:
            self._flight[msg.item_id] = (msg.item.video_id, msg.item.frame.index)
        future = asyncio.run_coroutine_threadsafe(self._queue.put(msg), self.loop)
        with contextlib.suppress(RuntimeError):  # the loop is closing: the run is over
            future.result()

    def _end_frames(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._queue.put(None), self.loop)

    async def frames(self) -> AsyncIterator[StageMessage[LiveFrame]]:
        """The live pipeline's input: frames as they come, until every source has ended."""
        while (msg := await self._queue.get()) is not None:
            yield msg
        self._ended = True

    async def drain(self) -> None:
        """After the live pipeline stopped taking frames: take the readers' last ones (discarded)
        until they have all ended, so none stays blocked handing one on."""
        while not self._ended:
            msg = await self._queue.get()
            if msg is None:
                break
            self.discard(msg)
        self._ended = True

    def discard(self, msg: StageMessage[LiveFrame]) -> None:
        self.settled(msg.item_id)
        if msg.input_path is not None:
            msg.input_path.unlink(missing_ok=True)

    def settled(self, item_id: str) -> None:
        """A frame is committed, dropped or failed: no later frame of its segment waits for it."""
        with self._lock:
            self._flight.pop(item_id, None)

    def first_in_flight(self, video_id: str) -> int | None:
        """The lowest sample number of the segment's frames still on their way (None: none is):
        frames after it are committed once it is. The reader hands frames on in sample order, but
        the filter's workers may finish them in any."""
        with self._lock:
            return min((index for vid, index in self._flight.values() if vid == video_id), default=None)

    # ---- observers --------------------------------------------------------------------------
    def on_event(self, event: PipelineEvent) -> None:
        """The live pipeline's events: drops by its queue policy are counted per source."""
        msg = event.message
        if event.kind in ("failed", "dropped"):
            self.settled(event.item_id)
        if event.kind == "queue_dropped" and isinstance(msg, StageMessage) and isinstance(msg.payload, LiveFrame):
            stats = self.stats.get(msg.payload.source_id)
            if stats is not None:
                stats.add(frames_dropped=1)
            self.discard(msg)

    def decided(self, frame: LiveFrame, candidate: bool, sync: str | None = None) -> None:
        """A frame's decision is made: latency from its capture to now; with several models, whether
        it went on without a slow model's answer (partial) or was dropped for it (expired)."""
        stats = self.stats.get(frame.source_id)
        if stats is not None:
            stats.add(frames_decided=1, candidates=int(candidate), frames_partial=int(sync == "partial"),
                      frames_expired=int(sync == "expired"))
            stats.latency.add(time.time() - frame.captured_at)

    def new_track(self, frame: LiveFrame, track: int, label: str, t: float) -> None:
        """An object came into view on a source at ``t`` (tracks on): an event, counted and told."""
        stats = self.stats.get(frame.source_id)
        if stats is not None:
            stats.add(tracks_new=1)
            log.info("%s: new %s #%d at %.1f s", stats.source, printable(label), track, t)

    def cleanup(self) -> None:
        """Frames nobody decided (a stop, a drop) are not kept: their folders go."""
        remove_tree(self.folder)
