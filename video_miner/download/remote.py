"""Object stores and other fsspec filesystems (``s3://``, ``gs://``, ``az://``, ``file://``, ...):
opening one with an error a user can act on, listing the videos under a prefix, copying one here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

from ..errors import ConfigError, ConnectionFailed, NotFound, classify_network, environment_error
from ..media.formats import VIDEO_EXTENSIONS
from ..store.naming import slug


def open_filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, root path within it) for ``url``, with an actionable error if its
    protocol needs a package that is not installed (s3fs for s3://, gcsfs for gs://, ...)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise ConfigError(f"{url}: {exc} (install it on the driver and every node)") from exc
    except ValueError as exc:
        raise ConfigError(f"{url}: not an fsspec URL fsspec knows ({exc})") from exc
    return fs, root.rstrip("/")


def remote_videos(prefix: str) -> list[str]:
    """Every video file under an fsspec URL prefix, sorted, as full URLs."""
    fs, root = open_filesystem(prefix)
    return [fs.unstrip_protocol(p) for p in sorted(fs.find(root)) if Path(p).suffix.lower() in VIDEO_EXTENSIONS]


def copy_remote(url: str, folder: Path) -> Path:
    """Copy an object-store file into ``folder``, under a temporary name until it is complete."""
    _, path = fsspec.core.split_protocol(url)
    name = Path(path or url).name
    suffix = Path(name).suffix.lower()
    dest = folder / (slug(Path(name).stem, 60) + (suffix if suffix in VIDEO_EXTENSIONS else ""))
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs, path = open_filesystem(url)  # some protocols (ftp, sftp) connect here already
        fs.get_file(path, str(part))
    except FileNotFoundError as exc:
        raise NotFound(f"{url} does not exist") from exc
    except OSError as exc:
        if environment_error(exc) is not None:  # our disk, not the store
            raise
        raise classify_network(exc, url) or ConnectionFailed(f"{url}: {exc.strerror or exc}") from exc
    except Exception as exc:  # the store's client: missing credentials, access denied, DNS, TLS
        known = classify_network(exc, url)
        if known is None:
            raise
        raise known from exc
    os.replace(part, dest)
    return dest
