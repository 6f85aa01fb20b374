"""Turn what the user listed (URLs, paths, file:// URLs, folders, object-store URLs and prefixes)
into ordered, unique sources."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from ..download.remote import remote_videos
from ..errors import ConfigError, EmptyInput, NotFound, UnsupportedUrl
from ..media.formats import VIDEO_EXTENSIONS
from ..store.naming import video_id_for


def is_listed_video(path: Path, root: Path) -> bool:
    """A video file of a folder: a video extension, and neither it nor a folder above it (under
    ``root``) hidden. Hidden names are system files, not footage: a Mac's ``._clip.mp4``
    resource forks, ``.Trash``, ``.git``, editors' and sync tools' temporary copies (``~$x``)."""
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        return False
    return not any(part.startswith((".", "~")) for part in path.relative_to(root).parts)


#: Gap between two input lines' order keys; folder entries and playlist entries fill the gap.
ORDER_STRIDE = 1_000_000
#: Read continuously at their own pace by :mod:`video_miner.live` instead of being downloaded.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "srt", "udp", "tcp", "rtp"})


@dataclass(frozen=True)
class Source:
    raw: str
    normalized: str
    #: "local", "url" (yt-dlp), "remote" (an fsspec URL: s3://, gs://, ...), "live" (a stream or a
    #: capture device, read continuously) or "invalid"
    kind: str
    video_id: str
    #: Position in the user's list; breaks ties between equal frames deterministically.
    order: int
    error: str | None = None
    #: Failure class of an invalid input (see :mod:`video_miner.errors`).
    error_kind: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.normalized)


def read_input_lines(paths_or_inputs: Iterable[str]) -> list[str]:
    """Each argument is either a list file (one input per line, ``#`` comments) or an input."""
    lines: list[str] = []
    for arg in paths_or_inputs:
        candidate = Path(arg)
        if candidate.suffix.lower() in {".txt", ".list", ".urls"} and _is_file(candidate):
            # utf-8-sig: a list saved by Windows tools starts with a byte-order mark.
            for line in candidate.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    lines.append(line)
        elif arg.strip():  # an empty argument is no input (as a path it would be the current folder)
            lines.append(arg.strip())
    return lines


def _stem_of_url(url: str) -> str:
    parts = urlsplit(url)
    last = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    stem = last.rsplit(".", 1)[0] if "." in last else last
    return stem or parts.netloc or "video"


def _fsspec_knows(scheme: str) -> bool:
    import fsspec

    return scheme in fsspec.available_protocols()


def _classify(line: str) -> tuple[str, str, str | None]:
    """(kind, normalized, error); an "invalid" kind is always an unsupported URL or name."""
    try:
        return _classify_line(line)
    except (OSError, ValueError, RuntimeError) as exc:  # a name too long for the filesystem, "~nobody/x"
        return "invalid", line, f"not a usable path ({getattr(exc, 'strerror', None) or exc})"


def _classify_line(line: str) -> tuple[str, str, str | None]:
    if any(ord(c) < 32 for c in line):
        return "invalid", line, "the input holds control characters"
    parts = urlsplit(line)
    scheme = parts.scheme.lower()
    if scheme in LIVE_SCHEMES:
        if not parts.netloc and scheme != "udp":
            return "invalid", line, f"malformed {scheme} URL: no host"
        return "live", parts._replace(scheme=scheme).geturl(), None
    if line.startswith("/dev/video") or line.startswith("v4l2://"):
        return "live", line.removeprefix("v4l2://"), None
    if scheme == "file":
        return "local", str(Path(unquote(parts.path)).resolve()), None
    if scheme in {"http", "https"}:
        if not parts.netloc:
            return "invalid", line, "malformed URL: no host"
        return "url", parts._replace(scheme=scheme, netloc=parts.netloc.lower()).geturl(), None
    if "://" in line and parts.netloc and _fsspec_knows(scheme):
        return "remote", line, None
    if "://" in line or (scheme and len(scheme) > 1 and not Path(line).exists()):
        return "invalid", line, f"malformed or unsupported URL scheme {scheme!r}"
    return "local", str(Path(line).expanduser().resolve()), None


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except OSError:  # a name too long for the filesystem
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _host_and_port(parts: SplitResult) -> str:
    try:
        port = parts.port
    except ValueError:  # not a number: not worth naming
        port = None
    return (parts.hostname or "") + (f"-{port}" if port else "")


def expand_sources(lines: Iterable[str]) -> list[Source]:
    """Normalize, expand folders (sorted, video extensions only) and drop repeated inputs."""
    sources: list[Source] = []
    seen: set[str] = set()

    def add(raw: str, kind: str, normalized: str, stem: str, order: int, error: str | None = None,
            error_kind: str | None = None) -> None:
        if normalized in seen:
            return
        seen.add(normalized)
        sources.append(Source(raw, normalized, kind, video_id_for(normalized, stem), order, error, error_kind))

    for line_no, line in enumerate(lines):
        order = line_no * ORDER_STRIDE
        if not line.strip():
            continue
        kind, normalized, error = _classify(line)
        if kind == "url":
            add(line, kind, normalized, _stem_of_url(normalized), order)
        elif kind == "live":
            parts = urlsplit(normalized)
            # The host, never the user info: a camera's password must not become a folder name.
            add(line, kind, normalized, f"{parts.scheme or 'v4l2'}-{_host_and_port(parts) or Path(normalized).name}", order)
        elif kind == "remote" and normalized.endswith("/"):
            # A prefix (a trailing slash, as with folders): every video under it.
            try:
                urls = remote_videos(normalized)
            except (OSError, ConfigError) as exc:
                add(line, "invalid", normalized, _stem_of_url(normalized), order, f"cannot list: {exc}", NotFound.kind)
                continue
            if not urls:
                add(line, "invalid", normalized, _stem_of_url(normalized), order, "the prefix holds no video files",
                    EmptyInput.kind)
            for k, url in enumerate(urls):
                add(url, "remote", url, _stem_of_url(url), order + k + 1)
        elif kind == "remote":
            add(line, kind, normalized, _stem_of_url(normalized), order)
        elif kind == "invalid":
            add(line, kind, normalized, "invalid", order, error, UnsupportedUrl.kind)
        elif _is_dir(normalized):
            root = Path(normalized)
            videos = sorted(p for p in root.rglob("*") if is_listed_video(p, root) and p.is_file())
            if not videos:
                add(line, "invalid", normalized, Path(normalized).name, order, "the folder holds no video files",
                    EmptyInput.kind)
            for k, video in enumerate(videos):
                add(str(video), "local", str(video.resolve()), video.stem, order + k + 1)
        else:
            add(line, "local", normalized, Path(normalized).stem, order)
    return sources


def source_for_path(path: Path, order: int) -> Source:
    """A local video found outside the input list (a watched folder's new file)."""
    normalized = str(path.expanduser().resolve())
    return Source(str(path), normalized, "local", video_id_for(normalized, path.stem), order)
