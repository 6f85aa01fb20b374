"""An Ultralytics detector restricted to the wanted classes, batched, on the best device."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ConfigError, ModelError


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class DetectorSpec:
    model: str
    classes: tuple[str, ...]
    conf: float
    iou: float = 0.7
    imgsz: int = 640
    device: str = "auto"
    half: bool = True
    min_box_area: float = 0.0
    batch_size: int = 8
    #: Inference lanes on the CPU (ONNX Runtime): 0 = one per core, at most ``batch_size``.
    cpu_lanes: int = 0


def _reopen_cpu_session(model: Any, threads: int) -> bool:
    """Reopen the ONNX Runtime CPU session Ultralytics' predictor made (it offers no setting for
    session options) with ``threads`` threads that do not spin; False for any other runtime.

    A small detector gains little from splitting one inference over threads, and much from running
    independent ones side by side (2 cores: 82 ms a frame over two 1-thread sessions, 131 ms on
    one 2-thread session). And ONNX Runtime's threads spin between operators by default, taking
    the CPU time frame decoding needs beside them (bench: whole job ~10% faster without)."""
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    session = getattr(backend, "session", None)
    path = getattr(session, "_model_path", None)
    if session is None or not isinstance(path, str) or session.get_providers()[0] != "CPUExecutionProvider":
        return False
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    backend.session = onnxruntime.InferenceSession(path, options, providers=session.get_providers())  # type: ignore[union-attr]
    return True


class Detector:
    """Loads the model once; :meth:`detect` returns the wanted boxes of each image."""

    def __init__(self, spec: DetectorSpec) -> None:
        from ultralytics import YOLO

        self.spec = spec
        self.device = resolve_device(spec.device)
        self.half = spec.half and self.device.startswith("cuda")
        model_ref = str(Path(spec.model).expanduser()) if Path(spec.model).expanduser().exists() else spec.model
        try:
            self.model = YOLO(model_ref, task="detect")
            self._model_ref = model_ref
            names: dict[int, str] = dict(self.model.names)
        except Exception as exc:
            raise ModelError(f"cannot load model {spec.model!r}: {type(exc).__name__}: {exc}") from exc
        by_name = {name: idx for idx, name in names.items()}
        unknown = [c for c in spec.classes if c not in by_name]
        if unknown:
            valid = ", ".join(names[i] for i in sorted(names))
            raise ConfigError(f"filter.classes: {', '.join(unknown)} not among the classes of {spec.model}; valid: {valid}")
        self.model_names = names
        self.class_ids = [by_name[c] for c in spec.classes]
        #: Model class id -> index in the dataset's own class list.
        self.dataset_index = {by_name[c]: i for i, c in enumerate(spec.classes)}
        #: Models run side by side on a batch's images (several only on the CPU with ONNX Runtime).
        self._lanes: list[Any] = [self.model]
        self._pool: ThreadPoolExecutor | None = None

    def warm_up(self) -> None:
        """Build Ultralytics' predictor (seconds: it imports torchvision, opens the runtime) before
        the first real batch. On a GPU a full batch, so the first real one finds its shapes warmed; on
        the CPU one image (each costs a whole inference there, and there is nothing to warm).
        On the CPU with ONNX Runtime, the inference lanes are opened here too."""
        blank = [Image.new("RGB", (64, 64))] * (1 if self.device == "cpu" else self.spec.batch_size)
        self._predict(self.model, blank)
        lanes = max(1, min(self.spec.cpu_lanes or os.cpu_count() or 1, self.spec.batch_size))
        threads = max(1, (os.cpu_count() or 1) // lanes)
        if not _reopen_cpu_session(self.model, threads):
            return
        from ultralytics import YOLO

        more = [YOLO(self._model_ref, task="detect") for _ in range(lanes - 1)]
        for model in more:
            self._predict(model, blank)
            _reopen_cpu_session(model, threads)
        self._lanes += more
        for model in self._lanes:
            self._predict(model, blank)  # a new session's first run allocates its buffers
        if len(self._lanes) > 1:
            self._pool = ThreadPoolExecutor(len(self._lanes) - 1, thread_name_prefix="detector-lane")

    def detect(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        if not images:
            return []
        images = list(images)
        size = -(-len(images) // len(self._lanes))
        chunks = [images[i:i + size] for i in range(0, len(images), size)]
        if len(chunks) == 1 or self._pool is None:
            return self._boxes(self._predict(self.model, images))
        # Independent images on independent sessions: ONNX Runtime releases the GIL while it runs.
        later = [self._pool.submit(self._predict, self._lanes[i], chunk) for i, chunk in enumerate(chunks[1:], 1)]
        results = self._predict(self._lanes[0], chunks[0])
        for future in later:
            results += future.result()
        return self._boxes(results)

    def _predict(self, model: Any, images: list[Image.Image]) -> list[Any]:
        try:
            return list(model.predict(
                images, conf=self.spec.conf, iou=self.spec.iou, imgsz=self.spec.imgsz, device=self.device,
                # FP16 on CUDA; `quantize` replaced the deprecated `half` argument in Ultralytics 8.4.
                quantize=16 if self.half else None, classes=self.class_ids, verbose=False,
            ))
        except Exception as exc:
            raise ModelError(f"inference failed with {self.spec.model}: {type(exc).__name__}: {exc}") from exc

    def _boxes(self, results: list[Any]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        for result in results:
            boxes: Any = result.boxes  # type: ignore[union-attr]
            dets = []
            for cls, conf, xywhn in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xywhn.tolist(), strict=True):
                area = xywhn[2] * xywhn[3]
                if area < self.spec.min_box_area:
                    continue
                dets.append({
                    "class": self.model_names[int(cls)],
                    "class_index": self.dataset_index[int(cls)],
                    "conf": round(float(conf), 4),
                    "xywhn": [round(float(v), 6) for v in xywhn],
                })
            out.append(dets)
        return out
