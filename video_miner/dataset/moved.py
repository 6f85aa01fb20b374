"""A review moves with its frame's place: when a copy with clearly more pixels now stands for a
reviewed frame (a re-upload, a crop, a mirror), the reviewed boxes go to the copy, mapped by the
geometry the model's own boxes show on both frames.

Per axis the copy's coordinates are ``s * x + t`` of the reviewed frame's (``s < 0``: mirrored),
fitted by least squares to the edges of the model's boxes matched by class (in order along the
picture), and kept only if it puts each of the model's boxes on its match at IoU >= ``MOVE_IOU``.
Where the boxes cannot tell a mirror from a crop (one box, or boxes placed symmetrically), the
pictures do: the frame mapped each way against the copy, grey thumbnails correlated. A reviewed box mapped mostly outside the
copy's picture (cropped away) is left out; a review the model's boxes cannot place stays where it
was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..records import Detection, box_iou

#: How well the model's boxes on two frames must overlap (after the mapping) for a review to move.
MOVE_IOU = 0.7
#: A mapping that scales by less or more than this is no copy of the frame.
SCALES = (0.2, 5.0)
#: A mapped box keeps at least this share of its area inside the picture, or is left out.
INSIDE = 0.5
#: Side of the grey thumbnails two pictures are compared at.
THUMB = 64


@dataclass(frozen=True)
class Geometry:
    """``x' = sx * x + tx``, ``y' = sy * y + ty`` in 0-1 picture coordinates."""

    sx: float
    tx: float
    sy: float
    ty: float

    @property
    def mirrored(self) -> bool:
        return self.sx < 0

    def box(self, xywhn: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
        """A box mapped onto the copy, cut to its picture; None when most of it falls outside."""
        x, y, w, h = xywhn
        xs = sorted((self.sx * (x - w / 2) + self.tx, self.sx * (x + w / 2) + self.tx))
        ys = sorted((self.sy * (y - h / 2) + self.ty, self.sy * (y + h / 2) + self.ty))
        area = (xs[1] - xs[0]) * (ys[1] - ys[0])
        left, right = max(0.0, xs[0]), min(1.0, xs[1])
        top, bottom = max(0.0, ys[0]), min(1.0, ys[1])
        if area <= 0 or right <= left or bottom <= top or (right - left) * (bottom - top) < INSIDE * area:
            return None
        return ((left + right) / 2, (top + bottom) / 2, right - left, bottom - top)


def same_boxes(a: list[Detection], b: list[Detection]) -> bool:
    """Whether the model saw the same boxes on both frames (a re-encode, a rescale): the review
    fits the copy as it is."""
    if not a or sorted(d.label for d in a) != sorted(d.label for d in b):
        return False
    return all(any(d.label == e.label and box_iou(d.xywhn, e.xywhn) >= MOVE_IOU for e in b) for d in a)


def geometry(a: list[Detection], b: list[Detection], agreement: Callable[[Geometry], float | None]
             ) -> Geometry | None:
    """How frame ``b`` shows frame ``a``'s picture, from the model's boxes on both; None if they do
    not say. Where both a crop and a mirror fit the boxes (one box, or boxes placed symmetrically),
    ``agreement`` (how alike the pictures are under a mapping; None: it cannot tell) decides."""
    plain, flipped = _fit(a, b, False), _fit(a, b, True)
    if plain is None or flipped is None:
        return plain or flipped
    as_is, mirrored = agreement(plain), agreement(flipped)
    if as_is is None or mirrored is None:
        return None
    return flipped if mirrored > as_is else plain


def map_boxes(boxes: list[Detection], where: Geometry) -> list[Detection]:
    """Reviewed boxes on the copy; those cropped away are left out."""
    out = []
    for d in boxes:
        mapped = where.box(d.xywhn)
        if mapped is not None:
            out.append(replace(d, xywhn=mapped))
    return out


def _pairs(a: list[Detection], b: list[Detection], mirrored: bool) -> list[tuple[Detection, Detection]] | None:
    """The model's boxes of both frames matched: by class, in order along the picture (reversed on a mirror)."""
    labels = sorted({d.label for d in a})
    if not a or labels != sorted({d.label for d in b}):
        return None
    pairs = []
    for label in labels:
        mine = sorted((d for d in a if d.label == label), key=lambda d: d.xywhn[0])
        theirs = sorted((d for d in b if d.label == label), key=lambda d: d.xywhn[0], reverse=mirrored)
        if len(mine) != len(theirs):
            return None
        pairs += list(zip(mine, theirs, strict=True))
    return pairs


def _fit(a: list[Detection], b: list[Detection], mirrored: bool) -> Geometry | None:
    pairs = _pairs(a, b, mirrored)
    if pairs is None:
        return None
    xa, xb, ya, yb = [], [], [], []
    for d, e in pairs:
        (x, y, w, h), (x2, y2, w2, h2) = d.xywhn, e.xywhn
        left, right = (x2 + w2 / 2, x2 - w2 / 2) if mirrored else (x2 - w2 / 2, x2 + w2 / 2)
        xa += [x - w / 2, x + w / 2]
        xb += [left, right]
        ya += [y - h / 2, y + h / 2]
        yb += [y2 - h2 / 2, y2 + h2 / 2]
    sx, tx = np.polyfit(xa, xb, 1)
    sy, ty = np.polyfit(ya, yb, 1)
    where = Geometry(float(sx), float(tx), float(sy), float(ty))
    if not (SCALES[0] <= abs(where.sx) <= SCALES[1] and SCALES[0] <= where.sy <= SCALES[1]) \
            or where.mirrored != mirrored:
        return None
    for d, e in pairs:
        mapped = where.box(d.xywhn)
        if mapped is None or box_iou(mapped, e.xywhn) < MOVE_IOU:
            return None
    return where


def pictures_agree(image_a: Path, image_b: Path) -> Callable[[Geometry], float | None]:
    """How alike frame ``b``'s picture is to frame ``a``'s mapped by a geometry: the correlation of
    grey thumbnails over the part of ``b`` the mapping fills (the background counts: a bottle is
    as symmetric as a mirror, the room around it is not); None when a picture cannot be read."""
    try:
        first, second = _thumb(image_a), np.asarray(_thumb(image_b), dtype=np.float32)
    except (OSError, ValueError):
        return lambda where: None

    def agree(where: Geometry) -> float:
        # PIL's affine transform maps each output pixel back to its source: x_a = (x_b - tx*W) / sx
        back = (1 / where.sx, 0.0, -where.tx * THUMB / where.sx, 0.0, 1 / where.sy, -where.ty * THUMB / where.sy)
        warped = np.asarray(first.transform((THUMB, THUMB), Image.Transform.AFFINE, back), dtype=np.float32)
        filled = np.asarray(Image.new("L", (THUMB, THUMB), 255).transform((THUMB, THUMB), Image.Transform.AFFINE,
                                                                            back), dtype=np.float32) > 0
        return _corr(warped[filled], second[filled]) if filled.sum() >= THUMB else -1.0

    return agree


def _thumb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.grayscale(im).resize((THUMB, THUMB), Image.Resampling.BILINEAR)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / scale if scale > 0 else 0.0
