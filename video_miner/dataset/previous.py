"""The round before's model (``select.previous_model``): where it and this round's model disagree.

After a review and a ``yolo train``, the frames worth a reviewer's time next are those where the
new model and the one before it tell different stories: a box only one of them finds, an object
one calls a car and the other a truck. The export runs the previous model over the frames that
show the classes (each frame once per model file: its boxes are recorded under the file's digest),
and choosing reads them like any other record: a frame they disagree on is marked, and the
budget's hard share (:mod:`.budget`) and ``export --new-only --limit`` take marked frames first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ConfigError
from ..records import Decision, Detection, FrameRow, box_iou

#: Two boxes are the same object when they overlap this much (COCO's and Ultralytics' mAP50 line).
SAME_OBJECT_IOU = 0.5


def model_digest(path: Path) -> str:
    """The model file's identity: a retrained file under the same name is another model."""
    if not path.is_file():
        raise ConfigError(f"select.previous_model: {path} is not a model file (the .pt or .onnx of the round before)")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name}:{digest.hexdigest()[:16]}"


def needing(rows: list[FrameRow], stored: dict[str, list[Detection]]) -> list[FrameRow]:
    """The frames that show the classes and have no recorded boxes of the previous model yet."""
    return [r for r in rows if r.decision == Decision.CANDIDATE and r.key not in stored]


def disagreements(now: list[Detection], before: list[Detection]) -> list[str]:
    """How this round's boxes (``now``) and the previous model's (``before``) disagree: each object
    only one of them found, and each one they call by different classes (matched greedily, the
    most overlapping pair first). Empty when they agree."""
    pairs = sorted(((box_iou(a.xywhn, b.xywhn), i, j) for i, a in enumerate(now) for j, b in enumerate(before)),
                   reverse=True)
    matched_now: dict[int, int] = {}
    used: set[int] = set()
    # same class first: a re-classed object is one no same-class box of the other model explains
    for same_class in (True, False):
        for iou, i, j in pairs:
            if iou < SAME_OBJECT_IOU or i in matched_now or j in used:
                continue
            if (now[i].label == before[j].label) == same_class:
                matched_now[i] = j
                used.add(j)
    out = [f"previous model: {before[j].label}, now {now[i].label}"
           for i, j in sorted(matched_now.items()) if now[i].label != before[j].label]
    out += [f"the previous model missed this {d.label}" for i, d in enumerate(now) if i not in matched_now]
    out += [f"only the previous model saw a {d.label}" for j, d in enumerate(before) if j not in used]
    return out
