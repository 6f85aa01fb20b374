"""An Ultralytics detector restricted to the wanted classes, batched, on the best device."""

from __future__ import annotations

from collections.abc import Sequence
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

    def warm_up(self) -> None:
        """Build Ultralytics' predictor (seconds: it imports torchvision, opens the runtime) before
        the first real batch. A full batch: Ultralytics sets up again when a batch is larger than the last."""
        self.detect([Image.new("RGB", (64, 64))] * self.spec.batch_size)

    def detect(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        if not images:
            return []
        try:
            results = self.model.predict(
                list(images), conf=self.spec.conf, iou=self.spec.iou, imgsz=self.spec.imgsz, device=self.device,
                # FP16 on CUDA; `quantize` replaced the deprecated `half` argument in Ultralytics 8.4.
                quantize=16 if self.half else None, classes=self.class_ids, verbose=False,
            )
        except Exception as exc:
            raise ModelError(f"inference failed with {self.spec.model}: {type(exc).__name__}: {exc}") from exc
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
