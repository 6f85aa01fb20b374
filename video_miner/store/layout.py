"""The output folder's layout and its commit files: where each stage's work lives, and the files
whose presence says a step is finished.

    <output>/registry.sqlite        per-video state (store/registry.py)
    <output>/work/videos/<id>/      downloads
    <output>/work/frames/<id>/      a video's sampled frames; frames.json commits the extraction,
                                    filter.json the filter's decisions
    <output>/work/candidates/<id>/  frames the export may keep (moved there by the collect stage)
    <output>/work/thumbs/<id>/      small copies of frames the models did not keep (the gallery's)
    <output>/work/live/<segment>/   live frames waiting for their decision
    <output>/dataset/               the export, swapped in whole
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..records import FrameRecord, MediaInfo
from .files import is_inside, read_json, refuse_links, write_json

#: Commits a video's extraction: frames without it are an interrupted extraction.
INDEX = "frames.json"
#: Commits the filter's decisions for a video's frames.
RESULT = "filter.json"
REGISTRY = "registry.sqlite"
#: Files SQLite keeps beside the registry.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
LOCK = ".video-miner.lock"
METRICS, GALLERY, TIMELINE = "metrics.json", "gallery.html", "timeline.png"
#: Every failed input of the last run, a line each (class, message, input).
FAILURES = "failures.tsv"


@dataclass(frozen=True)
class OutputLayout:
    """The paths of one output folder."""

    output: Path

    @property
    def work(self) -> Path:
        return self.output / "work"

    @property
    def videos_dir(self) -> Path:
        return self.work / "videos"

    @property
    def frames_dir(self) -> Path:
        return self.work / "frames"

    @property
    def candidates_dir(self) -> Path:
        return self.work / "candidates"

    @property
    def thumbs_dir(self) -> Path:
        """Small copies of the frames the models judged and did not keep, for the gallery."""
        return self.work / "thumbs"

    @property
    def live_dir(self) -> Path:
        return self.work / "live"

    @property
    def dataset_dir(self) -> Path:
        return self.output / "dataset"

    @property
    def registry(self) -> Path:
        return self.output / REGISTRY

    def relative(self, path: Path) -> str:
        """``path`` (under the output folder) as the registry names it."""
        return path.relative_to(self.output).as_posix()

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (links and ``..`` resolved) is in the output folder."""
        return is_inside(path, self.output)

    def written(self) -> list[Path]:
        """Everything a run writes directly in the output folder: none may be a symbolic link."""
        names = (LOCK, REGISTRY, *(REGISTRY + s for s in SQLITE_SIDECARS), "work", "dataset", "dataset.staging",
                 "dataset.old", METRICS, GALLERY, TIMELINE, FAILURES, "profile.pstats", "profile.txt")
        work = [self.videos_dir, self.frames_dir, self.candidates_dir, self.thumbs_dir, self.live_dir]
        return [self.output / name for name in names] + work

    def check_links(self) -> None:
        refuse_links(self.written())


def frame_name(video_id: str, seconds: float) -> str:
    return f"{video_id}_{round(seconds * 1000):09d}ms.jpg"


@dataclass
class ExtractionIndex:
    """A video's committed extraction (``frames.json``): its sampled frames with their measures and
    prefilter decisions, what went wrong while decoding, and how it was decoded."""

    video_id: str
    frames: list[FrameRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    media: MediaInfo = field(default_factory=MediaInfo)


#: A commit file larger than this is not one video-miner wrote (100k frames take ~60 MB).
MAX_COMMIT_BYTES = 1 << 30


def write_index(frames_dir: Path, index: ExtractionIndex) -> None:
    """Into a video's frames folder (made, and checked, by the extract stage)."""
    write_json(frames_dir / INDEX, {"video_id": index.video_id, "frames": [f.as_json() for f in index.frames],
                                    "warnings": index.warnings, "media": index.media.as_json()}, frames_dir)


def read_index(frames_dir: Path) -> ExtractionIndex:
    data = read_json(frames_dir / INDEX, MAX_COMMIT_BYTES)
    return ExtractionIndex(str(data["video_id"]), [FrameRecord.from_json(f) for f in data["frames"]],
                           [str(w) for w in data.get("warnings") or []], MediaInfo.from_json(data.get("media")))


def write_result(frames_dir: Path, frames: list[FrameRecord]) -> None:
    write_json(frames_dir / RESULT, [f.as_json() for f in frames], frames_dir)


def read_result(frames_dir: Path) -> list[FrameRecord]:
    return [FrameRecord.from_json(f) for f in read_json(frames_dir / RESULT, MAX_COMMIT_BYTES)]
