"""A reviewer at a running Label Studio server, through label-studio-sdk (run by the Label Studio
venv's interpreter): a project from video-miner's label-studio export (its label config, its tasks
with the model's boxes as predictions), then the first five tasks with boxes reviewed as a person
would: a box moved, a false one deleted, a missed one added (a new class, added to the config
first), one re-classed, a frame skipped. Prints JSON: the project's id, what was done to each
frame, where Label Studio's own JSON export of the project was saved, and a personal access token
the reviewer made (a JWT, the kind Label Studio's settings page hands out).

Usage: label_studio_reviewer.py URL TOKEN EXPORT_FOLDER SAVE_TO
"""

from __future__ import annotations

import copy
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from label_studio_sdk import LabelStudio


def _with_labels(config: str, names: list[str]) -> str:
    view = ET.fromstring(config)
    labels = view.find("RectangleLabels")
    assert labels is not None
    for name in names:
        ET.SubElement(labels, "Label", value=name)
    return ET.tostring(view, encoding="unicode")


def _review(k: int, result: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The fifth's result is the model's (it is skipped: the annotation is cancelled)."""
    result = copy.deepcopy(result)
    for region in result:
        region.pop("score", None)
    if k == 0:
        result[0]["value"]["x"] += result[0]["value"]["width"] * 0.2  # moved a fifth of its width
        return result, "moved"
    if k == 1:
        return result[1:], "deleted"
    if k == 2:
        added = {**copy.deepcopy(result[0]), "id": "added"}
        added["value"] = {"x": 1, "y": 1, "width": 10, "height": 10, "rotation": 0, "rectanglelabels": ["cup"]}
        return [*result, added], "added cup"
    if k == 3:
        result[0]["value"]["rectanglelabels"] = ["dog"]
        return result, "re-classed"
    return result, "rejected"


def main(url: str, token: str, export: Path, save_to: Path) -> None:
    ls = LabelStudio(base_url=url, api_key=token)
    config = (export / "label_config.xml").read_text()
    project = ls.projects.create(title="video-miner review", label_config=config)
    ls.projects.import_tasks(project.id, request=json.loads((export / "tasks.json").read_text()))
    # The reviewer adds the classes they need before drawing them.
    ls.projects.update(project.id, label_config=_with_labels(config, ["cup", "dog"]))
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    with_boxes = [t for t in tasks if t.predictions and t.predictions[0].result]
    assert len(with_boxes) >= 5, len(with_boxes)
    done: dict[str, str] = {}
    for k, task in enumerate(with_boxes[:5]):
        result, what = _review(k, task.predictions[0].result)
        ls.annotations.create(id=task.id, result=result, was_cancelled=what == "rejected")
        done[task.data["frame"]] = what
    save_to.write_bytes(ls.projects.exports.as_binary(project.id, export_type="JSON"))
    print(json.dumps({"project": project.id, "done": done, "export": str(save_to),
                      "personal_token": ls.tokens.create().token}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
