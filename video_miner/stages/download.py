"""Stage 1: make each input a local video file (yt-dlp for URLs, fsspec for object-store URLs;
local files used in place)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from async_pipeline import StageMessage, StageOutput

from ..errors import ConnectionFailed, CorruptMedia, DiskFull, MinerError, NotFound, classify_download_error, disk_full
from ..inputs import VIDEO_EXTENSIONS
from ..naming import slug
from ..registry import State
from .base import MinerStage

#: What the manifest keeps of yt-dlp's info, so a dataset's provenance and licences can be audited.
SOURCE_FIELDS = ("id", "title", "uploader", "channel", "duration", "license", "webpage_url", "extractor", "upload_date")


class DownloadStage(MinerStage):
    # Downloading is I/O bound and yt-dlp objects are per call, so several threads may share one.
    thread_safe = True

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
        from yt_dlp.utils import parse_bytes

        cfg = self.ctx.config.download
        opts: dict[str, Any] = {
            "format": cfg.format,
            # yt-dlp sanitizes the id it fills in; the folder is ours, so nothing escapes it.
            "outtmpl": {"default": str(self.ctx.videos_dir / video_id / "%(id).60B.%(ext)s")},
            "restrictfilenames": True,
            "windowsfilenames": True,
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "socket_timeout": cfg.socket_timeout,
            # Our engine retries whole downloads with backoff; yt-dlp's own loop would multiply it.
            "retries": 0,
            "fragment_retries": 1,
            "extractor_retries": 0,
            "noplaylist": False,
            "overwrites": False,
            # yt-dlp prints to stderr unless given a logger; the progress table owns the terminal.
            "logger": logging.getLogger("video_miner.yt_dlp"),
        }
        if cfg.rate_limit:
            opts["ratelimit"] = parse_bytes(cfg.rate_limit)
        if cfg.cookies:
            opts["cookiefile"] = str(cfg.cookies)
        if cfg.proxy:
            opts["proxy"] = cfg.proxy
        return opts

    def _download(self, msg: StageMessage, video_id: str) -> StageOutput:
        from yt_dlp import YoutubeDL
        from yt_dlp.utils import DownloadError

        url = msg.metadata["source"]
        for attempt in (1, 2):
            try:
                # A fresh YoutubeDL per call: instances are not thread-safe.
                with YoutubeDL(self._ydl_options(video_id)) as ydl:
                    info = ydl.sanitize_info(ydl.extract_info(url, download=True))
                break
            except DownloadError as exc:
                # A run killed after the last byte but before yt-dlp renamed its .part leaves a
                # whole .part: resuming it asks for a range past the end, which servers answer with
                # 416 (or an empty body), and yt-dlp gives up. Such a .part is dropped, once.
                if attempt == 1 and _past_the_end(str(exc)) and self._drop_parts(video_id):
                    continue
                raise self._classify_download(str(exc), video_id) from exc
            except OSError as exc:
                raise self._classify_download(str(exc), video_id) from exc
        if info.get("_type") == "playlist":
            return self._fan_out_playlist(msg, video_id, info)
        path = _downloaded_file(info)
        self._record(video_id, path, info)
        return msg.evolve(input_path=path, metadata={"video_path": str(path)})

    def _classify_download(self, message: str, video_id: str) -> MinerError:
        error = classify_download_error(message)
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


def _downloaded_file(info: dict[str, Any]) -> Path:
    downloads = info.get("requested_downloads") or []
    path = downloads[0].get("filepath") if downloads else info.get("filepath")
    if not path or not Path(path).exists():
        raise MinerError(f"yt-dlp reported no file for {info.get('webpage_url') or info.get('id')}")
    return Path(path)


def _past_the_end(message: str) -> bool:
    return "HTTP Error 416" in message or "Did not get any data blocks" in message
