"""Stage 3 (the GPU stage): the detector in batches, on the frames the prefilters passed.

The prefilters (:mod:`video_miner.prefilter`, run while extracting) dropped blurry frames and
static stretches. Byte-identical frames seen before (the same video listed twice) reuse their detections,
and near-duplicates of a more preferred frame already found to show the classes are deferred:
dedup will almost surely drop them, and the export detects the few it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from async_pipeline import StageMessage, StageOutput

from ..context import MiningContext, priority_key
from ..detector import Detector
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
        # In the worker, not at start-up: the first videos download and decode meanwhile.
        self.detector = self._make_detector()
        self.detector.warm_up()

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
        """``frames``: the extract stage's rows, measures and prefilter decisions included."""
        cfg = self.ctx.config.filter
        hints = self.ctx.hints
        assert self.detector is not None
        rows: list[dict[str, Any]] = []
        batch: list[tuple[dict[str, Any], Image.Image]] = []

        def decide(row: dict[str, Any], dets: list[dict[str, Any]]) -> None:
            row["detections"] = dets
            row["decision"] = Decision.CANDIDATE if dets else Decision.NEGATIVE
            if not dets:
                row["reason"] = cfg.no_class_reason()
            elif hints is not None:
                hints.add(row["phash"], priority_key(row["blur"], order, video_id, row["t"]))

        def flush() -> None:
            assert self.detector is not None
            for (row, _), dets in zip(batch, self.detector.detect([img for _, img in batch]), strict=True):
                self.ctx.detections.put(row["digest"], dets)
                decide(row, dets)
            batch.clear()

        for frame in frames:
            row = {"detections": [], "detected": False, **frame}
            rows.append(row)
            if row["decision"] == Decision.FILTERED:
                continue
            cached = self.ctx.detections.get(row["digest"])
            if cached is not None:
                decide(row, cached)
                continue
            if hints is not None and hints.covers(row["phash"], priority_key(row["blur"], order, video_id, row["t"])):
                row["decision"] = Decision.DEFERRED
                row["reason"] = "near-duplicate of a frame with the classes: detection deferred to the export"
                continue
            row["detected"] = True
            with Image.open(frames_dir / row["file"]) as im:
                batch.append((row, im.convert("RGB")))
            if len(batch) >= cfg.batch_size:
                flush()
        flush()
        return rows


def read_result(frames_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_json(frames_dir / RESULT)
    return rows
