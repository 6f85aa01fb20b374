"""metrics.json through its records: what the writer writes, the reader reads back whole; a file
that is not one says so in a line; an older file (no schema_version) and a newer one's extra
figures are read, not refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_miner.errors import ConfigError
from video_miner.observe.metrics_file import (
    SCHEMA_VERSION,
    BatchFigures,
    Bottleneck,
    JoinFigures,
    LiveFigures,
    MetricsFile,
    ModelFigures,
    ModelsFigures,
    Quantiles,
    StageFigures,
    TimelinePoint,
    read_metrics,
    write_metrics,
)


def _every_section() -> MetricsFile:
    batches = BatchFigures(max_batch=8, batches=3, requests=20, busy_seconds=1.5, batch_size_mean=6.667,
                           batch_size_p50=8, batch_fill_mean=0.8333, batch_sizes={"4": 1, "8": 2},
                           wait_s=Quantiles(count=20, mean=0.01, p50=0.008, p95=0.02, max=0.03),
                           reasons={"full": 2, "timeout": 1}, requests_per_busy_s=13.333, max_wait_s=0.05,
                           frames_per_s=4.0, busy_fraction=0.3)
    return MetricsFile(
        stages={"download": StageFigures(workers=2, items_in=3, items_out=3, busy_seconds=0.5),
                "filter": StageFigures(workers=1, items_in=3, items_out=3, p95_s=1.25, held_fraction=0.7)},
        totals={"videos": 3, "kept": 12, "wall_seconds": 5.125},
        bottleneck=Bottleneck(stage="filter", held_fraction=0.7, busy_fraction=0.6, hint="filter is the bottleneck"),
        detector=batches,
        models=ModelsFigures(models={"vehicles": ModelFigures(kind="detector", calls=20, batches=batches),
                                     "plates": ModelFigures(kind="ocr", after="vehicles", calls=4, skipped=16)},
                             joins={"frames": JoinFigures(matched=20, wait_p95_s=0.2)}, keep="bus and text"),
        live={"rtsp://127.0.0.1:8554/cam": LiveFigures(state="ended", frames_captured=150, frames_sampled=30,
                                                      latency_p95_s=0.31, error=None)},
        timeline=[TimelinePoint(t=0.05, stage="filter", busy=1, queue=2)],
        history=[{"finished_at": "2026-12-03T16:00:00+0000", "kept": 12}])


def test_what_is_written_reads_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    written = _every_section()
    write_metrics(path, written)
    assert read_metrics(path) == written
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and list(raw["stages"]) == ["download", "filter"]
    # a section the run did not have is absent, not null
    write_metrics(path, MetricsFile(stages=written.stages))
    assert {"detector", "models", "live", "bottleneck"}.isdisjoint(json.loads(path.read_text()))


def test_an_older_file_and_a_newer_ones_figures_are_read(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"stages": {"filter": {"workers": 1, "busy_fraction": 0.5, "gpu_util": 0.9}},
                                "totals": {"kept": 3}, "from_a_newer_release": {"x": 1}}))
    read = read_metrics(path)
    assert read.schema_version == SCHEMA_VERSION and read.stages["filter"].busy_fraction == 0.5
    assert read.stages["filter"].p95_s == 0.0  # a figure the file lacks reads as zero
    again = tmp_path / "again.json"
    write_metrics(again, read)
    kept = json.loads(again.read_text())
    assert kept["stages"]["filter"]["gpu_util"] == 0.9 and kept["from_a_newer_release"] == {"x": 1}


@pytest.mark.parametrize("content", ['{"stages": {"filter": {"workers": "many"}}}', "[1, 2]", "{not json",
                                     '{"timeline": [{"stage": "filter"}]}'])
def test_a_file_that_is_not_one_says_so_in_a_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_metrics(path)
    message = str(caught.value)
    assert "\n" not in message and "not a video-miner metrics file" in message and "run the job again" in message
