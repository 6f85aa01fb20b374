"""Reviewed labels back from labelling tools (``video-miner import``), and how wrong the mining
model was against them (``video-miner report --review``).

Frames are matched by what the exports wrote: Label Studio tasks carry the frame key in
``data.frame`` (and the image name), FiftyOne samples a ``frame`` field (and the file); CVAT's XML,
COCO files and a YOLO labels folder name each image (or label file) after the image the export
handed over, which is the dataset's image name. A label for a frame the dataset does not know is
refused, naming it, and nothing is recorded. A task the reviewer skipped (Label Studio's
``was_cancelled``; a CVAT image tag or a FiftyOne sample tag ``rejected``) rejects its frame.
Classes a reviewer added join the dataset's classes after the configured ones, in the order seen.

Everything read here is untrusted: files are read bounded, numbers checked, names shown printable.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..records import Detection, Review, box_iou
from ..redact import printable
from ..store.files import read_bytes, read_json
from ..store.manifest import PROVENANCE, ManifestRecord, read_manifest
from .label_studio_api import fetch_tasks, server_url

FORMATS = ("label-studio", "cvat", "coco", "fiftyone", "yolo")
#: The tag (CVAT: an image tag's label; FiftyOne: a sample tag) that rejects a frame in review.
REJECTED = "rejected"
#: A Label Studio export larger than this is not one of a dataset this tool mined (256 MiB: some
#: 200,000 tasks with their predictions).
MAX_EXPORT_BYTES = 1 << 28
MAX_LABEL_FILE = 1 << 20
#: The most unknown frames named in the refusal (the rest are counted).
SHOWN = 5


@dataclass
class Imported:
    reviews: list[Review]
    #: Lines to show: tasks without annotations, regions that are not boxes, read past.
    notes: list[str] = field(default_factory=list)


def read_reviews(output: Path, fmt: str, source: Path) -> Imported:
    """The reviews in ``source`` (a ``fmt`` export of a tool) for the dataset of ``output``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    rows = list(read_manifest(output / "dataset"))
    readers = {"label-studio": _label_studio, "cvat": _cvat, "coco": _coco, "fiftyone": _fiftyone}
    imported = readers[fmt](source, rows) if fmt in readers else _yolo(source, rows, _classes(output))
    return _known(imported, rows, str(source))


def read_server_reviews(output: Path, url: str, project: int, token: str | None) -> Imported:
    """The reviews of project ``project`` on the Label Studio server at ``url``, for the dataset of
    ``output`` (:mod:`.label_studio_api`)."""
    rows = list(read_manifest(output / "dataset"))
    tasks = fetch_tasks(url, project, token, MAX_EXPORT_BYTES)
    return _known(_ls_tasks(tasks, rows), rows, f"{server_url(url)} project {project}")


def _known(imported: Imported, rows: list[ManifestRecord], where: str) -> Imported:
    """``imported``, refused whole when it holds labels for a frame the dataset does not know."""
    known = {r.frame for r in rows}
    unknown = [r.frame for r in imported.reviews if r.frame not in known]
    if unknown:
        shown = ", ".join(printable(k) for k in unknown[:SHOWN]) + (f" and {len(unknown) - SHOWN} more"
                                                                    if len(unknown) > SHOWN else "")
        raise ConfigError(f"{printable(where)}: labels for frames this dataset does not know: {shown}; nothing was "
                          "imported (import what an export of this output folder handed over)")
    return imported


def _classes(output: Path) -> list[str]:
    data = read_json(output / "dataset" / PROVENANCE, 1 << 20)
    return [str(c) for c in data.get("classes") or []] if isinstance(data, dict) else []


def _label_studio(path: Path, rows: list[ManifestRecord]) -> Imported:
    tasks = read_json(path, MAX_EXPORT_BYTES)
    if not isinstance(tasks, list):
        raise ConfigError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    return _ls_tasks(tasks, rows)


def _ls_tasks(tasks: list[Any], rows: list[ManifestRecord]) -> Imported:
    by_image = _frame_of(rows)
    out = Imported([])
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            out.notes.append("a task that is not a mapping with data: read past")
            continue
        data = task["data"]
        frame = data.get("frame")
        if not isinstance(frame, str):
            frame = by_image.get(str(data.get("image", "")).rsplit("/", 1)[-1], str(data.get("image", "?")))
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if annotations:  # else not reviewed yet
            out.reviews.append(_ls_review(frame, annotations, out.notes))
    return out


def _ls_review(frame: str, annotations: list[dict[str, Any]], notes: list[str]) -> Review:
    """A task's review: its latest annotation (Label Studio lists them oldest first)."""
    latest = max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                             int(a.get("id") or 0)))
    who = _ls_reviewer(latest.get("completed_by"))
    at = latest.get("updated_at") or latest.get("created_at")
    if latest.get("was_cancelled"):
        return Review(frame, "label-studio", [], True, _text(who), _text(at))
    regions = _ls_regions(frame, latest.get("result"), notes)
    # The text read in a region (a per-region TextArea, as the export writes OCR'd text) is a result
    # of its own with the box's id: it becomes that box's text, as corrected.
    texts = {str(r.get("id")): r for r in regions if r.get("type") == "textarea" and r.get("id") is not None}
    boxes = []
    for region in regions:
        box = _ls_box(region)
        if box is not None:
            said = texts.pop(str(region.get("id")), None)
            boxes.append(box if said is None else replace(box, text=_region_text(said)))
        elif region.get("type") != "textarea" or region.get("id") is None:
            notes.append(f"{printable(frame)}: a region that is not a box with one label: read past")
    notes += [f"{printable(frame)}: text for region {printable(key)}, which is no box: read past" for key in texts]
    return Review(frame, "label-studio", boxes, False, _text(who), _text(at))


def _ls_regions(frame: str, result: Any, notes: list[str]) -> list[dict[str, Any]]:
    """An annotation's regions; anything in its result that is no region is noted and read past."""
    items = result if isinstance(result, list) else []
    notes += [f"{printable(frame)}: a region that is not a box with one label: read past"
              for r in items if not isinstance(r, dict)]
    return [r for r in items if isinstance(r, dict)]


def _ls_reviewer(who: Any) -> Any:
    """Who: an email where the task names it (``import --url``), else a file export's user id."""
    if isinstance(who, dict):
        return who.get("email")
    return f"user {who}" if isinstance(who, int) else who


def _region_text(region: dict[str, Any]) -> str | None:
    """A TextArea result's text (its lines joined); None when it holds none (the text deleted)."""
    value = region.get("value")
    lines = value.get("text") if isinstance(value, dict) else None
    said = " ".join(str(line) for line in lines if str(line).strip()) if isinstance(lines, list) else ""
    return said[:1000] or None


def _text(value: Any) -> str | None:
    return None if value is None else printable(str(value))[:200]


def _ls_box(region: Any) -> Detection | None:
    """A Label Studio rectangle (percent of the picture, top-left corner) as a box; OCR text from a
    ``textarea`` region is not a box (see the notes)."""
    if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
        return None
    value = region.get("value") or {}
    labels = value.get("rectanglelabels") or []
    try:
        x, y, w, h = (float(value[k]) / 100 for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        return None
    if len(labels) != 1 or not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    x, y = max(0.0, x), max(0.0, y)
    w, h = min(w, 1 - x), min(h, 1 - y)
    meta = region.get("meta")
    track = meta.get("track_id") if isinstance(meta, dict) and isinstance(meta.get("track_id"), int) else None
    return Detection(str(labels[0])[:200], -1, 1.0, (round(x + w / 2, 6), round(y + h / 2, 6), round(w, 6),
                                                     round(h, 6)), track=track)


def _inside(source: Path, *names: str) -> Path:
    """``source`` itself, or in a folder (a tool's export unpacked) the first of ``names`` in it."""
    if not source.is_dir():
        return source
    for name in names:
        if (source / name).is_file():
            return source / name
    raise ConfigError(f"{source}: a folder without {' or '.join(names)}; give the export's file")


def _frame_of(rows: list[ManifestRecord]) -> dict[str, str]:
    """Image file name -> frame key, for the tools that name images (a path's last part counts)."""
    return {Path(r.image).name: r.frame for r in rows if r.image}


Box = tuple[float, float, float, float]


def _xywhn(left: float, top: float, width: float, height: float, w: float, h: float) -> Box | None:
    """A pixel box (left, top, width, height) in a ``w`` x ``h`` picture as normalised (cx, cy, w, h),
    clipped to the picture; None when it is not a box (not finite, empty, or no picture size)."""
    if not all(math.isfinite(v) for v in (left, top, width, height, w, h)) or min(width, height, w, h) <= 0:
        return None
    x0, y0 = min(max(left, 0.0), w), min(max(top, 0.0), h)
    x1, y1 = min(max(left + width, 0.0), w), min(max(top + height, 0.0), h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (round((x0 + x1) / 2 / w, 6), round((y0 + y1) / 2 / h, 6), round((x1 - x0) / w, 6), round((y1 - y0) / h, 6))


def _four(values: Any) -> Box | None:
    """Four numbers from an untrusted list (NaN for what is not a number); None if not four."""
    if not isinstance(values, list) or len(values) != 4:
        return None
    a, b, c, d = (_number(v) for v in values)
    return a, b, c, d


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _xml(path: Path) -> Any:
    """An XML file read bounded, with no document type (entities are how XML bombs expand)."""
    import xml.etree.ElementTree as ET

    data = read_bytes(path, MAX_EXPORT_BYTES)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ConfigError(f"{path}: an XML document type or entity; CVAT's exports have none, refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ConfigError(f"{path}: not well-formed XML ({exc}); give CVAT's 'CVAT for images 1.1' export") from exc


def _cvat(source: Path, rows: list[ManifestRecord]) -> Imported:
    """CVAT for images 1.1 (annotations.xml): every image of the task is reviewed; its boxes (a
    ``track_id`` attribute kept); an image tag ``rejected`` rejects the frame."""
    path = _inside(source, "annotations.xml")
    root = _xml(path)
    if root.tag != "annotations":
        raise ConfigError(f"{path}: not a 'CVAT for images 1.1' export (its root is <{printable(root.tag)}>)")
    frames = _frame_of(rows)
    out = Imported([])
    for image in root.iter("image"):
        name = str(image.get("name", "")).rsplit("/", 1)[-1]
        frame = frames.get(name, name)
        w, h = _number(image.get("width")), _number(image.get("height"))
        if any(str(t.get("label", "")).lower() == REJECTED for t in image.iter("tag")):
            out.reviews.append(Review(frame, "cvat", [], True))
            continue
        boxes = []
        for box in image.iter("box"):
            left, top = _number(box.get("xtl")), _number(box.get("ytl"))
            xywhn = _xywhn(left, top, _number(box.get("xbr")) - left, _number(box.get("ybr")) - top, w, h)
            label = box.get("label")
            if xywhn is None or not label:
                out.notes.append(f"{printable(name)}: a box without a label or inside the picture: read past")
                continue
            attributes = {a.get("name"): (a.text or "").strip() for a in box.iter("attribute")}
            track = attributes.get("track_id", "")
            boxes.append(Detection(str(label)[:200], -1, 1.0, xywhn, track=int(track) if track.isdigit() else None,
                                   text=_text(attributes["text"]) if "text" in attributes else None))
        out.reviews.append(Review(frame, "cvat", boxes))
    return out


def _coco(source: Path, rows: list[ManifestRecord]) -> Imported:
    """COCO 1.0 (CVAT's, or any tool's): every image listed is reviewed, with its boxes."""
    path = _inside(source, "annotations/instances_default.json", "instances_default.json", "annotations.json")
    data = read_json(path, MAX_EXPORT_BYTES)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigError(f"{path}: not a COCO file (a mapping with images, annotations, categories)")
    names = {c.get("id"): str(c.get("name"))[:200] for c in data.get("categories") or [] if isinstance(c, dict)}
    images = {i.get("id"): i for i in data["images"] if isinstance(i, dict)}
    boxes: dict[Any, list[Detection]] = {k: [] for k in images}
    out = Imported([])
    for a in data.get("annotations") or []:
        found = _coco_box(a, images, names)
        if isinstance(found, str):
            out.notes.append(found)
        else:
            boxes[a["image_id"]].append(found)
    frames = _frame_of(rows)
    for key, image in images.items():
        name = str(image.get("file_name", "")).rsplit("/", 1)[-1]
        out.reviews.append(Review(frames.get(name, name), "coco", boxes[key]))
    return out


def _coco_box(a: Any, images: dict[Any, Any], names: dict[Any, str]) -> Detection | str:
    """A COCO annotation as a box of its image, or the note saying why it is read past."""
    if not isinstance(a, dict):
        return "an annotation that is not a mapping: read past"
    image, bbox, label = images.get(a.get("image_id")), _four(a.get("bbox")), names.get(a.get("category_id"))
    if image is None or label is None or bbox is None:
        return "an annotation without its image, category or a 4-number bbox: read past"
    xywhn = _xywhn(*bbox, _number(image.get("width")), _number(image.get("height")))
    if xywhn is None:
        return f"{printable(str(image.get('file_name')))}: a box outside the picture: read past"
    attributes = a.get("attributes")
    if not isinstance(attributes, dict):
        attributes = {}
    track, text = attributes.get("track_id"), attributes.get("text")
    return Detection(label, -1, 1.0, xywhn, track=track if isinstance(track, int) else None,
                     text=_text(text) if isinstance(text, str) else None)


def _fiftyone(source: Path, rows: list[ManifestRecord]) -> Imported:
    """A FiftyOne dataset folder (``samples.json``, as FiftyOne exports it): the reviewed boxes are
    the ``ground_truth`` field (where reviewers put them; else ``predictions``, as handed over, edited
    in place), relative top-left boxes; a sample tagged ``rejected`` rejects its frame."""
    path = _inside(source, "samples.json")
    data = read_json(path, MAX_EXPORT_BYTES)
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, list):
        raise ConfigError(f"{path}: not a FiftyOne dataset export (samples.json with its samples)")
    frames = _frame_of(rows)
    out = Imported([])
    for sample in samples:
        if not isinstance(sample, dict):
            out.notes.append("a sample that is not a mapping: read past")
            continue
        name = str(sample.get("filepath", "")).rsplit("/", 1)[-1]
        given = sample.get("frame")
        frame = given if isinstance(given, str) else frames.get(name, name)
        if REJECTED in (sample.get("tags") or []):
            out.reviews.append(Review(frame, "fiftyone", [], True))
            continue
        field_ = next((sample[k] for k in ("ground_truth", "predictions") if isinstance(sample.get(k), dict)), None)
        boxes = []
        for d in (field_ or {}).get("detections") or []:
            box = _four(d.get("bounding_box")) if isinstance(d, dict) else None
            label = d.get("label") if isinstance(d, dict) else None
            xywhn = None if box is None else _xywhn(*box, 1.0, 1.0)
            if xywhn is None or not isinstance(label, str):
                out.notes.append(f"{printable(frame)}: a detection without a label or a box in the picture: read past")
                continue
            index, text = d.get("index"), d.get("text")
            boxes.append(Detection(label[:200], -1, 1.0, xywhn, track=index if isinstance(index, int) else None,
                                   text=_text(text) if isinstance(text, str) else None))
        out.reviews.append(Review(frame, "fiftyone", boxes))
    return out


def _yolo(folder: Path, rows: list[ManifestRecord], classes: list[str]) -> Imported:
    """A YOLO labels folder (``labels/`` or its splits, one ``.txt`` per image: ``class cx cy w h``
    per line, 0-1), with its ``data.yaml`` names if it has one, else the dataset's classes."""
    import yaml

    names = classes
    for candidate in (folder / "data.yaml", folder.parent / "data.yaml"):
        if candidate.is_file():
            data = yaml.safe_load(read_bytes(candidate, MAX_LABEL_FILE))
            raw = data.get("names") if isinstance(data, dict) else None
            if isinstance(raw, dict):
                names = [str(raw[k]) for k in sorted(raw)]
            elif isinstance(raw, list):
                names = [str(n) for n in raw]
            break
    by_stem = {Path(r.image).stem: r.frame for r in rows if r.image}
    out = Imported([])
    for path in sorted(folder.rglob("*.txt")):
        if path.is_symlink() or not path.is_file():
            continue
        frame = by_stem.get(path.stem, path.stem)
        boxes = []
        for k, line in enumerate(read_bytes(path, MAX_LABEL_FILE).decode("utf-8", "replace").splitlines()):
            parts = line.split()
            if not parts:
                continue
            try:
                index, x, y, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, TypeError):
                out.notes.append(f"{printable(path.name)}:{k + 1}: not `class cx cy w h`: read past")
                continue
            if not 0 <= index < len(names) or not all(0 <= v <= 1 for v in (x, y, w, h)):
                out.notes.append(f"{printable(path.name)}:{k + 1}: class {index} or a coordinate out of range: read past")
                continue
            boxes.append(Detection(names[index], -1, 1.0, (x, y, w, h)))
        out.reviews.append(Review(frame, "yolo", boxes))
    return out


def reviewed_classes(configured: list[str], reviews: dict[str, Review]) -> list[str]:
    """The dataset's classes: the configured ones, then those reviewers added, in the order seen."""
    extra = [d.label for key in sorted(reviews) for d in reviews[key].boxes if d.label not in configured]
    return configured + list(dict.fromkeys(extra))


def indexed(review: Review, classes: list[str]) -> list[Detection]:
    """A review's boxes with their class indices in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    return [Detection(d.label, index[d.label], d.conf, d.xywhn, d.model, d.text, d.track) for d in review.boxes]


# ---- how wrong the model was ----------------------------------------------------------------------
@dataclass
class ClassScore:
    label: str
    reviewed: int
    found: int
    precision: float
    recall: float
    ap50: float


@dataclass
class ReviewReport:
    frames: int
    rejected: int
    classes: list[ClassScore]
    map50: float
    #: (model's class, reviewer's class) -> boxes re-classed.
    confusions: dict[tuple[str, str], int]
    #: (frame, corrections: boxes added, deleted, moved or re-classed), most corrected first.
    most_corrected: list[tuple[str, int]]


def _best_match(d: Detection, truth: list[Detection], used: set[int]) -> tuple[int, float]:
    """The unused reviewed box ``d`` overlaps most at IoU 0.5 or more (-1: none), and the IoU."""
    best, best_iou = -1, 0.5
    for j, t in enumerate(truth):
        iou = box_iou(d.xywhn, t.xywhn)
        if j not in used and iou >= best_iou:
            best, best_iou = j, iou
    return best, best_iou


#: A matched box the reviewer left at IoU below this with the model's was moved.
MOVED_BELOW_IOU = 0.9


@dataclass(frozen=True)
class Changes:
    """What a reviewer did to one frame's boxes, against the model's."""

    added: int = 0
    deleted: int = 0
    moved: int = 0
    reclassed: int = 0

    def as_json(self) -> dict[str, int]:
        return {"added": self.added, "deleted": self.deleted, "moved": self.moved, "reclassed": self.reclassed}


def changes(model: list[Detection], reviewed: list[Detection]) -> Changes:
    """The model's boxes, most confident first, each matched to the reviewed box it overlaps most
    (IoU >= 0.5), as :func:`compare` matches them: unmatched ones were deleted, reviewed boxes left
    over were added, matched ones re-classed or moved (IoU below ``MOVED_BELOW_IOU``)."""
    used: set[int] = set()
    deleted = moved = reclassed = 0
    for d in sorted(model, key=lambda d: -d.conf):
        best, iou = _best_match(d, reviewed, used)
        if best < 0:
            deleted += 1
            continue
        used.add(best)
        if reviewed[best].label != d.label:
            reclassed += 1
        elif iou < MOVED_BELOW_IOU:
            moved += 1
    return Changes(len(reviewed) - len(used), deleted, moved, reclassed)


@dataclass
class _Matches:
    """The model's boxes matched to the reviewed ones over many frames, as ``ap_per_class`` takes
    them, with what the reviewers changed."""

    labels: dict[str, int]
    tp: list[bool] = field(default_factory=list)
    conf: list[float] = field(default_factory=list)
    pred: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    corrections: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, truth: list[Detection], found: list[Detection]) -> None:
        """One frame: the model's boxes, most confident first, each to its best reviewed box."""
        self.target += [self.labels[d.label] for d in truth]
        used: set[int] = set()
        for d in sorted(found, key=lambda d: -d.conf):
            best, iou = _best_match(d, truth, used)
            hit = best >= 0 and truth[best].label == d.label
            if best < 0 or not hit or iou < MOVED_BELOW_IOU:  # deleted (a false box), re-classed or moved
                self.corrections[key] += 1
            if best >= 0:
                used.add(best)
                if not hit:
                    self.confusions[(d.label, truth[best].label)] += 1
            self.tp.append(hit)
            self.conf.append(d.conf)
            self.pred.append(self.labels[d.label])
        self.corrections[key] += len(truth) - len(used)  # added: the model missed them

    def scores(self) -> tuple[list[ClassScore], float]:
        """Per class precision, recall and AP50 (Ultralytics' ``ap_per_class``), and their mAP50."""
        from ultralytics.utils.metrics import ap_per_class

        if not self.target:
            return [], 0.0
        names = {i: c for c, i in self.labels.items()}
        result = ap_per_class(np.asarray(self.tp, dtype=bool).reshape(-1, 1), np.asarray(self.conf),
                              np.asarray(self.pred), np.asarray(self.target))
        p, r, ap, classes = result[2], result[3], result[5], result[6]
        scores = [ClassScore(names[int(c)], self.target.count(int(c)), self.pred.count(int(c)),
                             round(float(p[k]), 4), round(float(r[k]), 4), round(float(ap[k, 0]), 4))
                  for k, c in enumerate(classes.tolist())]
        return scores, round(float(ap[:, 0].mean()), 4) if len(classes) else 0.0


def compare(model: dict[str, list[Detection]], reviews: dict[str, Review], top: int = 10) -> ReviewReport:
    """The mining model's boxes (``model``: frame -> boxes) against the reviewed ones, per class:
    precision and recall at IoU 0.5 and AP50 (Ultralytics' own ``ap_per_class``), the classes the
    reviewers changed, and the frames they corrected most. Rejected frames are counted apart."""
    judged = {k: r for k, r in reviews.items() if not r.rejected and k in model}
    labels = sorted({d.label for k, r in judged.items() for d in [*r.boxes, *model[k]]})
    matches = _Matches({c: i for i, c in enumerate(labels)})
    for key, review in judged.items():
        matches.add(key, review.boxes, model[key])
    scores, map50 = matches.scores()
    most = sorted(((k, n) for k, n in matches.corrections.items() if n), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ReviewReport(len(judged), sum(r.rejected for r in reviews.values()), scores, map50,
                        dict(matches.confusions), most)


def plot_review(result: ReviewReport, path: Path, root: Path) -> Path:
    """Precision, recall and AP50 per class as bars (matplotlib, written under ``root``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..store.files import writing

    labels = [printable(c.label) for c in result.classes]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2), 3.5))
    for k, (name, values) in enumerate((("precision", [c.precision for c in result.classes]),
                                         ("recall", [c.recall for c in result.classes]),
                                         ("AP50", [c.ap50 for c in result.classes]))):
        ax.bar(x + (k - 1) * 0.27, values, 0.27, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_title(f"the mining model against {result.frames} reviewed frames (mAP50 {result.map50:.3f})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with writing(path, root, binary=True) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path
