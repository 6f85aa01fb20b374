"""Several models on every frame, joined by time: the ``models:`` list of a config.

A frame the prefilters passed goes to every model at once (fan-out); each model runs behind its own
:class:`~async_pipeline.DynamicBatcher`, so each forms its batches at its own pace across every
frame in flight. A model with ``after: NAME`` (a cascade) sees a frame only once NAME found
something on it; otherwise it answers "nothing" without running. The answers of one frame meet in
a :class:`~async_pipeline.Synchronizer` keyed by the frame's time:

* files (``exact``): a frame goes on when every model answered it; a model that fails on it fails
  the frame (as a lone detector's error does);
* live streams (``realtime``, ``live.sync_tolerance_ms`` / ``live.wait_all``): a slow model takes a
  frame only when it has room (it never holds the reader or the other models back), and a frame
  goes on once another model answered one newer by more than the tolerance: decided on what came
  (*partial*) or dropped (*expired*, with ``wait_all``), counted either way.

The ``keep`` rule (:mod:`.keep`) then decides: a kept frame's labels are every model's boxes (OCR
boxes are class ``text`` with the string read), each naming its model. The first detector's
features give the embedding, pooled over every model's boxes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ALL_COMPLETED, CancelledError, Future
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from async_pipeline import DynamicBatcher, JoinStats, Release, Sync, Synchronizer, wait_on

from ..config import MinerConfig, ModelConfig
from ..errors import ConfigError, ModelError
from ..keep import KeepRule, any_of, parse_keep
from ..records import Detection, Detections
from .detector import Detector, DetectorSpec, resolve_device
from .ocr import TextReader

#: A model's batch function: one result (or the exception for that image alone) per image.
RunBatch = Callable[[list[Image.Image]], Sequence["Detections | BaseException"]]

#: The join of a run's file frames and that of its live frames, as metrics name them.
FILES, LIVE = "frames", "live"


@dataclass
class ModelCounts:
    """One model's work: frames it answered, frames a cascade spared it, frames it had no room for
    (live), frames it failed on."""

    calls: int = 0
    skipped: int = 0
    busy: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "skipped": self.skipped, "busy": self.busy, "failed": self.failed}


@dataclass
class _Model:
    config: ModelConfig
    batcher: DynamicBatcher[Image.Image, Detections]
    warm_up: Callable[[], None]
    counts: ModelCounts = field(default_factory=ModelCounts)


@dataclass
class _Frame:
    """One frame in flight: its image, the result its caller waits on, the models' requests."""

    image: Image.Image
    result: Future[Detections]
    live: bool
    requests: dict[str, Future[Detections]] = field(default_factory=dict)
    answers: dict[str, Detections | None] = field(default_factory=dict)


def detector_of(config: MinerConfig, model: ModelConfig, embed: bool) -> Detector:
    f = config.filter
    spec = DetectorSpec(model.model or f.model, tuple(model.classes), f.conf if model.conf is None else model.conf,
                        f.iou, f.imgsz, model.device or f.device, f.half, f.min_box_area, model.batch_size,
                        f.cpu_lanes, f.trust_model, embed=embed, repool=embed)
    try:
        return Detector(spec)
    except ModelError as exc:
        raise ModelError(f"models.{model.name}: {exc}") from exc
    except ConfigError as exc:  # it names filter.classes: say which model's classes they are
        raise ConfigError(f"models.{model.name}.{str(exc).removeprefix('filter.')}") from exc


class ModelGraph:
    """The run's models behind their batchers, joined per frame. Used where a lone detector's
    :class:`~video_miner.detect.detector.SharedDetector` is otherwise (the filter stages, the
    export's deferred frames)."""

    def __init__(self, config: MinerConfig) -> None:
        self.classes = config.dataset_classes
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.rule: KeepRule = parse_keep(config.keep, self.classes) if config.keep else any_of(self.classes)
        self.explicit = config.keep is not None
        self.after = {m.name: m.after for m in config.frame_models}
        self.live_sync = Sync.realtime(config.live.sync_tolerance_ms / 1000, config.live.wait_all)
        self.join_stats = {FILES: JoinStats(), LIVE: JoinStats()}
        self.models: dict[str, _Model] = {}
        self.primary: str | None = None
        wait_s = config.filter.max_wait_ms / 1000
        for m in config.frame_models:
            run: RunBatch
            if m.kind == "detector":
                embed = config.embeddings and self.primary is None
                detector = detector_of(config, m, embed)
                self.primary = self.primary or m.name
                run, warm, batch = self._detector_batch(m.name, detector), detector.warm_up, detector.batch_size
            else:
                reader = TextReader(m.name, self.index["text"], 0.5 if m.conf is None else m.conf, m.min_chars,
                                    resolve_device(m.device or config.filter.device))
                run, warm, batch = reader.read_each, reader.warm_up, m.batch_size or 4
            batcher: DynamicBatcher[Image.Image, Detections] = DynamicBatcher(
                run, max_batch=batch, max_wait_s=wait_s if m.max_wait_ms is None else m.max_wait_ms / 1000,
                name=m.name)
            self.models[m.name] = _Model(m, batcher, warm)
        self.roots = [name for name, parent in self.after.items() if parent is None]
        self.children: dict[str, list[str]] = {}
        for name, parent in self.after.items():
            if parent is not None:
                self.children.setdefault(parent, []).append(name)
        self.batchers = tuple(m.batcher for m in self.models.values())
        self.batch_size = max(b.max_batch for b in self.batchers)
        self._lock = threading.Lock()
        self._frames: dict[Any, _Frame] = {}
        self._syncs: dict[Any, Synchronizer[Detections]] = {}
        self._calls = itertools.count()

    def _detector_batch(self, name: str, detector: Detector) -> RunBatch:
        index = self.index

        def run(images: list[Image.Image]) -> list[Detections | BaseException]:
            out: list[Detections | BaseException] = []
            for found in detector.detect_each(images):
                if isinstance(found, BaseException):
                    out.append(found)
                    continue
                named = Detections.of([replace(d, class_index=index[d.label], model=name) for d in found])
                named.repool = found.repool
                out.append(named)
            return out

        return run

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ModelGraph:
        for batcher in self.batchers:
            batcher.start()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        for batcher in self.batchers:
            batcher.__exit__(kind, exc, tb)

    def warm_up(self) -> None:
        for model in self.models.values():
            model.warm_up()

    # ---- frames ----------------------------------------------------------------------------------
    def submit(self, image: Image.Image, key: tuple[str, float], live: bool = False) -> Future[Detections]:
        """Send one frame (``key``: its video or segment and its time) to every model; the future
        holds the frame's kept boxes (empty, with a ``reason``, when the keep rule does not hold)."""
        frame = _Frame(image, Future(), live)
        with self._lock:
            if key in self._frames:  # the same instant twice (a twin's claim): answered once
                return self._frames[key].result
            self._frames[key] = frame
        for name in self.roots:
            self._send(name, key, frame)
        return frame.result

    def wait(self, futures: Iterable[Future[Detections]], return_when: str = ALL_COMPLETED) -> set[Future[Detections]]:
        """Block until ``futures`` are done; meanwhile the caller counts as waiting on every model's
        batcher (see :meth:`~async_pipeline.DynamicBatcher.wait`)."""
        return wait_on(self.batchers, futures, return_when)

    def map(self, images: Iterable[Image.Image]) -> list[Detections]:
        """Every image through the graph (the export's deferred frames), in order; raises the first
        error among them."""
        with self._lock:
            name = f"export#{next(self._calls)}"  # keys of their own, apart from any video's
        futures = [self.submit(image, (name, float(i))) for i, image in enumerate(images)]
        self.wait(futures)
        return [f.result() for f in futures]

    def _send(self, name: str, key: tuple[str, float], frame: _Frame) -> None:
        model = self.models[name]
        if frame.live:
            request = model.batcher.try_submit(frame.image)
            if request is None:  # no room now: this model skips the frame rather than hold the rest
                with self._lock:
                    model.counts.busy += 1
                self._answer(name, key, None)
                return
        else:
            request = model.batcher.submit(frame.image)
        frame.requests[name] = request
        request.add_done_callback(lambda done: self._answered(name, key, done))

    def _answered(self, name: str, key: tuple[str, float], done: Future[Detections]) -> None:
        model = self.models[name]
        try:
            found: Detections | None = done.result()
        except CancelledError:  # its frame went on without it (live)
            return
        except Exception as exc:
            with self._lock:
                model.counts.failed += 1
                frame = self._frames.get(key)
            if frame is not None and not frame.live:
                self._fail(key, exc)
                return
            found = None
        with self._lock:
            model.counts.calls += 1
        for child in self.children.get(name, []):
            frame = self._frames.get(key)
            if frame is None:
                continue
            if found:
                self._send(child, key, frame)
            else:  # the cascade spares it: its answer is "nothing"
                with self._lock:
                    self.models[child].counts.skipped += 1
                self._answer(child, key, Detections.of([], reason=f"not run: {name} found nothing"))
        self._answer(name, key, found)

    def _answer(self, name: str, key: tuple[str, float], found: Detections | None) -> None:
        with self._lock:
            frame = self._frames.get(key)
            if frame is None:
                return
            sync = self._syncs.get(key[0])
            if sync is None:
                sync = Synchronizer(list(self.models), self.live_sync if frame.live else Sync.exact(),
                                    self.join_stats[LIVE if frame.live else FILES])
                self._syncs[key[0]] = sync
            frame.answers[name] = found
            released = sync.offer(name, key[1], found)
            if key[1] not in sync.pending and all(r.key != key[1] for r in released):
                released.append(self._too_late(sync, key[1], frame))
            decided = [(self._frames.pop((key[0], r.key)), r) for r in released if (key[0], r.key) in self._frames]
            if not sync.pending and not frame.live:
                del self._syncs[key[0]]  # exact: no answer comes after its frame went on
        for done, release in decided:
            for request in list(done.requests.values()):
                request.cancel()  # a slow model's queued work for a frame that went on: skipped
            done.result.set_result(self._decide(release))

    def _too_late(self, sync: Synchronizer[Detections], t: float, frame: _Frame) -> Release[Detections]:
        """A live frame whose first answer came after a newer frame's had passed the tolerance (the
        synchronizer ignores it): it goes on now, as the synchronizer would have sent it on."""
        how = sync.incomplete
        setattr(sync.stats, how, getattr(sync.stats, how) + 1)
        return Release(t, {name: frame.answers.get(name) for name in self.models}, how)

    def _fail(self, key: tuple[str, float], exc: BaseException) -> None:
        with self._lock:
            frame = self._frames.pop(key, None)
            sync = self._syncs.get(key[0])
            if sync is not None:
                sync.pending.pop(key[1], None)
                sync.first_seen.pop(key[1], None)
                sync.done.add(key[1])
        if frame is not None:
            for request in list(frame.requests.values()):
                request.cancel()
            frame.result.set_exception(exc)

    def _decide(self, release: Release[Detections]) -> Detections:
        """The frame's boxes, if the keep rule holds on what the models said."""
        missing = [name for name, found in release.answers.items() if found is None]
        if release.how == "expired" or (missing and self.live_sync.wait_all):
            return Detections.of([], reason=f"dropped: {', '.join(missing)} gave no answer in time (live.wait_all)",
                                 sync="expired")
        boxes: list[Detection] = []
        for found in release.answers.values():
            boxes.extend(found or [])
        primary = release.answers.get(self.primary) if self.primary else None
        repool = primary.repool if primary is not None else None
        if not self.rule.holds(boxes):
            said = "; ".join(f"{name}: {_summary(found)}" for name, found in release.answers.items())
            rule = f"keep '{self.rule.text}' does not hold" if self.explicit else f"no {'/'.join(self.classes)}"
            return Detections.of(boxes, reason=f"{rule} ({said})", sync=release.how)
        return Detections.of(boxes, repool(boxes) if repool is not None else None, sync=release.how)

    # ---- figures -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Per model and per join: metrics.json's ``models`` entry."""
        with self._lock:
            return {"models": {name: {"kind": m.config.kind, "after": m.config.after, **m.counts.as_dict()}
                               for name, m in self.models.items()},
                    "joins": {name: stats.as_dict() for name, stats in self.join_stats.items()},
                    "keep": self.rule.text}


def _summary(found: Detections | None) -> str:
    if found is None:
        return "no answer"
    if not found:
        return found.reason or "nothing"
    labels = [d.label if d.text is None else f"text {d.text!r}" for d in found[:5]]
    return ", ".join(labels) + (", ..." if len(found) > 5 else "")
