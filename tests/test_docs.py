"""The README and the CLI's help say exactly what the code accepts: every setting in the config
reference (and nothing that is not one), and the formats each command takes."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from typer.testing import CliRunner

from video_miner.cli import app
from video_miner.config import ExportConfig, MinerConfig
from video_miner.dataset import handover, review

from .conftest import ROOT

#: Every format name any command or setting knows.
EVERY_FORMAT = {"yolo", "coco", "label-studio", "cvat", "hf", "fiftyone", "mot"}


def _settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= _settings(kind, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def _reference() -> dict[str, str]:
    """The config reference's rows: each key its first cell names, with the row's text."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Config reference"):]
    table = table[:table.index("\n## ")]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for key in re.findall(r"`([a-z_][a-z0-9_.]*)`", first):
                rows[key] = line
    return rows


def test_the_config_reference_lists_every_setting_and_only_settings() -> None:
    rows = set(_reference())
    # `track: true` is how the switch is written: its row is the section's own.
    rows = {"track.enabled" if key == "track" else key for key in rows}
    code = _settings(MinerConfig)
    assert code - rows == set(), "settings the README's config reference does not list"
    assert rows - code == set(), "rows of the README's config reference that are no setting"


def _named(text: str) -> set[str]:
    return {name for name in EVERY_FORMAT if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)}


def test_formats_in_the_readme_and_help_are_the_ones_the_code_takes() -> None:
    accepted = set(typing.get_args(typing.get_args(ExportConfig.model_fields["formats"].annotation)[0]))
    assert _named(_reference()["export.formats"].split("|")[3]) == accepted
    runner = CliRunner()
    for command, formats in (("export", handover.FORMATS), ("diff", handover.FORMATS), ("import", review.FORMATS)):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"}, terminal_width=400)
        assert shown.exit_code == 0, shown.output
        line = next(x for x in shown.output.splitlines() if "--format" in x)
        assert _named(line) == set(formats), (command, line)
