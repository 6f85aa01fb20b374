"""Stage 3 (the GPU stage): cheap prefilters first, then the detector in batches.

Prefilters drop blurry frames (variance of the Laplacian) and frames nearly identical to the last
frame sent to the detector (thumbnail difference), so static stretches cost one inference, not
dozens. Byte-identical frames seen before (the same video listed twice) reuse their detections,
and near-duplicates of a more preferred frame already found to show the classes are deferred:
dedup will almost surely drop them, and the export detects the few it does not.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from async_pipeline import StageMessage, StageOutput

from ..context import MiningContext, priority_key
from ..detector import Detector
from ..frame_quality import frame_difference, measure, open_gray
from ..fsutil import atomic_write_json, read_json
from ..registry import Decision, State
from .base import MinerStage
from .extract import read_index

RESULT = "filter.json"


class FilterStage(MinerStage):
    def __init__(self, ctx: MiningContext, detector: Callable[[], Detector]) -> None:
        super().__init__(ctx)
        self._make_detector = detector
        self.detector: Detector | None = None

    def setup(self) -> None:
        self.detector = self._make_detector()

    def handle(self, msg: StageMessage) -> StageOutput:
        video_id = msg.metadata["video_id"]
        frames_dir = msg.input_path
        assert frames_dir is not None
        row = self.ctx.registry.video(video_id)
        if row and row["state"] == State.FILTERED and (frames_dir / RESULT).exists():
            return msg
        order = row["ord"] if row else msg.metadata["order"]
        rows = self.filter_frames(frames_dir, read_index(frames_dir)["frames"], video_id, order)
        atomic_write_json(frames_dir / RESULT, rows)
        candidates = sum(r["decision"] == Decision.CANDIDATE for r in rows)
        deferred = sum(r["decision"] == Decision.DEFERRED for r in rows)
        self.ctx.counters.add(frames_candidates=candidates, frames_deferred=deferred,
                              frames_filtered=len(rows) - candidates - deferred,
                              frames_to_detector=sum(r["detected"] for r in rows))
        self.ctx.registry.set_state(video_id, State.FILTERED)
        return msg

    def filter_frames(self, frames_dir: Path, frames: list[dict[str, Any]], video_id: str,
                      order: int) -> list[dict[str, Any]]:
        cfg = self.ctx.config.filter
        hints = self.ctx.hints
        assert self.detector is not None
        rows: list[dict[str, Any]] = []
        batch: list[tuple[dict[str, Any], Image.Image, bytes]] = []
        last: tuple[Any, int] | None = None  # (thumbnail, frame index) of the last frame sent to the detector

        def decide(row: dict[str, Any], dets: list[dict[str, Any]]) -> None:
            row["detections"] = dets
            row["decision"] = Decision.CANDIDATE if dets else Decision.NEGATIVE
            if not dets:
                row["reason"] = cfg.no_class_reason()
            elif hints is not None:
                hints.add(row["phash"], priority_key(row["blur"], order, video_id, row["t"]))

        def flush() -> None:
            assert self.detector is not None
            for (row, _, digest), dets in zip(batch, self.detector.detect([img for _, img, _ in batch]), strict=True):
                self.ctx.detections.put(digest, dets)
                decide(row, dets)
            batch.clear()

        for frame in frames:
            # One read per frame: the bytes serve the measures, the digest and the detector.
            data = (frames_dir / frame["file"]).read_bytes()
            blur, phash, thumb = measure(open_gray(io.BytesIO(data)))
            row = {**frame, "phash": phash, "blur": round(blur, 3), "detections": [], "detected": False,
                   "decision": Decision.FILTERED, "reason": None}
            rows.append(row)
            if blur < cfg.blur_threshold:
                row["reason"] = f"blurry (sharpness {blur:.1f} < {cfg.blur_threshold})"
                continue
            if last is not None and cfg.static_max_diff >= 0:
                diff = frame_difference(thumb, last[0])
                if diff <= cfg.static_max_diff:
                    row["reason"] = f"static: same as frame {last[1]} (difference {diff:.0f})"
                    continue
            last = (thumb, frame["index"])
            digest = hashlib.blake2b(data, digest_size=16).digest()
            cached = self.ctx.detections.get(digest)
            if cached is not None:
                decide(row, cached)
                continue
            if hints is not None and hints.covers(phash, priority_key(row["blur"], order, video_id, row["t"])):
                row["decision"] = Decision.DEFERRED
                row["reason"] = "near-duplicate of a frame with the classes: detection deferred to the export"
                continue
            row["detected"] = True
            with Image.open(io.BytesIO(data)) as im:
                batch.append((row, im.convert("RGB"), digest))
            if len(batch) >= cfg.batch_size:
                flush()
        flush()
        return rows


def read_result(frames_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_json(frames_dir / RESULT)
    return rows
