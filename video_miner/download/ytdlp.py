"""Downloading with yt-dlp: its JavaScript runtime (YouTube needs one since yt-dlp 2025.11: the
``deno`` package's binary, found without the user doing anything), the options of every YoutubeDL
(the config's checks of the user's own are in :mod:`video_miner.config`), looking before
downloading, and yt-dlp's errors as failure classes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from ..config import DownloadConfig, parse_cookies_from_browser
from ..errors import (
    DiskFull,
    FilteredOut,
    LiveNotStarted,
    MinerError,
    classify_download_error,
    disk_full,
    environment_error,
)

#: What the manifest keeps of yt-dlp's info.
SOURCE_FIELDS = ("id", "title", "uploader", "channel", "duration", "license", "webpage_url", "extractor", "upload_date")


def js_runtimes() -> dict[str, dict[str, str]]:
    """yt-dlp's ``js_runtimes``: the Deno that the ``deno`` package installed (yt-dlp would only
    look on PATH, where a virtualenv's bin folder is not unless it is activated)."""
    try:
        import deno
    except ImportError:
        return {"deno": {}}
    try:
        return {"deno": {"path": str(deno.find_deno_bin())}}
    except (OSError, RuntimeError, FileNotFoundError):
        return {"deno": {}}


def runtime_report(ydl: Any) -> dict[str, Any]:
    """What a YoutubeDL instance will solve YouTube's JavaScript challenges with (for doctor, tests)."""
    from yt_dlp.dependencies import yt_dlp_ejs

    runtimes = {}
    for name, runtime in ydl._js_runtimes.items():
        info = runtime.info if runtime is not None else None
        runtimes[name] = None if info is None else {"version": info.version, "path": info.path,
                                                     "supported": bool(info.supported)}
    ejs = getattr(yt_dlp_ejs, "version", None) if yt_dlp_ejs is not None else None
    return {"runtimes": runtimes, "ejs": ejs}


def ydl_options(cfg: DownloadConfig, folder: Path, progress: Callable[[float, float | None], None] | None = None
                ) -> dict[str, Any]:
    """YoutubeDL options for one video downloaded into ``folder``."""
    from yt_dlp.utils import parse_bytes

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
    if isinstance(cfg.ytdlp_options.get("match_filter"), str):
        from yt_dlp.utils import match_filter_func

        # yt-dlp's own filter language (``--match-filters``), compiled as its command line does.
        opts["match_filter"] = match_filter_func(cfg.ytdlp_options["match_filter"])
    return opts


def look_and_download(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """yt-dlp's sanitized info for ``url``: looked at first (a live stream is not downloaded, one
    that has not started fails), then downloaded into the folder ``options`` name. Errors are
    failure classes; a whole ``.part`` left by a kill is dropped once and downloaded again."""
    from yt_dlp.utils import DownloadError

    folder = Path(options["outtmpl"]["default"]).parent
    for attempt in (1, 2):
        try:
            return _look_and_download(url, options)
        except DownloadError as exc:
            # A run killed after the last byte but before yt-dlp renamed its .part leaves a whole
            # .part: resuming it asks for a range past the end, which servers answer with 416 (or
            # an empty body), and yt-dlp gives up. Such a .part is dropped, once.
            if attempt == 1 and _past_the_end(str(exc)) and _drop_parts(folder):
                continue
            raise _classify(str(exc), folder, retry_after(exc)) from exc
        except OSError as exc:
            if environment_error(exc) is not None:
                raise
            raise _classify(str(exc), folder) from exc
    raise AssertionError("unreachable: the second attempt returns or raises")


def _look_and_download(url: str, options: dict[str, Any]) -> dict[str, Any]:
    from yt_dlp import YoutubeDL

    # A fresh YoutubeDL per call: instances are not thread-safe.
    with YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=False)
        if is_live(info):
            return dict(ydl.sanitize_info(info))
        if info.get("live_status") == "is_upcoming":
            raise LiveNotStarted(f"{url} is a live stream that has not started")
        match_filter = options.get("match_filter")
        if callable(match_filter) and info.get("_type") != "playlist" and \
                (reason := match_filter(info, incomplete=False)) is not None:
            raise FilteredOut(f"{url}: {reason}")
        return dict(ydl.sanitize_info(ydl.process_ie_result(info, download=True)))


def is_live(info: dict[str, Any]) -> bool:
    return info.get("live_status") == "is_live" or bool(info.get("is_live"))


def _classify(message: str, folder: Path, retry_after: float | None = None) -> MinerError:
    error = classify_download_error(message, retry_after)
    # yt-dlp reports a full disk as text: say which folder, and what is free there.
    return disk_full(folder) if isinstance(error, DiskFull) else error


def _drop_parts(folder: Path) -> bool:
    parts = list(folder.glob("*.part"))
    for part in parts:
        part.unlink(missing_ok=True)
    return bool(parts)


def _past_the_end(message: str) -> bool:
    return "HTTP Error 416" in message or "Did not get any data blocks" in message


def retry_after(exc: BaseException) -> float | None:
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


def downloaded_file(info: dict[str, Any]) -> Path:
    downloads = info.get("requested_downloads") or []
    path = downloads[0].get("filepath") if downloads else info.get("filepath")
    if not path or not Path(path).exists():
        raise MinerError(f"yt-dlp reported no file for {info.get('webpage_url') or info.get('id')}")
    return Path(path)


def source_meta(info: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of yt-dlp's info, so a dataset's provenance and licences can be audited."""
    return {k: info.get(k) for k in SOURCE_FIELDS if info.get(k) is not None}


def live_stream(info: dict[str, Any]) -> tuple[str | None, dict[str, str], bool]:
    """(the stream URL to open, FFmpeg options with the headers it needs, whether its end of stream
    means it ended) of a live stream yt-dlp found."""
    chosen = (info.get("requested_formats") or [info])[0]
    stream = chosen.get("manifest_url") or chosen.get("url") or info.get("url")
    headers = chosen.get("http_headers") or info.get("http_headers") or {}
    options = {"headers": "".join(f"{k}: {v}\r\n" for k, v in headers.items())} if headers else {}
    # A playlist-based stream (HLS, DASH) that ends says so: its end of stream is the end.
    protocol = str(chosen.get("protocol") or "")
    return stream, options, protocol.startswith(("m3u8", "http_dash", "dash"))
