"""Stage 1: make each input a local video file (yt-dlp for URLs, fsspec for object-store URLs;
local files used in place). Downloads from one host go through its gate (:mod:`video_miner.host_gate`):
a few at a time, with a pause between them and after a rate-limit answer. A URL that yt-dlp finds
to be a live stream is handed to the live readers instead of being downloaded forever."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from async_pipeline import StageMessage, StageOutput

from ..config import MinerConfig
from ..errors import (
    ConnectionFailed,
    CorruptMedia,
    DiskFull,
    FormatUnavailable,
    LiveNotStarted,
    LiveUnsupported,
    MinerError,
    NotFound,
    RateLimited,
    classify_download_error,
    disk_full,
    environment_error,
)
from ..host_gate import host_of
from ..inputs import VIDEO_EXTENSIONS, Source
from ..naming import slug
from ..registry import State
from ..ytdlp import js_runtimes, parse_cookies_from_browser
from .base import MinerStage

log = logging.getLogger(__name__)
#: What the manifest keeps of yt-dlp's info, so a dataset's provenance and licences can be audited.
SOURCE_FIELDS = ("id", "title", "uploader", "channel", "duration", "license", "webpage_url", "extractor", "upload_date")


class DownloadStage(MinerStage):
    # Downloading is I/O bound and yt-dlp objects are per call, so several threads may share one.
    thread_safe = True
    progress_unit = "bytes"

    def handle(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata["video_id"]
        row = self.ctx.registry.video(video_id)
        if row and row["state"] in (State.DOWNLOADED, State.EXTRACTED, State.FILTERED) and row["path"] \
                and Path(row["path"]).exists():
            return msg.evolve(input_path=Path(row["path"]), metadata={"video_path": row["path"]})
        self.ctx.registry.bump_attempts(video_id)
        if msg.metadata["kind"] == "local":
            return self._local(msg, video_id)
        self.ctx.check_free_space(self.ctx.videos_dir / video_id)
        if msg.metadata["kind"] == "remote":
            return self._fetch(msg, video_id)
        return self._download(msg, video_id)

    def _fetch(self, msg: StageMessage, video_id: str) -> StageMessage:
        """Copy an object-store file (s3://, gs://, ...) here, under a temporary name until complete."""
        from ..shared_storage import open_filesystem

        url = msg.metadata["source"]
        fs, path = open_filesystem(url)
        name = Path(path).name
        suffix = Path(name).suffix.lower()
        dest = self.ctx.videos_dir / video_id / (slug(Path(name).stem, 60) + (suffix if suffix in VIDEO_EXTENSIONS else ""))
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(path, str(part))
        except FileNotFoundError as exc:
            raise NotFound(f"{url} does not exist") from exc
        except OSError as exc:
            if environment_error(exc) is not None:  # our disk, not the store
                raise
            raise ConnectionFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
        os.replace(part, dest)
        self._record(video_id, dest, {"webpage_url": url})
        return msg.evolve(input_path=dest, metadata={"video_path": str(dest)})

    def _local(self, msg: StageMessage, video_id: str) -> StageMessage:
        path = Path(msg.metadata["source"])
        if not path.is_file():
            raise NotFound(f"{path} does not exist or is not a file")
        if path.stat().st_size == 0:
            raise CorruptMedia(f"{path} is empty")
        self.ctx.registry.set_state(video_id, State.DOWNLOADED, path=str(path))
        return msg.evolve(input_path=path)

    def _ydl_options(self, video_id: str) -> dict[str, Any]:
        """The options of every YoutubeDL this stage builds (tests and ``doctor`` build one too)."""
        return ydl_options(self.ctx.config, self.ctx.videos_dir / video_id,
                           lambda done, total: self.report_progress(video_id, done, total))

    def _download(self, msg: StageMessage, video_id: str) -> StageOutput:
        url = msg.metadata["source"]
        with self.ctx.hosts.slot(url):
            try:
                info = self._yt_dlp(url, video_id)
            except RateLimited as exc:
                pause = self.ctx.hosts.rate_limited(url, exc.retry_after)
                log.warning("%s: rate limited by %s; nothing goes to it for %.0fs", url, host_of(url), pause)
                raise
        self.ctx.hosts.succeeded(url)
        if info.get("live_status") == "is_live" or info.get("is_live"):
            return self._go_live(msg, video_id, info)
        if info.get("_type") == "playlist":
            return self._fan_out_playlist(msg, video_id, info)
        path = _downloaded_file(info)
        self._record(video_id, path, info)
        return msg.evolve(input_path=path, metadata={"video_path": str(path)})

    def _yt_dlp(self, url: str, video_id: str) -> dict[str, Any]:
        """Look first (a live stream must not be downloaded), then download; sanitized info."""
        from yt_dlp import YoutubeDL
        from yt_dlp.utils import DownloadError

        for attempt in (1, 2):
            try:
                # A fresh YoutubeDL per call: instances are not thread-safe.
                with YoutubeDL(self._ydl_options(video_id)) as ydl:
                    info = ydl.extract_info(url, download=False)
                    if info.get("live_status") == "is_live" or info.get("is_live"):
                        return dict(ydl.sanitize_info(info))
                    if info.get("live_status") == "is_upcoming":
                        raise LiveNotStarted(f"{url} is a live stream that has not started")
                    return dict(ydl.sanitize_info(ydl.process_ie_result(info, download=True)))
            except DownloadError as exc:
                # A run killed after the last byte but before yt-dlp renamed its .part leaves a
                # whole .part: resuming it asks for a range past the end, which servers answer with
                # 416 (or an empty body), and yt-dlp gives up. Such a .part is dropped, once.
                if attempt == 1 and _past_the_end(str(exc)) and self._drop_parts(video_id):
                    continue
                raise self._classify_download(str(exc), video_id, _retry_after(exc)) from exc
            except OSError as exc:
                if environment_error(exc) is not None:
                    raise
                raise self._classify_download(str(exc), video_id) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _go_live(self, msg: StageMessage, video_id: str, info: dict[str, Any]) -> StageOutput:
        """Hand a live stream to the live readers (this item leaves the file pipeline here)."""
        if self.ctx.go_live is None:
            raise LiveUnsupported(f"{msg.metadata['source']} is a live stream")
        chosen = (info.get("requested_formats") or [info])[0]
        stream = chosen.get("manifest_url") or chosen.get("url") or info.get("url")
        if not stream:
            raise FormatUnavailable(f"{msg.metadata['source']}: yt-dlp found no stream URL for the live stream")
        headers = chosen.get("http_headers") or info.get("http_headers") or {}
        options = {"headers": "".join(f"{k}: {v}\r\n" for k, v in headers.items())} if headers else {}
        self.ctx.registry.upsert_video(video_id, input=msg.metadata["source"], normalized=msg.metadata["source"],
                                       kind="live", order=msg.metadata["order"])
        source = Source(msg.metadata["source"], msg.metadata["source"], "live", video_id, msg.metadata["order"])
        # A playlist-based stream (HLS, DASH) that ends says so: its end of stream is the end.
        protocol = str(chosen.get("protocol") or "")
        self.ctx.go_live(source, stream, options, protocol.startswith(("m3u8", "http_dash", "dash")))
        log.info("%s is live: read as a stream", msg.metadata["source"])
        return None

    def _classify_download(self, message: str, video_id: str, retry_after: float | None = None) -> MinerError:
        error = classify_download_error(message, retry_after)
        # yt-dlp reports a full disk as text: say which folder, and what is free there.
        return disk_full(self.ctx.videos_dir / video_id) if isinstance(error, DiskFull) else error

    def _drop_parts(self, video_id: str) -> bool:
        parts = list((self.ctx.videos_dir / video_id).glob("*.part"))
        for part in parts:
            part.unlink(missing_ok=True)
        return bool(parts)

    def _record(self, video_id: str, path: Path, info: dict[str, Any]) -> None:
        source = {k: info.get(k) for k in SOURCE_FIELDS if info.get(k) is not None}
        size = path.stat().st_size
        self.ctx.counters.add(bytes_downloaded=size)
        self.ctx.registry.set_state(video_id, State.DOWNLOADED, path=str(path), source_json=json.dumps(source),
                                    bytes_downloaded=size)

    def _fan_out_playlist(self, msg: StageMessage, video_id: str, info: dict[str, Any]) -> list[StageMessage]:
        parts: list[StageMessage] = []
        for k, entry in enumerate(e for e in info.get("entries") or [] if e):
            child = f"{video_id}-{slug(str(entry.get('id', k)), 24)}"
            order = msg.metadata["order"] + k + 1
            self.ctx.registry.upsert_video(child, input=entry.get("webpage_url") or msg.metadata["source"],
                                           normalized=entry.get("webpage_url") or f"{msg.metadata['source']}#{k}",
                                           kind="url", order=order, parent=video_id,
                                           config_hash=self.ctx.config.result_hash())
            row = self.ctx.registry.video(child)
            if row and row["state"] == State.DONE:
                continue
            path = _downloaded_file(entry)
            self._record(child, path, entry)
            parts.append(msg.evolve(input_path=path, metadata={"video_id": child, "order": order,
                                                               "video_path": str(path)}))
        self.ctx.registry.set_state(video_id, State.SKIPPED, error_message=f"playlist of {len(parts)} videos")
        return parts


def ydl_options(config: MinerConfig, folder: Path, progress: Callable[[float, float | None], None] | None = None
                ) -> dict[str, Any]:
    """YoutubeDL options for one video downloaded into ``folder``."""
    from yt_dlp.utils import parse_bytes

    cfg = config.download
    opts: dict[str, Any] = {
        **cfg.ytdlp_options,
        "format": cfg.format,
        # yt-dlp sanitizes the id it fills in; the folder is ours, so nothing escapes it.
        "outtmpl": {"default": str(folder / "%(id).60B.%(ext)s")},
        "restrictfilenames": True,
        "windowsfilenames": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "socket_timeout": cfg.socket_timeout,
        # Our engine retries whole downloads with backoff; yt-dlp's own loop would multiply it.
        "retries": 0,
        "fragment_retries": 1,
        "extractor_retries": cfg.ytdlp_options.get("extractor_retries", 0),
        "noplaylist": cfg.ytdlp_options.get("noplaylist", False),
        "overwrites": False,
        # YouTube's player challenges need a JavaScript runtime: the deno package's.
        "js_runtimes": js_runtimes(),
        # yt-dlp prints to stderr unless given a logger; the progress table owns the terminal.
        "logger": logging.getLogger("video_miner.yt_dlp"),
    }
    if progress is not None:
        def hook(d: dict[str, Any]) -> None:
            if d.get("status") == "downloading" and d.get("downloaded_bytes") is not None:
                progress(float(d["downloaded_bytes"]), d.get("total_bytes") or d.get("total_bytes_estimate"))

        opts["progress_hooks"] = [hook]
    if cfg.rate_limit:
        opts["ratelimit"] = parse_bytes(cfg.rate_limit)
    if cfg.cookies:
        opts["cookiefile"] = str(cfg.cookies)
    if cfg.cookies_from_browser:
        opts["cookiesfrombrowser"] = parse_cookies_from_browser(cfg.cookies_from_browser)
    if cfg.proxy:
        opts["proxy"] = cfg.proxy
    return opts


def _retry_after(exc: BaseException) -> float | None:
    """The Retry-After a server sent with the error, in seconds, wherever yt-dlp wrapped it."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        headers = getattr(getattr(err, "response", None), "headers", None) or getattr(err, "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                with contextlib.suppress(TypeError, ValueError):
                    return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        todo += [getattr(err, "cause", None), getattr(err, "__cause__", None), getattr(err, "__context__", None)]
        exc_info = getattr(err, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            todo.append(exc_info[1])
    return None


def _downloaded_file(info: dict[str, Any]) -> Path:
    downloads = info.get("requested_downloads") or []
    path = downloads[0].get("filepath") if downloads else info.get("filepath")
    if not path or not Path(path).exists():
        raise MinerError(f"yt-dlp reported no file for {info.get('webpage_url') or info.get('id')}")
    return Path(path)


def _past_the_end(message: str) -> bool:
    return "HTTP Error 416" in message or "Did not get any data blocks" in message
