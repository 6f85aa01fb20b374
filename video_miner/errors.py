"""Failure classes: every failed video is reported as one line naming its class and what to do."""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
from pathlib import Path


class MinerError(Exception):
    """A failure of one input, with a class a user can act on.

    ``kind`` groups failures in ``video-miner status``; ``hint`` says what to do about it.
    """

    kind = "error"
    hint = ""
    transient = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(MinerError):
    kind = "config"


class TransientError(MinerError):
    """Worth retrying: HTTP 5xx, timeouts, refused or reset connections."""

    kind = "transient"
    transient = True
    hint = "retried with backoff; check the network or the server if it keeps failing"


class HttpServerError(TransientError):
    kind = "http_5xx"


class NetworkTimeout(TransientError):
    kind = "timeout"


class ConnectionFailed(TransientError):
    kind = "connection"


class NotFound(MinerError):
    kind = "not_found"
    hint = "check the path or URL"


class HttpClientError(MinerError):
    kind = "http_4xx"
    hint = "the server refused the request; check the URL and access rights"


class UnsupportedUrl(MinerError):
    kind = "unsupported_url"
    hint = "give a URL that yt-dlp supports, a direct media link or a local path"


class VideoUnavailable(MinerError):
    kind = "unavailable"
    hint = "the video is private, removed or geo-blocked; drop it from the list"


class SignInRequired(MinerError):
    kind = "sign_in_required"
    hint = "export your browser cookies and set download.cookies in the config"


class NoVideoStream(MinerError):
    kind = "no_video_stream"
    hint = "the file has no video track (audio only, an image or a subtitle file)"


class CorruptMedia(MinerError):
    kind = "corrupt_media"
    hint = "the file is truncated or damaged; download it again or drop it"


class UnsupportedCodec(MinerError):
    kind = "unsupported_codec"
    hint = "re-encode it (e.g. to H.264) or install an FFmpeg build with this decoder"


class DiskFull(MinerError):
    """The output's filesystem is full (or below ``download.min_free_gb``): not the video's fault,
    so the videos concerned stay unfinished and a plain re-run resumes them."""

    kind = "disk_full"
    hint = "free some space or give another --output, then run the same command again: finished work is kept"


class EnvironmentFault(MinerError):
    """The machine, not an input: no permission, a read-only or failing filesystem."""

    kind = "environment"


class RegistryDamaged(MinerError):
    kind = "registry_damaged"


class ModelError(MinerError):
    kind = "model_error"
    hint = "check filter.model / label.model and that the file loads with Ultralytics"


class EmptyInput(MinerError):
    kind = "empty_input"
    hint = "the folder or list holds no video files"


_HTTP = re.compile(r"HTTP Error (\d{3})")
_SIGN_IN = ("sign in", "login required", "confirm you're not a bot", "cookies", "age-restricted", "members-only")
_UNAVAILABLE = ("video unavailable", "private video", "has been removed", "not available", "account associated",
                "copyright", "geo restrict", "this video is unavailable")


def classify_download_error(message: str) -> MinerError:
    """Map yt-dlp's error text to a failure class (yt-dlp reports most failures as text only)."""
    text = message.removeprefix("ERROR: ").strip()
    low = text.lower()
    if m := _HTTP.search(text):
        code = int(m.group(1))
        if code == 404 or code == 410:
            return NotFound(f"HTTP {code}: {text}")
        if code >= 500 or code == 429:
            return HttpServerError(f"HTTP {code}: {text}")
        return HttpClientError(f"HTTP {code}: {text}")
    if "unsupported url" in low or "is not a valid url" in low or "no suitable extractor" in low:
        return UnsupportedUrl(text)
    if any(s in low for s in _SIGN_IN):
        return SignInRequired(text)
    if any(s in low for s in _UNAVAILABLE):
        return VideoUnavailable(text)
    if "timed out" in low or "timeout" in low:
        return NetworkTimeout(text)
    if "connection refused" in low or "connection reset" in low or "errno 111" in low or "remote end closed" in low:
        return ConnectionFailed(text)
    if "no space left" in low:
        return DiskFull(text)
    return MinerError(text)


def classify_os_error(exc: OSError, what: str) -> MinerError:
    if exc.errno == errno.ENOSPC:
        return disk_full(Path(exc.filename) if exc.filename else None)
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what} does not exist")
    return MinerError(f"{what}: {exc}")


def _free(path: Path | None) -> str:
    probe = path
    while probe is not None and not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe is None:
        return "unknown"
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    return f"{free / 1e9:.2f} GB" if free >= 1e8 else f"{free / 1e6:.1f} MB"


def disk_full(path: Path | None, floor: str | None = None) -> DiskFull:
    """One line: which path filled up, what is free there, what to do."""
    where = str(path) if path is not None else "the output folder"
    why = floor or "no space left on device"
    return DiskFull(f"disk full: {why} writing {where} ({_free(path)} free there)")


def environment_error(exc: BaseException, where: Path | None = None) -> MinerError | None:
    """An error of the machine rather than of an input or of video-miner (disk full, no permission,
    a read-only or failing disk, a damaged registry) as one line saying what to do; else None."""
    if isinstance(exc, MinerError):
        return exc if isinstance(exc, (DiskFull, EnvironmentFault, RegistryDamaged)) else None
    if isinstance(exc, OSError):
        path = Path(exc.filename) if exc.filename else where
        if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
            return disk_full(path)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return EnvironmentFault(f"permission denied: {path}", "give an --output you can write to, or fix its permissions")
        if exc.errno == errno.EROFS:
            return EnvironmentFault(f"read-only filesystem: {path}", "give an --output on a writable disk")
        if exc.errno == errno.EIO:
            return EnvironmentFault(f"input/output error on {path}", "the disk is failing; copy the output folder elsewhere")
        return None
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "disk is full" in text:
            return disk_full(where)
        if "readonly" in text or "read-only" in text:
            return EnvironmentFault(f"cannot write the registry {where}: {exc}", "give an --output on a writable disk")
        if "disk i/o" in text or "unable to open" in text:
            return EnvironmentFault(f"cannot use the registry {where}: {exc}",
                                    "check the disk and the folder's permissions")
        return None
    if isinstance(exc, sqlite3.DatabaseError):
        return registry_damaged(where, exc)
    return None


def registry_damaged(path: Path | None, cause: BaseException | str) -> RegistryDamaged:
    output = path.parent if path is not None else Path(".")
    return RegistryDamaged(
        f"the registry {path} is damaged ({cause}); nothing was deleted: run `video-miner repair -o {output}` to "
        "rebuild it from the files on disk, then the same command again")
