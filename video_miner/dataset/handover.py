"""Exports for labelling tools and trainers, in batches: Label Studio tasks (pre-annotations to
correct), CVAT (COCO 1.0 and "CVAT for images 1.1" XML), FiftyOne (a dataset folder with sample
fields), Hugging Face ``datasets`` (Parquet with an ``image`` column and ``objects``). Each export
reads the exported dataset (its manifest, images and classes) and records what it handed over, so
``--new-only`` hands over only the frames kept since the last export of that format, and
:func:`diff` says what was added and removed since then. Image names are the frames' names: nothing handed over ever changes name.

Written here, on purpose: Label Studio's task JSON, CVAT's XML and FiftyOne's samples.json are small
documented formats, and the libraries that model them either cannot say all of it (labelformat's
CVAT model has no attributes, so no score) or would add hundreds of megabytes and pinned versions to
a plain install (label-studio-sdk, fiftyone); the tests load every export with those tools. The
Parquet shards are written with pyarrow and carry the ``datasets`` features in their schema
metadata, which is how ``datasets`` itself stores them.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from ..errors import ConfigError, UnsafePath
from ..records import Detection
from ..redact import printable
from ..store.files import (
    append_line,
    check_target,
    contained,
    make_dirs,
    place,
    read_json,
    read_records,
    write_json,
    write_text,
    writing,
)
from ..store.lock import RecordLock
from ..store.manifest import PROVENANCE, ManifestRecord, read_manifest
from ..store.naming import slug

log = logging.getLogger(__name__)
FORMATS = ("label-studio", "cvat", "hf", "fiftyone", "mot")
#: What each export handed over: ``<output>/exports/<format>/handed.jsonl``, a batch per line.
HANDED = "handed.jsonl"
#: In every folder an export wrote: which dataset and format it holds, so a later export may write
#: there again, and a folder of someone else's is never written over.
MARKER = ".video-miner-export.json"


@dataclass
class Frame:
    """A kept frame as the exports see it: its manifest row, image and size."""

    row: ManifestRecord
    image: Path
    width: int
    height: int
    split: str
    #: The frames it was kept over (its near-duplicates), by frame key.
    stands_for: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.image.name


@dataclass
class Batch:
    format: str
    #: Where it was written; None when nothing was (``--new-only`` with nothing new).
    dest: Path | None
    frames: list[Frame]
    classes: list[str]
    image_root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Lines to show: manifest rows left out, damaged records read past.
    notes: list[str] = field(default_factory=list)
    #: Every manifest row with a tracked box, kept or not (the MOT export: whole tracks).
    tracked: list[ManifestRecord] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        assert self.dest is not None, "only a batch that is written has a folder"
        return self.dest


@dataclass(frozen=True)
class Handed:
    """One line of ``handed.jsonl``: an export of this format and the frames it handed over."""

    batch: int
    new_only: bool
    frames: dict[str, str]

    @classmethod
    def from_json(cls, data: Any) -> Handed:
        if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
            raise ValueError("not a batch record")
        return cls(int(data.get("batch") or 0), bool(data.get("new_only")),
                   {str(k): str(v) for k, v in data["frames"].items()})


def why_first(frame: Frame) -> str:
    """Why :func:`worth_first` puts ``frame`` where it is, in words."""
    extra = frame.row.extra
    if extra.get("disagrees"):
        return "; ".join(str(d) for d in extra["disagrees"])
    if extra.get("hard"):
        return "; ".join(str(h) for h in extra["hard"])
    confs = [d.conf for d in frame.row.detections]
    return f"least sure box {min(confs):.2f}" if confs else "no box"


def worth_first(frames: list[Frame]) -> list[Frame]:
    """``frames``, those a reviewer learns most from first: where the round before's model
    disagrees (``select.previous_model``), then where the model contradicts itself along a track,
    then by the least confident box, lowest first; otherwise in dataset order."""
    def rank(frame: Frame) -> tuple[bool, bool, float]:
        extra = frame.row.extra
        return (not extra.get("disagrees"), not extra.get("hard"),
                min((d.conf for d in frame.row.detections), default=1.0))

    return sorted(frames, key=rank)


def kept_frames(output: Path) -> tuple[list[Frame], list[str], list[str]]:
    """The dataset's kept frames, in manifest order, its classes, and the rows left out (an image
    path that leads out of the dataset: a manifest is anyone's to edit)."""
    dataset = output / "dataset"
    provenance = dataset / PROVENANCE
    if not check_target(provenance):
        raise ConfigError(f"{output} has no exported dataset yet; run video-miner run first")
    classes = [str(c) for c in read_json(provenance, 1 << 20).get("classes") or []]
    frames, refused = [], []
    stands_for: dict[str, list[str]] = {}
    for row in read_manifest(dataset):
        if row.duplicate_of:
            stands_for.setdefault(row.duplicate_of, []).append(row.frame)
        if row.decision != "kept" or not row.image:
            continue
        image = contained(row.image, dataset)
        if image is None or not image.name.endswith((".jpg", ".jpeg", ".png")):
            refused.append(f"{printable(row.frame)}: its image {printable(row.image)} leads out of the dataset: "
                           "left out")
            continue
        with Image.open(image) as im:
            width, height = im.size
        frames.append(Frame(row, image, width, height, row.image.split("/")[1] if "/" in row.image else "train"))
    for frame in frames:
        frame.stands_for = stands_for.get(frame.row.frame, [])
    return frames, classes, refused


def handed_records(folder: Path) -> tuple[list[Handed], list[str]]:
    """The batches earlier exports of this format handed over, oldest first, and the lines that
    could not be read (a torn last line after a crash): left out, said."""
    raw, problems = read_records(folder / HANDED, 1 << 30)
    out = []
    for k, data in enumerate(raw):
        try:
            out.append(Handed.from_json(data))
        except (ValueError, TypeError):
            problems.append(f"{folder / HANDED}: record {k + 1} is not a batch: left out")
    return out, problems


def handed_keys(output: Path) -> frozenset[str]:
    """Every frame any export of ``output`` handed over to a labelling tool (each format's record)."""
    keys: set[str] = set()
    exports = output / "exports"
    if not exports.is_dir() or exports.is_symlink():
        return frozenset()
    for folder in sorted(exports.iterdir()):
        if folder.is_dir() and not folder.is_symlink() and (folder / HANDED).is_file():
            keys |= set(handed_over(handed_records(folder)[0]))
    return frozenset(keys)


def handed_over(records: list[Handed]) -> dict[str, str]:
    """Frame key -> image name of every frame these exports handed over."""
    return {key: name for record in records for key, name in record.frames.items()}


def claim(dest: Path, root: Path, output: Path, fmt: str) -> None:
    """Make ``dest`` this dataset's ``fmt`` export. A ``--dest`` (``root`` is then ``dest``) must be
    missing, empty, or an earlier export of the same (its marker says so): a folder of someone
    else's is refused, never written over. One inside the output folder is video-miner's own."""
    if dest == root and dest.exists():
        if not dest.is_dir():
            raise UnsafePath(f"--dest {dest} is not a folder", "give a new or empty folder")
        marker = dest / MARKER
        mine = False
        if any(dest.iterdir()):
            try:
                data = read_json(marker, 1 << 16) if marker.exists() or marker.is_symlink() else None
                mine = isinstance(data, dict) and data.get("dataset") == str(output.resolve()) and \
                    data.get("format") == fmt
            except (OSError, ValueError, UnsafePath):
                mine = False
            if not mine:
                raise UnsafePath(f"{dest} holds files an export of this dataset did not write; nothing was changed",
                                 "give a new or empty --dest")
    make_dirs(dest, root)
    write_json(dest / MARKER, {"dataset": str(output.resolve()), "format": fmt}, dest)


def plan(output: Path, fmt: str, new_only: bool = False, limit: int | None = None) -> tuple[Batch, int]:
    """The batch an export of ``fmt`` would hand over now, and its number (0: ``all``), from what
    the dataset and the earlier exports' records say; nothing is written (``export --dry-run``)."""
    if fmt not in WRITERS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    frames, classes, notes = kept_frames(output)
    folder = output / "exports" / fmt
    past, problems = handed_records(folder) if (folder / HANDED).is_file() else ([], [])
    notes += problems
    if new_only:
        # Nothing handed over before, nor a frame a person already reviewed (imported back).
        handed = handed_over(past)
        frames = [f for f in frames if f.row.frame not in handed and "reviewed" not in f.row.extra]
    if limit is not None:
        frames = worth_first(frames)[:limit]
    number = sum(r.new_only for r in past) + 1 if new_only else 0
    return Batch(fmt, None, frames, classes, notes=notes), number


def export(output: Path, fmt: str, dest: Path | None = None, new_only: bool = False,
           image_root: str | None = None, limit: int | None = None) -> Batch:
    """Write ``fmt`` for the dataset of ``output`` into ``dest`` (default ``<output>/exports/<fmt>``);
    ``limit``: at most that many frames, those most worth a reviewer's time first (:func:`worth_first`)."""
    if fmt not in WRITERS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = make_dirs(output / "exports" / fmt, output)
    with RecordLock(folder):  # a second export waits, and numbers its batch after this one
        planned, number = plan(output, fmt, new_only, limit)
        frames, classes, notes = planned.frames, planned.classes, planned.notes
        for line in notes:
            log.warning("%s", line)
        if new_only and not frames:
            return Batch(fmt, None, [], classes, image_root, notes=notes)
        target = dest or (folder / f"batch-{number:04d}" if new_only else folder / "all")
        root = output if dest is None else target
        claim(target, root, output, fmt)
        batch = Batch(fmt, target, frames, classes, image_root, notes=notes)
        if fmt == "mot":
            batch.tracked = [r for r in read_manifest(output / "dataset") if any(d.track for d in r.detections)]
        WRITERS[fmt](batch)
        append_line(folder / HANDED, json.dumps({
            "batch": number, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dest": printable(str(target)),
            "new_only": new_only, "frames": {f.row.frame: f.name for f in frames}}), output)
    return batch


@dataclass
class Diff:
    added: list[ManifestRecord]
    #: Handed over before, not kept now: (frame key, what became of it).
    removed: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"added": [r.frame for r in self.added], "removed": [{"frame": k, "why": why} for k, why in self.removed],
                "notes": self.notes}


def diff(output: Path, fmt: str) -> Diff:
    """What changed in the dataset since the last export of ``fmt``."""
    records, notes = handed_records(output / "exports" / fmt)
    handed = handed_over(records)
    rows = {r.frame: r for r in read_manifest(output / "dataset")}
    added = [r for r in rows.values() if r.decision == "kept" and r.frame not in handed]
    removed = []
    for key in handed:
        row = rows.get(key)
        if row is None or row.decision != "kept":
            removed.append((key, "gone from the manifest" if row is None else (row.reason or row.decision)))
    return Diff(added, removed, notes)


# ---- the formats ---------------------------------------------------------------------------------
def _images(batch: Batch, sub: str = "images") -> None:
    dest = batch.folder
    for f in batch.frames:
        place(f.image, dest / sub / f.name, dest)


def _label(name: str) -> str:
    """A class name as every format writes it: invisible and control characters shown escaped
    (a vertical tab makes XML not well-formed), the same in the boxes and in the label lists."""
    return printable(name)


def _box(d: Detection, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) in pixels, inside the picture (rounding can put an edge 1e-5 out)."""
    x, y, w, h = d.xywhn
    left, top = max(0.0, (x - w / 2) * width), max(0.0, (y - h / 2) * height)
    return left, top, min(w * width, width - left), min(h * height, height - top)


def write_label_studio(batch: Batch) -> None:
    """tasks.json (one task per image, its boxes as predictions to correct) and label_config.xml."""
    _images(batch)
    root = batch.image_root.rstrip("/") if batch.image_root else "/data/local-files/?d=images"
    tasks = []
    for f in batch.frames:
        result = []
        for k, d in enumerate(f.row.detections):
            left, top, w, h = _box(d, f.width, f.height)
            result.append({"id": f"{f.name}-{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                           "original_width": f.width, "original_height": f.height, "image_rotation": 0,
                           "value": {"x": 100 * left / f.width, "y": 100 * top / f.height, "width": 100 * w / f.width,
                                     "height": 100 * h / f.height, "rotation": 0, "rectanglelabels": [_label(d.label)]},
                           "score": d.conf, **_ls_meta(d)})
            if d.text is not None:  # the text read, as a per-region TextArea a reviewer corrects in place
                where = {k: v for k, v in result[-1]["value"].items() if k != "rectanglelabels"}
                result.append({**result[-1], "type": "textarea", "from_name": "text",
                               "value": {**where, "text": [d.text]}})
        score = sum(d.conf for d in f.row.detections) / len(f.row.detections) if f.row.detections else 0.0
        tasks.append({"data": {"image": f"{root}/{f.name}", "frame": f.row.frame, "video_id": f.row.video_id,
                               "source": f.row.source, "timestamp": f.row.timestamp},
                      "predictions": [{"model_version": "video-miner", "score": score, "result": result}]})
    write_text(batch.folder / "tasks.json", json.dumps(tasks, indent=1), batch.folder)
    view = ET.Element("View")
    ET.SubElement(view, "Image", name="image", value="$image")
    labels = ET.SubElement(view, "RectangleLabels", name="label", toName="image")
    for c in batch.classes:
        ET.SubElement(labels, "Label", value=_label(c))
    if any(d.text is not None for f in batch.frames for d in f.row.detections):
        ET.SubElement(view, "TextArea", name="text", toName="image", editable="true", perRegion="true",
                      required="false", placeholder="the text read")
    write_text(batch.folder / "label_config.xml", ET.tostring(view, encoding="unicode") + "\n", batch.folder)


def _ls_meta(d: Detection) -> dict[str, Any]:
    """A tracked box's track (and hard mark) as Label Studio's region meta: shown beside the region."""
    if d.track is None:
        return {}
    text = [f"track {d.track}"] + ([d.hard] if d.hard else [])
    return {"meta": {"text": text, "track_id": d.track}}


def write_cvat(batch: Batch) -> None:
    """CVAT for images 1.1 (annotations.xml, the score of each box as an attribute) beside COCO 1.0
    (annotations/instances_default.json) over the same images/ folder."""
    _images(batch)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = printable(batch.folder.name)
    ET.SubElement(task, "size").text = str(len(batch.frames))
    labels = ET.SubElement(task, "labels")
    tracked = any(d.track is not None for f in batch.frames for d in f.row.detections)
    read = any(d.text is not None for f in batch.frames for d in f.row.detections)
    for c in batch.classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = _label(c)
        attributes = ET.SubElement(label, "attributes")
        attribute = ET.SubElement(attributes, "attribute")
        for key, value in (("name", "score"), ("mutable", "False"), ("input_type", "number"),
                           ("default_value", "0"), ("values", "0;1;0.0001")):
            ET.SubElement(attribute, key).text = value
        if tracked:
            track = ET.SubElement(attributes, "attribute")
            for key, value in (("name", "track_id"), ("mutable", "False"), ("input_type", "number"),
                               ("default_value", "0"), ("values", "0;1000000;1")):
                ET.SubElement(track, key).text = value
        if read:  # the OCR's text, a free-text attribute the reviewer corrects on the box
            text = ET.SubElement(attributes, "attribute")
            for key, value in (("name", "text"), ("mutable", "True"), ("input_type", "text"),
                               ("default_value", ""), ("values", "")):
                ET.SubElement(text, key).text = value
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k, f in enumerate(batch.frames):
        image = ET.SubElement(root, "image", id=str(k), name=f.name, width=str(f.width), height=str(f.height))
        images.append({"id": k + 1, "file_name": f.name, "width": f.width, "height": f.height})
        for d in f.row.detections:
            left, top, w, h = _box(d, f.width, f.height)
            box = ET.SubElement(image, "box", label=_label(d.label), source="auto", occluded="0", z_order="0",
                                xtl=f"{left:.2f}", ytl=f"{top:.2f}", xbr=f"{left + w:.2f}", ybr=f"{top + h:.2f}")
            ET.SubElement(box, "attribute", name="score").text = f"{d.conf:.4f}"
            extra: dict[str, Any] = {} if d.track is None else {"track_id": d.track}
            if d.track is not None:
                ET.SubElement(box, "attribute", name="track_id").text = str(d.track)
            if d.text is not None:
                ET.SubElement(box, "attribute", name="text").text = printable(d.text)
                extra["text"] = d.text
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": d.class_index + 1,
                                "bbox": [round(v, 2) for v in (left, top, w, h)], "area": round(w * h, 2),
                                "iscrowd": 0, "segmentation": [], "attributes": {"score": d.conf, **extra}})
    ET.indent(root)
    # UTF-8 is XML's default; an encoding declaration makes lxml-based readers (labelformat) refuse
    # the file when they parse it as text.
    write_text(batch.folder / "annotations.xml", '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n",
               batch.folder)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": _label(c), "supercategory": ""} for i, c in enumerate(batch.classes)]}
    write_text(batch.folder / "annotations" / "instances_default.json", json.dumps(coco), batch.folder)


def write_fiftyone(batch: Batch) -> None:
    """A FiftyOne dataset on disk (``fo.types.LegacyFiftyOneDataset``: data/, samples.json,
    metadata.json), so the manifest's fields become sample fields to sort and filter by: the boxes
    as ``predictions`` (label, confidence), and the frame's ``frame``, ``video_id``, ``source``,
    ``timestamp``, ``split`` (also a tag) and ``stands_for`` (the duplicates it was kept over)."""
    _images(batch, "data")
    samples = []
    for f in batch.frames:
        # A tracked box's track as FiftyOne's ``index`` (its field for an object's identity across frames).
        detections = [{"_cls": "Detection", "label": _label(d.label), "confidence": d.conf, "attributes": {}, "tags": [],
                       "bounding_box": [b / s for b, s in zip(_box(d, f.width, f.height),
                                                              (f.width, f.height, f.width, f.height), strict=True)],
                       **({} if d.track is None else {"index": d.track}),
                       **({} if d.text is None else {"text": d.text})}
                      for d in f.row.detections]
        samples.append({"filepath": f"data/{f.name}", "tags": [f.split],
                        "metadata": {"_cls": "ImageMetadata", "width": f.width, "height": f.height},
                        "predictions": {"_cls": "Detections", "detections": detections},
                        "frame": f.row.frame, "video_id": f.row.video_id, "source": f.row.source,
                        "timestamp": f.row.timestamp, "split": f.split, "stands_for": f.stands_for})
    write_text(batch.folder / "samples.json", json.dumps({"samples": samples}), batch.folder)
    classes = [_label(c) for c in batch.classes]
    write_text(batch.folder / "metadata.json", json.dumps({
        "name": printable(batch.folder.name), "media_type": "image", "default_classes": classes,
        "info": {"classes": classes, "made_by": "video-miner"}}), batch.folder)


def write_hf(batch: Batch) -> None:
    """Parquet shards per split (data/train-00000-of-00001.parquet, ...): ``image``, ``objects``
    (``bbox`` in COCO pixels, ``category`` a ClassLabel, ``score``, ``track_id``, ``text``) and the manifest's provenance,
    with the ``datasets`` features in the schema; and a dataset card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {
        "image": {"_type": "Image"}, "image_id": {"dtype": "int64", "_type": "Value"},
        "width": {"dtype": "int32", "_type": "Value"}, "height": {"dtype": "int32", "_type": "Value"},
        "objects": {"bbox": {"feature": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "Sequence",
                                         "length": 4}, "_type": "Sequence"},
                    "category": {"feature": {"names": [_label(c) for c in batch.classes], "_type": "ClassLabel"},
                                 "_type": "Sequence"},
                    "score": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "Sequence"},
                    "track_id": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
                    "text": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}},
        **{k: {"dtype": t, "_type": "Value"} for k, t in (("frame", "string"), ("video_id", "string"),
                                                         ("source", "string"), ("timestamp", "float64"))},
    }
    schema = pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("image_id", pa.int64()),
        ("width", pa.int32()), ("height", pa.int32()),
        ("objects", pa.struct([("bbox", pa.list_(pa.list_(pa.float32(), 4))), ("category", pa.list_(pa.int64())),
                               ("score", pa.list_(pa.float32())), ("track_id", pa.list_(pa.int64())),
                               ("text", pa.list_(pa.string()))])),
        ("frame", pa.string()), ("video_id", pa.string()), ("source", pa.string()), ("timestamp", pa.float64()),
    ], metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    counts = {}
    for split in ("train", "val"):
        members = [f for f in batch.frames if f.split == split]
        if not members:
            continue
        rows = [{"image": {"bytes": f.image.read_bytes(), "path": f.name}, "image_id": k, "width": f.width,
                 "height": f.height,
                 "objects": {"bbox": [list(_box(d, f.width, f.height)) for d in f.row.detections],
                             "category": [d.class_index for d in f.row.detections],
                             "score": [d.conf for d in f.row.detections],
                             "track_id": [d.track for d in f.row.detections],
                             "text": [d.text for d in f.row.detections]},
                 "frame": f.row.frame, "video_id": f.row.video_id, "source": f.row.source,
                 "timestamp": f.row.timestamp} for k, f in enumerate(members)]
        name = "validation" if split == "val" else split
        with writing(batch.folder / "data" / f"{name}-00000-of-00001.parquet", batch.folder, binary=True) as fh:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), fh)
        counts[name] = len(members)
    write_text(batch.folder / "README.md", _card(batch, counts), batch.folder)


def _card(batch: Batch, counts: dict[str, int]) -> str:
    """The dataset card: YAML front matter (written by the YAML library, so any class name reads
    back as itself) and a few lines on what the columns hold."""
    names = {str(k): _label(c) for k, c in enumerate(batch.classes)}
    front = {
        "task_categories": ["object-detection"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": name, "path": f"data/{name}-*.parquet"} for name in counts]}],
        "dataset_info": {"features": [{"name": "objects", "struct": [
            {"name": "category", "sequence": {"class_label": {"names": names}}}]}]},
    }
    shown = ", ".join(names.values())
    return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---
# Frames mined by video-miner

{sum(counts.values())} frames ({", ".join(f"{n} {s}" for s, n in counts.items())}) showing {shown},
each the best copy among its near-duplicates. `objects.bbox` is `[x, y, width, height]` in pixels
(COCO), `objects.category` the class, `objects.score` the detector's confidence (pre-labels to
review, not ground truth), `objects.track_id` the object's track in its video (null untracked),
`objects.text` the text an OCR model read in the box (null where none did).
`frame`, `video_id`, `source` and `timestamp` say where each frame comes from (sources with
credentials are masked).

    from datasets import load_dataset
    ds = load_dataset("parquet", data_dir={json.dumps(printable(str(batch.folder)))})
"""


def write_mot(batch: Batch) -> None:
    """The tracks as MOT Challenge ground truth, a sequence per video: ``<video>/gt/gt.txt`` (one line
    per box: frame, track id, left, top, width, height in pixels, the detector's confidence (0 for a
    box the tracker placed where the model missed), -1, -1, -1) and ``seqinfo.ini``. Frames are the
    video's own frame numbers from 1; every frame of a track is there, kept in the dataset or not."""
    by_video: dict[str, list[ManifestRecord]] = {}
    for row in batch.tracked:
        by_video.setdefault(row.video_id, []).append(row)
    if not by_video:
        batch.notes.append("no tracked boxes in the manifest: mine with track: true for a MOT export")
    for video, rows in sorted(by_video.items()):
        size = rows[0].media.display_size or rows[0].media.decoded_size
        if not size:
            batch.notes.append(f"{printable(video)}: its picture size is unknown: left out of the MOT export")
            continue
        width, height = int(size[0]), int(size[1])
        lines = []
        for row in sorted(rows, key=lambda r: r.frame_index):
            for d in sorted((d for d in row.detections if d.track is not None), key=lambda d: d.track or 0):
                left, top, w, h = _box(d, width, height)
                lines.append(f"{row.frame_index + 1},{d.track},{left:.2f},{top:.2f},{w:.2f},{h:.2f},{d.conf:.4f},-1,-1,-1")
        name = slug(video)
        rate = next((r.frame_index / r.timestamp for r in rows if r.timestamp > 0), None)
        write_text(batch.folder / name / "gt" / "gt.txt", "\n".join(lines) + "\n", batch.folder)
        info = ["[Sequence]", f"name={name}", f"seqLength={max(r.frame_index for r in rows) + 1}",
                f"imWidth={width}", f"imHeight={height}"] + ([f"frameRate={rate:.3f}"] if rate else [])
        write_text(batch.folder / name / "seqinfo.ini", "\n".join(info) + "\n", batch.folder)


WRITERS: dict[str, Callable[[Batch], None]] = {"label-studio": write_label_studio, "cvat": write_cvat, "hf": write_hf,
                                               "fiftyone": write_fiftyone, "mot": write_mot}
