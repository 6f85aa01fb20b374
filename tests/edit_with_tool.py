"""Edits an export as a reviewer would, with the labelling tool's own library, and writes it back
in the tool's own format; prints what was done to which image, as JSON.

Run with the tools' interpreter (``.venv-tools``), by tests/test_review.py:

    .venv-tools/bin/python tests/edit_with_tool.py FORMAT EXPORT_FOLDER OUT

FORMAT ``cvat``: labelformat reads the CVAT for images 1.1 XML and writes the edited labels as
CVAT XML (OUT a folder); ``coco``: labelformat reads the COCO 1.0 file and writes COCO (OUT a file).
The edits, to the first four images with a box (by name): the first box moved right by
a fifth of its width; the first box deleted; a ``cup`` added; the first box re-classed ``dog``.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from collections.abc import Iterable
from pathlib import Path

from labelformat.formats.coco import COCOObjectDetectionInput, COCOObjectDetectionOutput
from labelformat.formats.cvat import CVATObjectDetectionInput, CVATObjectDetectionOutput
from labelformat.model.bounding_box import BoundingBox
from labelformat.model.category import Category
from labelformat.model.image import Image
from labelformat.model.object_detection import (
    ImageObjectDetection,
    ObjectDetectionInput,
    SingleObjectDetection,
)


class Edited(ObjectDetectionInput):
    """The input's labels after a reviewer's four edits."""

    def __init__(self, source: ObjectDetectionInput) -> None:
        self.categories = list(source.get_categories())
        for name in ("cup", "dog"):
            if name not in {c.name for c in self.categories}:
                self.categories.append(Category(max(c.id for c in self.categories) + 1, name))
        by_name = {c.name: c for c in self.categories}
        self.labels = sorted(source.get_labels(), key=lambda label: label.image.filename)
        self.done: dict[str, str] = {}
        chosen = [k for k, label in enumerate(self.labels) if label.objects][:4]
        for what, k in zip(("moved", "deleted", "added cup", "re-classed"), chosen, strict=False):
            label = self.labels[k]
            objects = list(label.objects)
            first = objects[0]
            if what == "moved":
                shift = (first.box.xmax - first.box.xmin) / 5
                box = BoundingBox(first.box.xmin + shift, first.box.ymin, min(first.box.xmax + shift,
                                  label.image.width), first.box.ymax)
                objects[0] = SingleObjectDetection(first.category, box)
            elif what == "deleted":
                objects = objects[1:]
            elif what == "added cup":
                objects.append(SingleObjectDetection(by_name["cup"], BoundingBox(2.0, 2.0, 40.0, 30.0)))
            else:
                objects[0] = SingleObjectDetection(by_name["dog"], first.box)
            self.labels[k] = ImageObjectDetection(label.image, objects)
            self.done[Path(label.image.filename).name] = what

    @staticmethod
    def add_cli_arguments(parser: ArgumentParser) -> None:
        """labelformat's command line is not used here: an input made in memory takes no arguments."""

    def get_categories(self) -> Iterable[Category]:
        return self.categories

    def get_images(self) -> Iterable[Image]:
        return [label.image for label in self.labels]

    def get_labels(self) -> Iterable[ImageObjectDetection]:
        return self.labels


if __name__ == "__main__":
    fmt, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if fmt == "cvat":
        edited = Edited(CVATObjectDetectionInput(folder / "annotations.xml"))
        CVATObjectDetectionOutput(out).save(edited)
    else:
        edited = Edited(COCOObjectDetectionInput(folder / "annotations" / "instances_default.json"))
        COCOObjectDetectionOutput(out).save(edited)
    print(json.dumps(edited.done))
