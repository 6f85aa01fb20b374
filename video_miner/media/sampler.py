"""Which instants of a video are kept: the same rule for files, animations and live streams."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ExtractConfig


@dataclass
class Sampler:
    """Every 1/fps or ``every_seconds`` from ``start`` (or every keyframe), up to ``end`` and
    ``max_frames``."""

    cfg: ExtractConfig
    next_t: float = 0.0
    taken: int = 0

    def __post_init__(self) -> None:
        self.next_t = self.cfg.start

    @property
    def keyframes_only(self) -> bool:
        return self.cfg.mode == "keyframes"

    @property
    def interval(self) -> float:
        return 1.0 / self.cfg.fps if self.cfg.mode == "fps" else self.cfg.every_seconds

    def past_end(self, t: float) -> bool:
        return self.cfg.end is not None and t > self.cfg.end

    def due(self, t: float, key_frame: bool = True) -> bool:
        if self.keyframes_only:
            return key_frame and t + 1e-6 >= self.cfg.start
        return t + 1e-6 >= self.next_t

    def take(self, t: float) -> None:
        """``t`` was kept: the next instant is the first grid point after it."""
        self.taken += 1
        if not self.keyframes_only:
            self.next_t += self.interval * max(1, math.floor((t - self.next_t) / self.interval + 1e-9) + 1)

    @property
    def full(self) -> bool:
        return self.cfg.max_frames is not None and self.taken >= self.cfg.max_frames
