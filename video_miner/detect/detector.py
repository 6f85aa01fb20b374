"""An Ultralytics detector restricted to the wanted classes, batched, on the best device; and the
run's one shared detector behind the engine's dynamic batcher."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from async_pipeline import DynamicBatcher

from ..config import MinerConfig
from ..errors import ConfigError, ModelError
from ..media.quality import content_box
from ..records import Detection, Detections
from .embed import Features, FeatureTap, TorchTap, pool, with_feature_outputs
from .model_file import check_model_file

if TYPE_CHECKING:
    from .judge import FrameModels

log = logging.getLogger(__name__)

#: Detector batch size when the config leaves it to the device: a GPU takes many images at once.
GPU_BATCH, CPU_BATCH = 32, 8


def devices_here() -> list[str]:
    """The devices a model can run on here, as ``filter.device`` names them."""
    import torch

    have = [f"cuda:{k}" for k in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        have.append("mps")
    return [*have, "cpu"]


def device_problem(device: str) -> str | None:
    """Why ``device`` (a ``filter.device`` value) cannot be used here, or None when it can."""
    if device == "auto":
        return None
    here = devices_here()
    name = f"cuda:{device}" if device.isdigit() else "cuda:0" if device == "cuda" else device
    if name in here:
        return None
    known = name == "cpu" or name == "mps" or re.fullmatch(r"cuda:\d+", name) is not None
    what = "is not a device name (auto, cpu, cuda, cuda:N, mps)" if not known else "is not on this machine"
    return f"{device!r} {what}; devices here: {', '.join(here)}"


#: With tracks on, boxes from this confidence up are weak views of a track's object (ByteTrack's
#: low threshold, ``track_low_thresh``).
WEAK_CONF = 0.1
#: Memory one image of a batch takes in the model, as a multiple of its input tensor (activations,
#: outputs, the runtime's buffers): measured ~10x for YOLOv8n; 16x leaves room for larger models.
IMAGE_MEMORY_FACTOR = 16


def batch_limit(imgsz: int, device: str) -> int:
    """The most images a batch may hold on ``device`` at ``imgsz``: a quarter of its memory (the
    GPU's, or this machine's), so a typo (``batch_size: 1e9``) cannot take the machine down."""
    per_image = 3 * imgsz * imgsz * 4 * IMAGE_MEMORY_FACTOR
    memory = 0
    if device.startswith("cuda"):
        import torch

        memory = torch.cuda.get_device_properties(int(device.split(":")[1]) if ":" in device else 0).total_memory
    else:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory = 8 << 30
    return max(1, min(4096, memory // 4 // per_image))


def resolve_device(device: str) -> str:
    """The device to run on; a ConfigError (before any work starts) for one this machine lacks."""
    problem = device_problem(device)
    if problem is not None:
        raise ConfigError(f"filter.device (or --device): {problem}")
    if device != "auto":
        return f"cuda:{device}" if device.isdigit() else device
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
    #: Images per inference call; None: 32 on CUDA, 8 elsewhere.
    batch_size: int | None = None
    #: Inference lanes on the CPU (ONNX Runtime): 0 = one per core, at most ``batch_size``.
    cpu_lanes: int = 0
    #: Load a pickled model (.pt) without first checking what it would import.
    trust_model: bool = False
    #: Also pool the backbone's features into an embedding per frame and per box (:mod:`.embed`).
    embed: bool = False
    #: With ``embed``: leave each result a ``repool`` for other models' boxes (:class:`~.model_graph.ModelGraph`).
    repool: bool = False
    #: With tracks on: also return the boxes from this confidence up to ``conf`` (``Detections.weak``),
    #: where a track's object fell under the threshold for a frame. NMS keeps a box over ``conf``
    #: whatever weaker boxes are fed to it, so the boxes over ``conf`` are the same either way.
    weak_conf: float | None = None


def _reopen_session(model: Any, threads: int, features: tuple[bytes, list[str]] | None) -> tuple[bool, FeatureTap | None]:
    """Reopen the ONNX Runtime session Ultralytics' predictor made (it offers no setting for session
    options): on the CPU with ``threads`` threads that do not spin, and with ``features`` (the model
    with its feature map as an extra output) wrapped in a :class:`FeatureTap`. Returns whether it
    runs on the CPU (more lanes make sense) and the tap; (False, None) for any other runtime.

    A small detector gains little from splitting one inference over threads, and much from running
    independent ones side by side (2 cores: 82 ms a frame over two 1-thread sessions, 131 ms on
    one 2-thread session). And ONNX Runtime's threads spin between operators by default, taking
    the CPU time frame decoding needs beside them (bench: whole job ~10% faster without)."""
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    session = getattr(backend, "session", None)
    path = getattr(session, "_model_path", None)
    if session is None or not isinstance(path, str):
        return False, None
    providers = session.get_providers()
    cpu = providers[0] == "CPUExecutionProvider"
    if not cpu and features is None:
        return False, None
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if cpu:
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opened = onnxruntime.InferenceSession(features[0] if features else path, options, providers=providers)
    tap = FeatureTap(opened, features[1]) if features else None
    backend.session = tap or opened  # type: ignore[union-attr]
    if tap is not None:
        # IO binding fixes the outputs when the session opens; the tap asks for one more per run.
        backend.use_io_binding = False  # type: ignore[union-attr]
    return cpu, tap


def detector_spec(config: MinerConfig, model: str | None = None, conf: float | None = None) -> DetectorSpec:
    """The filter's detector as the config describes it (``model``/``conf``: the label model's)."""
    f = config.filter
    own = model is None
    return DetectorSpec(model or f.model, tuple(f.classes), f.conf if conf is None else conf, f.iou, f.imgsz, f.device,
                        f.half, f.min_box_area, f.batch_size, f.cpu_lanes, f.trust_model,
                        embed=config.embeddings and own,
                        weak_conf=min(WEAK_CONF, f.conf) if config.track.enabled and own else None)


class Detector:
    """Loads the model once; :meth:`detect` returns the wanted boxes of each image."""

    def __init__(self, spec: DetectorSpec) -> None:
        from ultralytics import YOLO

        self.spec = spec
        self.device = resolve_device(spec.device)
        self.half = spec.half and self.device.startswith("cuda")
        wanted = spec.batch_size or (GPU_BATCH if self.device.startswith("cuda") else CPU_BATCH)
        limit = batch_limit(spec.imgsz, self.device)
        #: Set when the batch asked for does not fit the device's memory: (asked, used).
        self.clamped: tuple[int, int] | None = (wanted, limit) if wanted > limit else None
        if self.clamped is not None:
            log.warning("filter.batch_size %d does not fit this device's memory at imgsz %d: batches of %d",
                        wanted, spec.imgsz, limit)
        self.batch_size = min(wanted, limit)
        model_ref = str(Path(spec.model).expanduser()) if Path(spec.model).expanduser().exists() else spec.model
        if not spec.trust_model:
            check_model_file(Path(model_ref))
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
        self._warm_lock = threading.Lock()
        self._warm = False
        #: CPU inference lanes still to open, and the threads each runs on.
        self._more_lanes = 0
        self._threads = 1
        #: Per lane (by id), where its feature maps are taken when embeddings are asked for.
        self._taps: dict[int, FeatureTap | TorchTap] = {}
        self._features: tuple[bytes, list[str]] | None = None
        if spec.embed and model_ref.endswith(".onnx"):
            try:
                self._features = with_feature_outputs(model_ref)
            except ValueError as exc:
                raise ModelError(f"cannot take embeddings from {spec.model}: {exc}; "
                                 "set dedup.semantic: false and no select.budget") from exc

    def warm_up(self) -> None:
        """Build Ultralytics' predictor (seconds: it imports torchvision, opens the runtime) before
        the first real batch. On a GPU a full batch, so the first real one finds its shapes warmed; on
        the CPU one image (each costs a whole inference there, and there is nothing to warm).
        On the CPU with ONNX Runtime, the inference lanes are opened here too. Once per detector:
        the filter workers that share it all call this, and the later ones wait for the first."""
        with self._warm_lock:
            if not self._warm:
                self._warm_up()
                self._warm = True

    def _warm_up(self) -> None:
        blank = [Image.new("RGB", (64, 64))] * (1 if self.device == "cpu" else self.batch_size)
        self._predict(self.model, blank)  # builds Ultralytics' predictor, whose session is reopened here
        lanes = max(1, min(self.spec.cpu_lanes or os.cpu_count() or 1, self.batch_size))
        self._threads = max(1, (os.cpu_count() or 1) // lanes)
        cpu, tap = _reopen_session(self.model, self._threads, self._features)
        self._add_tap(self.model, tap)
        # The other lanes open with the first batch of several images: a short job, one frame at
        # a time, never pays for them (each costs a model load and an inference: ~0.1 s).
        self._more_lanes = lanes - 1 if cpu else 0

    def _open_lanes(self) -> None:
        with self._warm_lock:
            if not self._more_lanes:
                return
            from ultralytics import YOLO

            blank = [Image.new("RGB", (64, 64))]
            more = [YOLO(self._model_ref, task="detect") for _ in range(self._more_lanes)]
            for model in more:
                self._predict(model, blank)
                self._add_tap(model, _reopen_session(model, self._threads, self._features)[1])
            self._pool = ThreadPoolExecutor(len(more), thread_name_prefix="detector-lane")
            self._lanes += more
            self._more_lanes = 0

    def _add_tap(self, model: Any, tap: FeatureTap | None) -> None:
        """Where ``model``'s feature maps will be taken: the ONNX session's tap, or hooks on a
        PyTorch network."""
        if not self.spec.embed:
            return
        if tap is not None:
            self._taps[id(model)] = tap
            return
        network = getattr(getattr(model.predictor, "model", None), "model", None)
        try:
            self._taps[id(model)] = TorchTap(network if network is not None else model.model)
        except (ValueError, AttributeError) as exc:
            raise ModelError(f"cannot take embeddings from {self.spec.model}: {exc}; "
                             "set dedup.semantic: false and no select.budget") from exc

    def detect_each(self, images: Sequence[Image.Image]) -> list[Detections | BaseException]:
        """Like :meth:`detect`, but a failing batch is retried image by image, so an image that
        breaks the model fails alone (its result is the exception)."""
        try:
            return list(self.detect(images))
        except ModelError:
            if len(images) == 1:
                raise
        out: list[Detections | BaseException] = []
        for image in images:
            try:
                out.extend(self.detect([image]))
            except ModelError as exc:
                out.append(exc)
        return out

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """The wanted boxes of each image, found inside its black bars (a landscape video reposted
        as a portrait short shows its picture in a band: the model sees that band at full size, as
        in the original, and its features compare with the original's), in the whole image's
        coordinates."""
        if not images:
            return []
        if not self._warm:  # the taps that take embeddings are set up there
            self.warm_up()
        boxes = [content_box(np.asarray(im.convert("L"))) for im in images]
        inner = [im if box == (0, 0, *im.size) else im.crop(box) for im, box in zip(images, boxes, strict=True)]
        if len(inner) > 1 and self._more_lanes:
            self._open_lanes()
        size = -(-len(inner) // len(self._lanes))
        chunks = [inner[i:i + size] for i in range(0, len(inner), size)]
        if len(chunks) == 1 or self._pool is None:
            return self._boxes(self._predict(self.model, inner), boxes, images)
        # Independent images on independent sessions: ONNX Runtime releases the GIL while it runs.
        later = [self._pool.submit(self._predict, self._lanes[i], chunk) for i, chunk in enumerate(chunks[1:], 1)]
        results = self._predict(self._lanes[0], chunks[0])
        for future in later:
            results += future.result()
        return self._boxes(results, boxes, images)

    def _predict(self, model: Any, images: list[Image.Image]) -> list[tuple[Any, Features | None]]:
        """Ultralytics' results for ``images``, each with its feature map when embeddings are on."""
        tap = self._taps.get(id(model))
        try:
            results = list(model.predict(
                images, conf=self.spec.weak_conf or self.spec.conf, iou=self.spec.iou, imgsz=self.spec.imgsz, device=self.device,
                # FP16 on CUDA; `quantize` replaced the deprecated `half` argument in Ultralytics 8.4.
                quantize=16 if self.half else None, classes=self.class_ids, verbose=False,
            ))
        except Exception as exc:
            if tap is not None:
                tap.drain(0)
            raise ModelError(f"inference failed with {self.spec.model}: {type(exc).__name__}: {exc}") from exc
        if tap is None:
            return [(r, None) for r in results]
        maps = tap.drain(len(results))
        if len(maps) != len(results):
            raise ModelError(f"{self.spec.model} gave {len(maps)} feature maps for {len(results)} images")
        return list(zip(results, maps, strict=True))

    def _boxes(self, results: list[tuple[Any, Features | None]], inside: list[tuple[int, int, int, int]],
               images: Sequence[Image.Image]) -> list[Detections]:
        """Detections in the whole image's terms from results on the part ``inside`` its bars."""
        out: list[Detections] = []
        for (result, features), (left, top, right, bottom), image in zip(results, inside, images, strict=True):
            boxes: Any = result.boxes
            dets, kept, weak = [], [], []
            sx, sy = (right - left) / image.width, (bottom - top) / image.height
            ox, oy = left / image.width, top / image.height
            for cls, conf, xywhn in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xywhn.tolist(), strict=True):
                bx, by, bw, bh = xywhn
                xywhn = [ox + bx * sx, oy + by * sy, bw * sx, bh * sy]
                area = xywhn[2] * xywhn[3]
                if area < self.spec.min_box_area:
                    continue
                x, y, w, h = (round(float(v), 6) for v in xywhn)
                box = Detection(self.model_names[int(cls)], self.dataset_index[int(cls)], round(float(conf), 4),
                                (x, y, w, h))
                if conf < self.spec.conf:
                    weak.append(box)
                    continue
                dets.append(box)
                kept.append((bx, by, bw, bh))
            found = Detections.of(dets)
            found.weak = tuple(weak)
            if features is not None:
                height, width = result.orig_shape
                if dets:
                    found.embedding = pool(features[0], features[1], (width, height), kept).to_bytes()
                if self.spec.repool:
                    found.repool = partial(_repool, features, (left, top, right, bottom), image.size,
                                           (width, height))
            out.append(found)
        return out


def _repool(features: Features, inside: tuple[int, int, int, int], size: tuple[int, int], shape: tuple[int, int],
            boxes: list[Detection]) -> bytes:
    """The embedding of a frame with ``boxes`` (whole-image terms; another model's too) from the
    features of the picture ``inside`` its bars."""
    (left, top, right, bottom), (width, height) = inside, size
    sx, sy, ox, oy = (right - left) / width, (bottom - top) / height, left / width, top / height
    inner = [((d.xywhn[0] - ox) / sx, (d.xywhn[1] - oy) / sy, d.xywhn[2] / sx, d.xywhn[3] / sy) for d in boxes]
    return pool(features[0], features[1], shape, inner).to_bytes()


class SharedDetector:
    """The run's one model behind the engine's :class:`~async_pipeline.DynamicBatcher`: filter
    workers submit single frames, and each batch holds frames of every video in flight (so short
    clips fill it as well as long videos do). On the CPU a batch is split over the ONNX Runtime
    lanes; on CUDA it goes to the GPU whole."""

    def __init__(self, detector: Detector, max_wait_s: float,
                 on_batch: Callable[[int, list[float], float], None] | None = None) -> None:
        self.detector = detector
        self.batcher: DynamicBatcher[Image.Image, Detections] = DynamicBatcher(
            detector.detect_each, max_batch=detector.batch_size, max_wait_s=max_wait_s, name="detector",
            on_batch=on_batch)

    @property
    def batch_size(self) -> int:
        return self.detector.batch_size

    @property
    def batchers(self) -> tuple[DynamicBatcher[Image.Image, Detections], ...]:
        return (self.batcher,)

    def warm_up(self) -> None:
        self.detector.warm_up()

    def submit(self, image: Image.Image, key: tuple[str, float], live: bool = False) -> Future[Detections]:
        """One frame to the batcher (``key`` and ``live`` matter only to several models)."""
        return self.batcher.submit(image)

    def wait(self, futures: Iterable[Future[Detections]], return_when: str = ALL_COMPLETED) -> set[Future[Detections]]:
        return self.batcher.wait(futures, return_when)

    def map(self, images: Iterable[Image.Image]) -> list[Detections]:
        return self.batcher.map(images)

    def __enter__(self) -> SharedDetector:
        self.batcher.__enter__()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.batcher.__exit__(kind, exc, tb)


#: A detector over image files: the detections of each, in order.
FilesDetector = Callable[[list[Path]], list[Detections]]


def _load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def on_files(detector: Detector) -> FilesDetector:
    """``detector`` over image files, in batches of its size."""

    def label(paths: list[Path]) -> list[Detections]:
        out: list[Detections] = []
        size = detector.batch_size
        for start in range(0, len(paths), size):
            out.extend(detector.detect([_load(p) for p in paths[start:start + size]]))
        return out

    return label


def shared_on_files(shared: FrameModels) -> FilesDetector:
    """The run's shared model(s) over image files: the export's few deferred frames join the batches
    of whatever else is in flight (live frames keep coming while a periodic export runs)."""

    def label(paths: list[Path]) -> list[Detections]:
        for batcher in shared.batchers:
            batcher.join()
        try:
            return shared.map(_load(p) for p in paths)
        finally:
            for batcher in shared.batchers:
                batcher.leave()

    return label
