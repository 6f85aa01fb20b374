"""Stage 2: decode a video as a player shows it (:mod:`video_miner.media`), run the prefilters on
each sampled frame and write the frames that pass; ``frames.json`` commits the extraction."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from async_pipeline import StageOutput

from ..detect.shots import SIZE, shot_of
from ..media.decode import Extraction, every_frame_small, extract_frames
from ..media.prefilter import Prefilter
from ..records import State, VideoRow, VideoUpdate
from ..store.files import make_dirs, place, remove_tree
from ..store.layout import INDEX, frame_name, read_index, write_index
from .base import Message, MinerStage, Progress
from .changes import StageChanges
from .context import StageEnv

log = logging.getLogger(__name__)


class ExtractStage(MinerStage):
    name = "extract"
    progress_unit = "s"

    def __init__(self, env: StageEnv, decoder_threads: int | None = None) -> None:
        super().__init__(env)
        workers = env.config.pipeline.extract_workers
        # Concurrent decoders share the cores instead of each grabbing all of them.
        self.decoder_threads = decoder_threads or max(1, (os.cpu_count() or 2) // workers)

    def handle(self, msg: Message, row: VideoRow | None, changes: StageChanges, progress: Progress) -> StageOutput:
        video_id = msg.item.video_id
        out_dir = self.env.layout.frames_dir / video_id
        if row and row.state in (State.EXTRACTED, State.FILTERED) and (out_dir / INDEX).exists():
            return msg.evolve(input_path=out_dir)
        remove_tree(out_dir)
        assert msg.input_path is not None
        self.env.check_free_space(out_dir)
        make_dirs(out_dir, self.env.output)
        result = self._extract(msg.input_path, out_dir, video_id, progress, changes)
        changes.count(frames_extracted=len(result.frames))
        changes.update(video_id, VideoUpdate(State.EXTRACTED, n_extracted=len(result.frames),
                                             warning="; ".join(result.warnings), media=result.media))
        return msg.evolve(input_path=out_dir, payload=replace(msg.item, warnings=tuple(result.warnings)))

    def _extract(self, path: Path, out_dir: Path, video_id: str, progress: Progress, changes: StageChanges
                 ) -> Extraction:
        """Decode and commit, unless an input with the same bytes was decoded in this run: then its
        frames. Only the first one's frames folder is shared, never its rows: they stay on disk."""
        same_content = self.env.same_content
        key, earlier = same_content.claim(path)
        if earlier is not None and (src_dir := earlier.result()) is not None:  # waits while it decodes
            try:
                result = _same_frames(src_dir, out_dir, video_id, self.env.output)
                changes.count(videos_same_content=1)
                write_index(out_dir, result.index(video_id))
                return result
            except OSError as exc:  # its frames are gone (collected, cleaned up): decode after all
                log.debug("%s: cannot reuse the frames of identical %s (%s)", path.name, src_dir, exc)
                remove_tree(out_dir)
        done: Path | None = None
        try:
            result = extract_frames(path, out_dir, video_id, self.env.config.sampling, self.decoder_threads,
                                    Prefilter(self.env.config.filter), progress)
            if self.env.shots is not None:
                # Animated images have no shots to find (none starts): their frames stay uncapped.
                starts = self.env.shots.shot_starts(every_frame_small(path, SIZE, self.decoder_threads))
                for frame in result.frames:
                    frame.shot = shot_of(starts, frame.t) if starts else None
            write_index(out_dir, result.index(video_id))
            done = out_dir
            return result
        finally:
            same_content.settle(key, path, done)


def _same_frames(src_dir: Path, out_dir: Path, video_id: str, output: Path) -> Extraction:
    """Another input's committed extraction of the same bytes, as this video's: its frames linked
    under this video's names, their records (measures, decisions) unchanged."""
    src = read_index(src_dir)
    make_dirs(out_dir, output)
    frames = []
    for frame in src.frames:
        name = frame_name(video_id, frame.t)
        if frame.decision is None:  # written, not dropped by a prefilter
            place(src_dir / frame.file, out_dir / name, output)
        frames.append(replace(frame, file=name))
    return Extraction(frames=frames, warnings=list(src.warnings), decoded=0, media=src.media)
