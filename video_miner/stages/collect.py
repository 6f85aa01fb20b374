"""Stage 4: the dedup collector. It files each video's candidate frames and their hashes in the
registry and marks the video done; duplicates across videos are resolved once all are in
(:mod:`video_miner.dataset.dedup`), so the result never depends on which video finished first."""

from __future__ import annotations

from pathlib import Path

from async_pipeline import StageOutput

from ..media.writer import thumbnail_jpeg
from ..records import Decision, FrameRow, VideoRow
from ..store.files import is_inside, make_dirs, move, write_bytes
from ..store.layout import read_result
from .base import Message, MinerStage, Progress
from .changes import StageChanges


class CollectStage(MinerStage):
    name = "collect"

    def handle(self, msg: Message, row: VideoRow | None, changes: StageChanges, progress: Progress) -> StageOutput:
        video_id = msg.item.video_id
        frames_dir = msg.input_path
        assert frames_dir is not None
        layout = self.env.layout
        keep_dir = layout.candidates_dir / video_id
        make_dirs(keep_dir, layout.output)
        rows: list[FrameRow] = []
        for frame in read_result(frames_dir):
            # Candidates, and deferred frames the export may still have to detect, are kept.
            file = frame.file
            if frame.keeps_file:
                file = layout.relative(keep_dir / frame.file)
                if (frames_dir / frame.file).exists():
                    # Same filesystem: a rename, no copy. Raw frames can then go with the folder.
                    move(frames_dir / frame.file, keep_dir / frame.file, layout.output)
            elif frame.decision == Decision.NEGATIVE and (frames_dir / frame.file).exists():
                # What the models judged and did not keep: a small copy, so a miss can be audited.
                write_bytes(layout.thumbs_dir / video_id / frame.file, thumbnail_jpeg(frames_dir / frame.file),
                            layout.output)
            rows.append(FrameRow.of(video_id, frame, file))
        changes.complete(video_id, rows)
        cleanup = self.env.config.cleanup
        if cleanup.frames:
            changes.remove(frames_dir)
        video = Path(msg.item.video_path) if msg.item.video_path else None
        if cleanup.videos and msg.item.downloaded() and video is not None and is_inside(video, layout.videos_dir):
            # Only what we downloaded; a user's local files are never touched.
            changes.remove(video)
        return msg
