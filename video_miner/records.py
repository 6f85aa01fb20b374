"""The typed records that cross a stage or go to disk, each defined once here.

JSON and SQLite hold them as plain values; ``from_json``/``as_json`` (and the registry's row
readers) are the only places their fields are named by string. The JSON keys are the ones earlier
releases wrote, so work folders and registries written by them still resume.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, TypedDict

import numpy as np


class State(StrEnum):
    """Where a video (or a live segment) is: each state is committed before the next stage sees it."""

    QUEUED = "queued"
    DOWNLOADED = "downloaded"
    EXTRACTED = "extracted"
    FILTERED = "filtered"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: A live source (or one connection of it) being read: its frames commit one by one.
    LIVE = "live"


UNFINISHED = (State.QUEUED, State.DOWNLOADED, State.EXTRACTED, State.FILTERED)


class FrameCounts(TypedDict, total=False):
    """The run's counters, by name (what a stage adds to them; mypy checks every name)."""

    frames_extracted: int
    frames_filtered: int
    frames_candidates: int
    frames_deferred: int
    frames_to_detector: int
    frames_kept: int
    frames_duplicates: int
    bytes_downloaded: int
    videos_same_content: int
    tracks: int
    frames_hard: int


class LiveCounts(TypedDict, total=False):
    """One live source's counters, by name (:class:`~video_miner.live.stats.LiveStats`)."""

    frames_captured: int
    frames_sampled: int
    frames_filtered: int
    frames_dropped: int
    frames_decided: int
    frames_corrupt: int
    candidates: int
    frames_partial: int
    frames_expired: int
    reconnects: int
    tracks_new: int


class Decision(StrEnum):
    """What the filter decided for one frame (the export turns these into kept/duplicate/filtered)."""

    FILTERED = "filtered"  # a prefilter dropped it: blurry or static
    NEGATIVE = "negative"  # the detector found none of the classes
    CANDIDATE = "candidate"  # the detector found some: dedup decides
    DEFERRED = "deferred"  # near a more preferred candidate: detection skipped, dedup decides


@dataclass(frozen=True)
class Detection:
    """One box of a wanted class: ``xywhn`` is centre x, centre y, width, height, 0-1 of the picture."""

    label: str
    class_index: int
    conf: float
    xywhn: tuple[float, float, float, float]
    #: With a ``models:`` list: the model that found it, and for an OCR box the text it read.
    model: str | None = None
    text: str | None = None
    #: With tracks on (:mod:`video_miner.detect.tracking`): the object's track in its video (1, 2, ...),
    #: how good a view of it this box is (0-1), and why the model contradicts itself here, if it does
    #: (``missed between ...``: the tracker placed this box where the model found nothing; ``car -> truck``).
    track: int | None = None
    view: float | None = None
    hard: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"class": self.label, "class_index": self.class_index, "conf": self.conf,
                               "xywhn": list(self.xywhn)}
        # each absent when unset: a run without models or tracks keeps its manifest as it was
        for name in ("model", "text", "track", "view", "hard"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Detection:
        x, y, w, h = (float(v) for v in data["xywhn"])
        model, text, hard = data.get("model"), data.get("text"), data.get("hard")
        track, view = data.get("track"), data.get("view")
        return cls(str(data["class"]), int(data["class_index"]), float(data["conf"]), (x, y, w, h),
                   None if model is None else str(model), None if text is None else str(text)[:1000],
                   None if track is None else int(track), None if view is None else float(view),
                   None if hard is None else str(hard)[:200])


@dataclass(frozen=True)
class FrameEmbedding:
    """What a frame shows, as the detector's features say (:mod:`video_miner.detect.embed`): unit
    vectors, ``whole`` (d,) for the picture, ``boxes`` (n, e) one per detection, in their order."""

    whole: np.ndarray
    boxes: np.ndarray

    def to_bytes(self) -> bytes:
        """float16 (half the space; cosine similarities move by < 1e-3): n, d, e, then the vectors."""
        n, d, e = self.boxes.shape[0], self.whole.shape[0], self.boxes.shape[1]
        return struct.pack("<HHH", n, d, e) + self.whole.astype("<f2").tobytes() + self.boxes.astype("<f2").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameEmbedding:
        if len(data) < 6:
            raise ValueError(f"embedding of {len(data)} bytes has no header")
        n, d, e = struct.unpack_from("<HHH", data)
        if len(data) != 6 + 2 * (d + n * e) or d == 0:
            raise ValueError(f"embedding of {len(data)} bytes does not hold {d} + {n} x {e} values")
        whole = np.frombuffer(data, dtype="<f2", count=d, offset=6).astype(np.float32)
        boxes = np.frombuffer(data, dtype="<f2", offset=6 + 2 * d).astype(np.float32).reshape(n, e)
        if not (np.isfinite(whole).all() and np.isfinite(boxes).all()):
            # the detector never writes these; a NaN would poison every similarity (and the index's SVD)
            raise ValueError("embedding holds values that are not finite")
        return cls(whole, boxes)


class Detections(list[Detection]):
    """A frame's boxes of the wanted classes, as the detector returns them, with the frame's
    embedding when the detector was asked for one (a :class:`FrameEmbedding` as bytes). Boxes with
    a ``reason`` are what the models found on a frame that is not kept (the keep rule failed): kept
    for the manifest, so a missed detection can be audited."""

    embedding: bytes | None = None
    #: Why a frame whose models found something is not kept (the keep rule failed, a model did not
    #: answer in time); None: the filter's usual reason.
    reason: str | None = None
    #: The embedding for other boxes of the same frame (another model's too), while the detector's
    #: features of it are at hand (until the frame's models are joined); never stored.
    repool: Callable[[list[Detection]], bytes] | None = None
    #: How several models' answers met (``matched``, ``partial``, ``expired``); None with one model.
    sync: str | None = None
    #: With tracks on: boxes under the threshold (see ``DetectorSpec.weak_conf``); never stored.
    weak: tuple[Detection, ...] = ()

    @property
    def kept(self) -> bool:
        """Whether the frame shows what the dataset keeps: boxes, and no reason against it."""
        return bool(self) and self.reason is None

    @classmethod
    def of(cls, boxes: list[Detection], embedding: bytes | None = None, reason: str | None = None,
           sync: str | None = None) -> Detections:
        out = cls(boxes)
        out.embedding = embedding
        out.reason = reason
        out.sync = sync
        return out


def intersection(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two ``xywhn`` boxes share (0-1 of the picture)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2))
    ih = max(0.0, min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2))
    return iw * ih


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``xywhn`` boxes."""
    shared = intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - shared
    return shared / union if union > 0 else 0.0


#: A box closer than this (0-1 of the picture) to an edge is cut by it.
EDGE = 0.01


def is_cut(box: Detection) -> bool:
    """Whether the frame's edge cuts the box (its object goes on outside the picture)."""
    x, y, w, h = box.xywhn
    return x - w / 2 < EDGE or y - h / 2 < EDGE or x + w / 2 > 1 - EDGE or y + h / 2 > 1 - EDGE


def covered(box: Detection, others: list[Detection]) -> float:
    """The largest share of ``box`` that another of ``others`` covers."""
    area = box.xywhn[2] * box.xywhn[3]
    if area <= 0:
        return 0.0
    return max((intersection(box.xywhn, o.xywhn) / area for o in others if o is not box), default=0.0)


def detections_json(detections: list[Detection]) -> list[dict[str, Any]]:
    return [d.as_json() for d in detections]


def detections_from_json(data: list[dict[str, Any]] | None) -> list[Detection]:
    return [Detection.from_json(d) for d in data or []]


@dataclass(frozen=True)
class Review:
    """A person's verdict on a frame, brought back from a labelling tool (``video-miner import``):
    the boxes as reviewed (added, moved, re-classed, deleted), or that the frame is rejected."""

    frame: str
    tool: str
    boxes: list[Detection]
    rejected: bool = False
    who: str | None = None
    at: str | None = None
    #: Its place among the frame's reviews (1, 2, ...), as the registry numbers them.
    revision: int = 0

    def same_as(self, other: Review) -> bool:
        """Whether it says what ``other`` says (who and when apart)."""
        return self.rejected == other.rejected and [(d.label, d.xywhn, d.text) for d in self.boxes] == [
            (d.label, d.xywhn, d.text) for d in other.boxes]

    def as_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "tool": self.tool, "boxes": detections_json(self.boxes), "rejected": self.rejected,
                "who": self.who, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Review:
        return cls(str(data["frame"]), str(data["tool"]), detections_from_json(data.get("boxes")),
                   bool(data.get("rejected")), None if data.get("who") is None else str(data["who"])[:200],
                   None if data.get("at") is None else str(data["at"])[:64])


@dataclass
class MediaInfo:
    """How a video's frames were decoded and are shown (the manifest's media fields, in its order)."""

    track: int | None = None
    codec: str | None = None
    pixel_format: str | None = None
    decoded_size: list[int] | None = None
    display_size: list[int] | None = None
    sample_aspect_ratio: str | None = None
    rotation: int | None = None
    mirrored: bool | None = None
    hdr: str | None = None
    bpp: float | None = None

    def as_json(self) -> dict[str, Any]:
        """Only what is known (the registry and frames.json keep it so)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def manifest_fields(self) -> dict[str, Any]:
        """Every field, unknown ones as None, in the manifest's order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> MediaInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass
class FrameRecord:
    """One sampled frame of a video, from extraction through the filter: its file, time, measures
    and (once decided) its decision. ``frames.json`` and ``filter.json`` hold lists of these."""

    file: str
    t: float
    index: int
    #: The source's pixels as shown (inside black bars), its bits per pixel and the frame's
    #: sharpness at a common scale: which of near-identical frames dedup keeps.
    pixels: int
    bpp: float
    phash: int = 0
    blur: float = 0.0
    sharpness: float = 0.0
    #: None while undecided; set by a prefilter (filtered) or the filter.
    decision: Decision | None = None
    reason: str | None = None
    #: Hash of the JPEG's bytes: byte-identical frames share one detection. None when filtered.
    digest: str | None = None
    detections: list[Detection] = field(default_factory=list)
    #: Whether the detector saw this frame (not deferred, not a twin's reuse).
    detected: bool = False
    #: Its own sizes, where they differ from the video's first frame's (a resolution change mid-stream).
    decoded_size: list[int] | None = None
    display_size: list[int] | None = None
    #: What the detector's features say it shows (see :class:`Detections`); None when not computed.
    embedding: bytes | None = None
    #: Which shot of its video it is in (0, 1, ...), with a shots model; None otherwise.
    shot: int | None = None
    #: How its models' answers met (see :class:`Detections`); for the live figures, never stored.
    sync: str | None = None
    #: With tracks on: the boxes under the threshold (see :class:`Detections`), for the tracker's
    #: hard marks; never stored.
    weak: tuple[Detection, ...] = ()

    def as_json(self) -> dict[str, Any]:
        out = {"file": self.file, "t": self.t, "index": self.index, "pixels": self.pixels, "bpp": self.bpp,
                "phash": self.phash, "blur": self.blur, "sharpness": self.sharpness, "decision": self.decision,
                "reason": self.reason, "digest": self.digest, "detections": detections_json(self.detections),
                "detected": self.detected, "decoded_size": self.decoded_size, "display_size": self.display_size,
                "embedding": base64.b64encode(self.embedding).decode() if self.embedding else None}
        if self.shot is not None:
            out["shot"] = self.shot
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameRecord:
        decision = data.get("decision")
        return cls(file=str(data["file"]), t=float(data["t"]), index=int(data["index"]), pixels=int(data["pixels"]),
                   bpp=float(data["bpp"]), phash=int(data.get("phash", 0)), blur=float(data.get("blur", 0.0)),
                   sharpness=float(data.get("sharpness", 0.0)), decision=Decision(decision) if decision else None,
                   reason=data.get("reason"), digest=data.get("digest"),
                   detections=detections_from_json(data.get("detections")), detected=bool(data.get("detected")),
                   decoded_size=data.get("decoded_size"), display_size=data.get("display_size"),
                   embedding=base64.b64decode(data["embedding"]) if data.get("embedding") else None,
                   shot=None if data.get("shot") is None else int(data["shot"]))

    @property
    def keeps_file(self) -> bool:
        """Whether the export may still need its picture: a candidate, or deferred (maybe detected at export)."""
        return self.decision in (Decision.CANDIDATE, Decision.DEFERRED)


@dataclass(frozen=True)
class FrameRow:
    """A frame as the registry holds it: a :class:`FrameRecord` of a video, once that video is done
    (or, for a live segment, once the frame is decided)."""

    video_id: str
    frame_index: int
    timestamp: float
    file: str
    phash: int
    blur: float
    detections: list[Detection]
    decision: Decision
    reason: str | None = None
    pixels: int = 0
    bpp: float = 0.0
    sharpness: float = 0.0
    #: The frame's own sizes where they differ from its video's (see :class:`FrameRecord`).
    decoded_size: list[int] | None = None
    display_size: list[int] | None = None
    embedding: bytes | None = None
    shot: int | None = None

    @classmethod
    def of(cls, video_id: str, frame: FrameRecord, file: str) -> FrameRow:
        assert frame.decision is not None, "only decided frames are recorded"
        return cls(video_id, frame.index, frame.t, file, frame.phash, frame.blur, frame.detections, frame.decision,
                   frame.reason, frame.pixels, frame.bpp, frame.sharpness, frame.decoded_size, frame.display_size,
                   frame.embedding, frame.shot)

    def media_of(self, video: MediaInfo) -> MediaInfo:
        """How this frame was decoded and is shown: its video's, with its own sizes if it has them."""
        if self.decoded_size is None and self.display_size is None:
            return video
        return replace(video, decoded_size=self.decoded_size or video.decoded_size,
                       display_size=self.display_size or video.display_size)

    @property
    def key(self) -> str:
        """The frame's name in the manifest: ``video@seconds``."""
        return f"{self.video_id}@{self.timestamp:.3f}"


@dataclass(frozen=True)
class VideoRow:
    """A video (or a live segment, or a playlist) as the registry holds it."""

    video_id: str
    input: str
    normalized: str
    kind: str
    order: int
    state: State
    parent: str | None = None
    attempts: int = 0
    error_class: str | None = None
    error_message: str | None = None
    warning: str | None = None
    path: str | None = None
    #: What yt-dlp said of the source (title, uploader, licence, ...): the manifest's ``source_meta``.
    source_meta: dict[str, Any] = field(default_factory=dict)
    media: MediaInfo = field(default_factory=MediaInfo)
    n_extracted: int = 0
    n_candidates: int = 0
    n_kept: int = 0
    n_duplicates: int = 0
    bytes_downloaded: int = 0
    config_hash: str | None = None


@dataclass(frozen=True)
class VideoItem:
    """What a message of the file pipeline carries: one video on its way through the stages."""

    video_id: str
    #: "local", "url" (yt-dlp), "remote" (an fsspec URL) or "live".
    kind: str
    #: The normalized input: a path or a URL.
    source: str
    order: int
    #: The file the download stage made (a user's own local file is never named here).
    video_path: str | None = None
    warnings: tuple[str, ...] = ()
    #: Stage -> node id, where the Ray engine ran each stage.
    nodes: tuple[tuple[str, str], ...] = ()

    def downloaded(self) -> bool:
        """Whether the file is ours to delete (downloaded or copied), not a user's own."""
        return self.kind in ("url", "remote") and self.video_path is not None


@dataclass(frozen=True)
class LiveFrame:
    """What a message of the live pipeline carries: one sampled, prefiltered camera frame."""

    frame: FrameRecord
    #: The segment (one connection to the source) the frame belongs to, and the source itself.
    video_id: str
    source_id: str
    order: int
    #: Wall-clock time the frame was read (latency is measured from here to its decision).
    captured_at: float
    media: MediaInfo


@dataclass(frozen=True)
class VideoUpdate:
    """A change of a video's registry row: its new state and the fields that come with it (None
    leaves a field as it is; an empty ``warning`` clears it)."""

    state: State
    path: str | None = None
    source_meta: dict[str, Any] | None = None
    media: MediaInfo | None = None
    n_extracted: int | None = None
    bytes_downloaded: int | None = None
    warning: str | None = None
    error_class: str | None = None
    error_message: str | None = None
