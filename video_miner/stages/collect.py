"""Stage 4: the dedup collector. It files each video's candidate frames and their hashes in the
registry and marks the video done; duplicates across videos are resolved once all are in
(:mod:`video_miner.dedup`), so the result never depends on which video finished first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from async_pipeline import StageMessage, StageOutput

from ..registry import Decision, FrameRow
from .base import MinerStage
from .filter import read_result


class CollectStage(MinerStage):
    thread_safe = True

    def handle(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata["video_id"]
        frames_dir = msg.input_path
        assert frames_dir is not None
        rows = read_result(frames_dir)
        keep_dir = self.ctx.candidates_dir / video_id
        keep_dir.mkdir(parents=True, exist_ok=True)
        frames: list[FrameRow] = []
        for r in rows:
            # Candidates, and deferred frames the export may still have to detect, are kept.
            keep = r["decision"] in (Decision.CANDIDATE, Decision.DEFERRED)
            rel = f"{keep_dir.relative_to(self.ctx.output).as_posix()}/{r['file']}"
            if keep and (frames_dir / r["file"]).exists():
                # Same filesystem: a rename, no copy. Raw frames can then go with the folder.
                os.replace(frames_dir / r["file"], keep_dir / r["file"])
            frames.append(FrameRow(video_id, r["index"], r["t"], rel if keep else r["file"], r["phash"], r["blur"],
                                   r["detections"], r["decision"], r["reason"], r["pixels"], r["bpp"], r["sharpness"]))
        self.ctx.registry.complete_video(video_id, frames)
        self._cleanup(msg)
        return msg

    def _cleanup(self, msg: StageMessage) -> None:
        cfg = self.ctx.config.cleanup
        if cfg.frames and msg.input_path is not None:
            shutil.rmtree(msg.input_path, ignore_errors=True)
        if cfg.videos and msg.metadata["kind"] in ("url", "remote") and msg.metadata.get("video_path"):
            # Only what we downloaded; a user's local files are never touched.
            Path(msg.metadata["video_path"]).unlink(missing_ok=True)
