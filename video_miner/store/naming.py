"""Filesystem-safe names: nothing from a URL or a title may escape the output folder."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 48


def slug(text: str, max_len: int = MAX_STEM) -> str:
    """ASCII letters, digits, '.', '_' and '-' only; no leading dots; never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", ascii_text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:max_len].strip("._-")
    return cleaned or "video"


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def video_id_for(normalized_input: str, stem: str) -> str:
    """Stable and unique: a readable stem plus a hash of the whole normalized input, so two
    different URLs that both end in ``/video.mp4`` get different ids."""
    return f"{slug(stem)}-{short_hash(normalized_input)}"


_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def is_safe_name(name: str) -> bool:
    """Whether ``name`` could be one :func:`slug` made: one path component, no ``..``, no leading dot."""
    return bool(_NAME.fullmatch(name)) and ".." not in name and len(name) <= 255
