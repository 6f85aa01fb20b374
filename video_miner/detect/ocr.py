"""Text in frames: PP-OCRv4 (text detection, angle, recognition) through ``rapidocr-onnxruntime``,
whose wheel holds the three ONNX models, so it runs offline. Each text line becomes a box of class
``text`` carrying the string read."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ModelError
from ..records import Detection, Detections

#: The label of every OCR box.
TEXT = "text"
#: Longest string kept per box (a wall of text is still one box).
MAX_TEXT = 200


class TextReader:
    """Reads the text lines of images. RapidOCR takes one image a call: a batch (formed by the
    model's own batcher, at its own pace) runs image by image on the one engine."""

    def __init__(self, name: str, class_index: int, min_score: float = 0.5, min_chars: int = 1,
                 device: str = "cpu") -> None:
        self.name, self.class_index = name, class_index
        self.min_score, self.min_chars = min_score, min_chars
        self.cuda = device.startswith("cuda")
        self._engine: Any = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._engine is None:
                self._engine = self._load()

    def _load(self) -> Any:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ModelError(f"model {self.name!r} (ocr) needs rapidocr-onnxruntime: pip install "
                             "rapidocr-onnxruntime") from exc
        threads = max(1, (os.cpu_count() or 1) // 2)
        try:
            return RapidOCR(text_score=self.min_score, intra_op_num_threads=threads, det_use_cuda=self.cuda,
                            cls_use_cuda=self.cuda, rec_use_cuda=self.cuda)
        except Exception as exc:
            raise ModelError(f"cannot load the OCR models of {self.name!r}: {type(exc).__name__}: {exc}") from exc

    def read_each(self, images: Sequence[Image.Image]) -> list[Detections | BaseException]:
        """The text boxes of each image; an image the OCR fails on fails alone."""
        self.warm_up()
        out: list[Detections | BaseException] = []
        for image in images:
            try:
                out.append(self.read(image))
            except Exception as exc:
                out.append(ModelError(f"OCR failed with {self.name!r}: {type(exc).__name__}: {exc}"))
        return out

    def read(self, image: Image.Image) -> Detections:
        rgb = np.asarray(image.convert("RGB"))
        result, _ = self._engine(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV's BGR order, as it expects
        width, height = image.size
        boxes = []
        for quad, text, score in result or []:
            text = str(text).strip()[:MAX_TEXT]
            if float(score) < self.min_score or len(text.replace(" ", "")) < self.min_chars:
                continue
            xs = [min(max(float(p[0]), 0.0), width) for p in quad]
            ys = [min(max(float(p[1]), 0.0), height) for p in quad]
            w, h = (max(xs) - min(xs)) / width, (max(ys) - min(ys)) / height
            if w <= 0 or h <= 0:
                continue
            x, y = (min(xs) + max(xs)) / 2 / width, (min(ys) + max(ys)) / 2 / height
            boxes.append(Detection(TEXT, self.class_index, round(float(score), 4),
                                   (round(x, 6), round(y, 6), round(w, 6), round(h, 6)), self.name, text))
        return Detections.of(boxes)
