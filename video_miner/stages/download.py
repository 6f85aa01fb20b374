"""Stage 1: make each input a local video file (yt-dlp for URLs, fsspec for object-store URLs;
local files used in place). Downloads from one host go through its gate (a few at a time, with a
pause between them and after a rate-limit answer). A URL that yt-dlp finds to be a live stream is
handed to the live readers instead of being downloaded forever."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from async_pipeline import StageOutput

from ..download.host_gate import host_of
from ..download.remote import copy_remote
from ..download.ytdlp import downloaded_file, is_live, live_stream, look_and_download, source_meta, ydl_options
from ..errors import CorruptMedia, FormatUnavailable, NotFound, RateLimited
from ..inputs.listing import Source
from ..records import State, VideoItem, VideoRow, VideoUpdate
from ..store.files import is_inside
from ..store.naming import slug
from .base import Message, MinerStage, Progress
from .changes import LiveStart, NewVideo, StageChanges

log = logging.getLogger(__name__)


class DownloadStage(MinerStage):
    name = "download"
    progress_unit = "bytes"

    def handle(self, msg: Message, row: VideoRow | None, changes: StageChanges, progress: Progress) -> StageOutput:
        item = msg.item
        if row and row.state in (State.DOWNLOADED, State.EXTRACTED, State.FILTERED) and row.path \
                and self._ours(item, Path(row.path)) and Path(row.path).exists():
            return msg.evolve(input_path=Path(row.path), payload=_with_path(item, row.path))
        changes.attempt(item.video_id)
        if item.kind == "local":
            return self._local(msg, changes)
        folder = self.env.layout.videos_dir / item.video_id
        self.env.check_free_space(folder)
        if item.kind == "remote":
            path = copy_remote(item.source, folder)
            _record(changes, item.video_id, path, {"webpage_url": item.source})
            return msg.evolve(input_path=path, payload=_with_path(item, str(path)))
        return self._download(msg, folder, changes, progress)

    def _ours(self, item: VideoItem, path: Path) -> bool:
        """Whether a downloaded path the registry names may be used (and later deleted): the user's
        own file for a local input, else a file of this video's download folder. A registry row
        is a file on disk that anyone could have edited."""
        if item.kind == "local":
            return path == Path(item.source)
        return is_inside(path, self.env.layout.videos_dir / item.video_id)

    def _local(self, msg: Message, changes: StageChanges) -> Message:
        path = Path(msg.item.source)
        if not path.is_file():
            raise NotFound(f"{path} does not exist or is not a file")
        if path.stat().st_size == 0:
            raise CorruptMedia(f"{path} is empty")
        changes.update(msg.item.video_id, VideoUpdate(State.DOWNLOADED, path=str(path)))
        return msg.evolve(input_path=path)

    def _download(self, msg: Message, folder: Path, changes: StageChanges, progress: Progress) -> StageOutput:
        url, hosts = msg.item.source, self.env.hosts
        with hosts.slot(url):
            try:
                info = look_and_download(url, ydl_options(self.env.config.download, folder, progress))
            except RateLimited as exc:
                pause = hosts.rate_limited(url, exc.retry_after)
                log.warning("%s: rate limited by %s; nothing goes to it for %.0fs", url, host_of(url), pause)
                raise
        hosts.succeeded(url)
        if is_live(info):
            return self._go_live(msg, info, changes)
        if info.get("_type") == "playlist":
            return self._fan_out_playlist(msg, info, changes)
        path = downloaded_file(info)
        _record(changes, msg.item.video_id, path, info)
        return msg.evolve(input_path=path, payload=_with_path(msg.item, str(path)))

    def _go_live(self, msg: Message, info: dict[str, Any], changes: StageChanges) -> StageOutput:
        """Hand a live stream to the live readers (this item leaves the file pipeline here)."""
        item = msg.item
        stream, options, ends_cleanly = live_stream(info)
        if not stream:
            raise FormatUnavailable(f"{item.source}: yt-dlp found no stream URL for the live stream")
        source = Source(item.source, item.source, "live", item.video_id, item.order)
        changes.go_live(LiveStart(source, stream, options, ends_cleanly))
        log.info("%s is live: read as a stream", item.source)
        return None

    def _fan_out_playlist(self, msg: Message, info: dict[str, Any], changes: StageChanges) -> list[Message]:
        item = msg.item
        parts: list[Message] = []
        for k, entry in enumerate(e for e in info.get("entries") or [] if e):
            child = f"{item.video_id}-{slug(str(entry.get('id', k)), 24)}"
            order = item.order + k + 1
            changes.found(NewVideo(child, entry.get("webpage_url") or item.source,
                                   entry.get("webpage_url") or f"{item.source}#{k}", "url", order, item.video_id,
                                   self.env.config.result_hash()))
            path = downloaded_file(entry)
            _record(changes, child, path, entry)
            child_item = VideoItem(child, "url", entry.get("webpage_url") or item.source, order, str(path))
            parts.append(msg.evolve(input_path=path, payload=child_item))
        changes.update(item.video_id, VideoUpdate(State.SKIPPED, error_message=f"playlist of {len(parts)} videos"))
        return parts


def _with_path(item: VideoItem, path: str) -> VideoItem:
    return replace(item, video_path=path)


def _record(changes: StageChanges, video_id: str, path: Path, info: dict[str, Any]) -> None:
    size = path.stat().st_size
    changes.count(bytes_downloaded=size)
    changes.update(video_id, VideoUpdate(State.DOWNLOADED, path=str(path), source_meta=source_meta(info),
                                         bytes_downloaded=size))
