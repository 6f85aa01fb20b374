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
    hint = "fix the setting named, in the config or on the command line (video-miner run --help lists the flags)"


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


class UnknownHost(MinerError):
    kind = "unknown_host"
    hint = ("the host name does not resolve: check the URL for a typo, then this machine's DNS (`getent hosts "
            "HOST`), or its proxy (download.proxy, HTTPS_PROXY)")


class TlsFailed(MinerError):
    kind = "tls"
    hint = ("the server's certificate was refused: check the URL and this machine's clock and CA certificates; "
            "behind a proxy that re-signs traffic, point SSL_CERT_FILE at its CA")


class ProxyFailed(TransientError):
    kind = "proxy"
    hint = "the proxy refused or dropped the connection: check download.proxy (or HTTPS_PROXY) and its credentials"


class StoreAccessDenied(MinerError):
    kind = "store_access"
    hint = ("the object store needs credentials this machine does not have, or they may not read this object: for "
            "s3:// set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (and AWS_ENDPOINT_URL for MinIO), for "
            "gs:// GOOGLE_APPLICATION_CREDENTIALS, for az:// AZURE_STORAGE_CONNECTION_STRING")


class HttpClientError(MinerError):
    kind = "http_4xx"
    hint = "the server refused the request; check the URL and access rights"


class UnsupportedUrl(MinerError):
    kind = "unsupported_url"
    hint = "give a URL that yt-dlp supports, a direct media link or a local path"


class VideoUnavailable(MinerError):
    kind = "unavailable"
    hint = "the video cannot be played here; drop it from the list"


class PrivateVideo(VideoUnavailable):
    kind = "private"
    hint = "the video is private: drop it, or pass cookies of an account that may see it (--cookies-from-browser)"


class RemovedVideo(VideoUnavailable):
    kind = "removed"
    hint = "the video was taken down or its account closed; drop it from the list"


class GeoBlocked(VideoUnavailable):
    kind = "geo_blocked"
    hint = "not available in this machine's country; use download.proxy in a country where it is, or drop it"


class SignInRequired(MinerError):
    kind = "sign_in_required"
    hint = "the site wants a signed-in user: pass --cookies-from-browser firefox (or download.cookies, a cookies.txt)"


class AgeRestricted(SignInRequired):
    kind = "age_restricted"
    hint = "age-restricted: pass cookies of a signed-in adult account (--cookies-from-browser, or download.cookies)"


class LiveNotStarted(MinerError):
    kind = "live_not_started"
    hint = "a scheduled live stream or premiere: run the same command again once it has started"


class FormatUnavailable(MinerError):
    kind = "format_unavailable"
    hint = "no format matches download.format; loosen it (e.g. 'bv*+ba/b') or check yt-dlp -F URL"


class RateLimited(TransientError):
    """HTTP 429 or the site's own 'try again later': the host is paused, then retried."""

    kind = "rate_limited"
    hint = ("the site limits requests: retried after a pause; if it persists lower download.max_per_host, raise "
            "download.sleep_s, or pass cookies (--cookies-from-browser)")

    def __init__(self, message: str, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint)
        #: Seconds the server asked us to wait (its Retry-After header), if it said.
        self.retry_after = retry_after


class BotCheck(RateLimited):
    kind = "bot_check"
    hint = ("the site asks to confirm you are not a bot: retried after a pause; if it persists pass "
            "--cookies-from-browser firefox (or download.cookies) and lower download.max_per_host")


class FilteredOut(MinerError):
    kind = "match_filter"
    hint = "download.ytdlp_options.match_filter left it out"


class LiveUnsupported(MinerError):
    kind = "live_unsupported"
    hint = "a live stream: mine it with the stage pipeline (drop --sequential)"


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
    hint = "fix the machine's side (permissions, disk), then run the same command again"


class RegistryDamaged(MinerError):
    kind = "registry_damaged"
    hint = "run `video-miner repair -o OUTPUT`, then the same command again"


class ModelError(MinerError):
    kind = "model_error"
    hint = "check filter.model / label.model and that the file loads with Ultralytics"


class TooLarge(MinerError):
    kind = "too_large"
    hint = ("its pictures are larger than extract.max_pixels allows (a decompression bomb, or a real giant video: "
            "then raise extract.max_pixels)")


class UnsafePath(MinerError):
    """A path that would make video-miner write through a link, into something that is not a
    regular file, or out of its folder (a manifest row, a registry row)."""

    kind = "unsafe_path"
    hint = "remove what is named, or give another --output / --dest"


class EmptyInput(MinerError):
    kind = "empty_input"
    hint = "the folder or list holds no video files"


_HTTP = re.compile(r"HTTP Error (\d{3})")
#: yt-dlp's (and the sites') words for each failure, most specific first. Matched lower-cased.
_PATTERNS: tuple[tuple[tuple[str, ...], type[MinerError]], ...] = (
    (("confirm you're not a bot", "confirm you\u2019re not a bot", "captcha challenge", "not a robot"), BotCheck),
    (("try again later", "rate-limited", "rate limited", "too many requests"), RateLimited),
    (("confirm your age", "age-restricted", "age restricted", "inappropriate for some users"), AgeRestricted),
    (("private video", "this video is private"), PrivateVideo),
    (("has been removed", "account associated with this video has been terminated", "no longer available",
      "copyright claim", "violating youtube's terms"), RemovedVideo),
    (("available in your country", "geo restriction", "geo-restricted", "not available from your location"),
     GeoBlocked),
    (("live event will begin", "premieres in", "is_upcoming", "this live stream has not started",
      "waiting for scheduled"), LiveNotStarted),
    (("requested format is not available", "no video formats found"), FormatUnavailable),
    (("sign in", "login required", "registered users", "members-only", "join this channel", "cookies"), SignInRequired),
    (("video unavailable", "not available", "this video is unavailable"), VideoUnavailable),
)


def _http_class(text: str, retry_after: float | None) -> MinerError | None:
    """The class an HTTP status in yt-dlp's text decides on its own (a 403 may still say why: a bot
    check, a region)."""
    if (m := _HTTP.search(text)) is None:
        return None
    code = int(m.group(1))
    if code == 429:
        return RateLimited(f"HTTP 429: {text}", retry_after=retry_after)
    if code in (404, 410):
        return NotFound(f"HTTP {code}: {text}")
    if code >= 500:
        return HttpServerError(f"HTTP {code}: {text}")
    return None if code == 403 else HttpClientError(f"HTTP {code}: {text}")


#: The last resort: words of the network layer, most specific first.
_NETWORK: tuple[tuple[tuple[str, ...], type[MinerError]], ...] = (
    (("name or service not known", "temporary failure in name resolution", "nodename nor servname",
      "getaddrinfo failed", "no address associated with hostname", "failed to resolve", "cannot resolve"),
     UnknownHost),
    (("certificate verify failed", "certificate_verify_failed", "ssl: wrong version", "sslerror", "tlsv1 alert",
      "unable to get local issuer certificate", "self-signed certificate", "self signed certificate"), TlsFailed),
    (("proxyerror", "proxy error", "tunnel connection failed", "unable to connect to proxy", "proxy authentication"),
     ProxyFailed),
    (("nocredentialserror", "unable to locate credentials", "partialcredentialserror", "invalidaccesskeyid",
      "signaturedoesnotmatch", "accessdenied", "access denied", "expiredtoken", "anonymous caller does not have",
      "defaultcredentialserror"), StoreAccessDenied),
    (("timed out", "timeout"), NetworkTimeout),
    (("connection refused", "connection reset", "errno 111", "remote end closed"), ConnectionFailed),
)


def classify_network(exc: BaseException, what: str) -> MinerError | None:
    """An exception of the network or an object store's client (socket, ssl, botocore, aiohttp,
    google-auth) as a failure class, by its type's and its text's words; None when it is none."""
    import socket
    import ssl

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, socket.gaierror):
        return UnknownHost(f"{what}: its host name does not resolve ({exc.strerror or exc})")
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(f"{what}: {text}")
    low = text.lower()
    for needles, cls in _NETWORK:
        if any(n in low for n in needles):
            return cls(f"{what}: {text}")
    if isinstance(exc, ConnectionError):
        return ConnectionFailed(f"{what}: {text}")
    if isinstance(exc, TimeoutError):
        return NetworkTimeout(f"{what}: {text}")
    return None


def classify_download_error(message: str, retry_after: float | None = None) -> MinerError:
    """Map yt-dlp's error text to a failure class (yt-dlp reports most failures as text only)."""
    text = message.removeprefix("ERROR: ").strip()
    low = text.lower()
    if (by_status := _http_class(text, retry_after)) is not None:
        return by_status
    if "unsupported url" in low or "is not a valid url" in low or "no suitable extractor" in low:
        return UnsupportedUrl(text)
    if "no space left" in low:
        return DiskFull(text)
    for needles, cls in _PATTERNS:
        if any(n in low for n in needles):
            return RateLimited(text, retry_after=retry_after) if cls is RateLimited else cls(text)
    for needles, cls in _NETWORK:
        if any(n in low for n in needles):
            return cls(text)
    if "http error 403" in low:
        return HttpClientError(f"HTTP 403: {text}")
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
    if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
        return registry_damaged(where, exc)
    return None


#: SQLite's words for a file that is not (or no longer) a sound database. A constraint or a type
#: it refuses (a NaN where a number must be) is a bug in what was written, not damage.
_DAMAGE = ("malformed", "not a database", "file is encrypted", "database corrupt", "unsupported file format")


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return False
    text = str(exc).lower()
    return any(words in text for words in _DAMAGE)


def registry_damaged(path: Path | None, cause: BaseException | str) -> RegistryDamaged:
    """``path``: the registry file, or the output folder holding it."""
    if path is None:
        path = Path("registry.sqlite")
    elif not path.name.startswith("registry.sqlite"):
        path = path / "registry.sqlite"
    output = path.parent
    return RegistryDamaged(
        f"the registry {path} is damaged ({cause}); nothing was deleted: run `video-miner repair -o {output}` to "
        "rebuild it from the files on disk, then the same command again")
