"""How the download stage sets up yt-dlp: its JavaScript runtime (YouTube needs one since
yt-dlp 2025.11: the ``deno`` package's binary, found without the user doing anything), cookies
from a browser, and the extra ``download.ytdlp_options`` a user may pass, checked against what is
safe to let through."""

from __future__ import annotations

import re
from typing import Any

#: yt-dlp options a config may set (YoutubeDL's own names), passed through as given.
ALLOWED_OPTIONS = frozenset({
    "format_sort", "format_sort_force", "prefer_free_formats", "check_formats", "allow_multiple_video_streams",
    "http_headers", "impersonate", "source_address", "geo_bypass", "geo_bypass_country", "geo_bypass_ip_block",
    "geo_verification_proxy", "extractor_args", "sleep_interval", "max_sleep_interval", "sleep_interval_requests",
    "throttledratelimit", "http_chunk_size", "concurrent_fragment_downloads", "hls_prefer_native", "hls_use_mpegts",
    "hls_split_discontinuity", "dynamic_mpd", "nocheckcertificate", "legacyserverconnect", "username", "password",
    "twofactor", "videopassword", "ap_mso", "ap_username", "ap_password", "usenetrc", "netrc_location", "age_limit",
    "playlist_items", "playlistreverse", "playlistrandom", "lazy_playlist", "noplaylist", "extractor_retries",
    "file_access_retries", "skip_unavailable_fragments", "keep_fragments", "buffersize", "noresizebuffer",
    "min_filesize", "max_filesize", "match_filter_str", "live_from_start", "wait_for_video", "xff",
})
#: Set by video-miner itself: the config key to use instead.
MANAGED_OPTIONS = {
    "format": "download.format", "cookiefile": "download.cookies", "cookiesfrombrowser": "--cookies-from-browser",
    "proxy": "download.proxy", "ratelimit": "download.rate_limit", "socket_timeout": "download.socket_timeout",
    "retries": "download.retries", "fragment_retries": "download.retries", "outtmpl": "--output",
    "js_runtimes": "(found automatically; see video-miner doctor)",
}
#: Never let through: they run commands, write outside the output folder, or fetch code.
UNSAFE_OPTIONS = {
    "exec": "runs a shell command", "exec_cmd": "runs a shell command", "postprocessors": "runs post-processors",
    "postprocessor_args": "passes arguments to external programs", "external_downloader": "runs another program",
    "external_downloader_args": "passes arguments to external programs", "netrc_cmd": "runs a shell command",
    "paths": "writes outside the output folder", "download_archive": "writes outside the output folder",
    "cachedir": "writes outside the output folder", "plugin_dirs": "loads code", "remote_components": "fetches code",
    "load_info_filename": "reads arbitrary files", "print_to_file": "writes outside the output folder",
    "logger": "replaces video-miner's logging", "progress_hooks": "code, not a setting",
    "postprocessor_hooks": "code, not a setting", "match_filter": "code, not a setting (use match_filter_str)",
}


def check_ytdlp_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as given, or a ValueError naming the first option that may not be set."""
    for key in options:
        if key in UNSAFE_OPTIONS:
            raise ValueError(f"yt-dlp option {key!r} is refused: it {UNSAFE_OPTIONS[key]}")
        if key in MANAGED_OPTIONS:
            raise ValueError(f"yt-dlp option {key!r} is set by video-miner: use {MANAGED_OPTIONS[key]}")
        if key not in ALLOWED_OPTIONS:
            raise ValueError(f"unknown or unsupported yt-dlp option {key!r}; allowed: {', '.join(sorted(ALLOWED_OPTIONS))}")
    return options


_BROWSER = re.compile(r"(?P<name>[^+:]+)(?:\s*\+\s*(?P<keyring>[^:]+))?(?:\s*:\s*(?!:)(?P<profile>.+?))?"
                      r"(?:\s*::\s*(?P<container>.+))?")


def parse_cookies_from_browser(spec: str) -> tuple[str, str | None, str | None, str | None]:
    """yt-dlp's ``--cookies-from-browser BROWSER[+KEYRING][:PROFILE][::CONTAINER]``, parsed and
    checked as yt-dlp does, as its ``cookiesfrombrowser`` option."""
    from yt_dlp.cookies import SUPPORTED_BROWSERS, SUPPORTED_KEYRINGS

    m = _BROWSER.fullmatch(spec.strip())
    if m is None:
        raise ValueError(f"cookies_from_browser {spec!r}: expected BROWSER[+KEYRING][:PROFILE][::CONTAINER]")
    name, keyring, profile, container = m.group("name", "keyring", "profile", "container")
    name = name.lower()
    if name not in SUPPORTED_BROWSERS:
        raise ValueError(f"cookies_from_browser: unsupported browser {name!r}; one of {', '.join(sorted(SUPPORTED_BROWSERS))}")
    if keyring is not None and keyring.upper() not in SUPPORTED_KEYRINGS:
        raise ValueError(f"cookies_from_browser: unsupported keyring {keyring!r}; one of "
                         f"{', '.join(sorted(SUPPORTED_KEYRINGS))}")
    return name, profile, keyring.upper() if keyring else None, container


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
