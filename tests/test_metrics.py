"""Prometheus endpoint during a real run, metrics.json, the report command and --profile."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from video_miner.observe.metrics import RunMetrics
from video_miner.run.compose import mine
from video_miner.run.request import RunRequest

from .conftest import MODEL, ROOT, VIDEOS
from .helpers import cli_here, make_config
from .helpers import metrics as run_metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_prometheus_endpoint_and_metrics_json_agree_with_the_run(person_head: Path, bottle_head: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = make_config(out, metrics_port=0)  # 0: any free port, always on 127.0.0.1 by default
    metrics = RunMetrics()
    scrapes: list[str] = []
    serving = threading.Event()
    real_serve = metrics.serve

    def serve(host: str, port: int) -> int:
        bound = real_serve(host, port)
        assert host == "127.0.0.1"
        metrics.port = bound  # type: ignore[attr-defined]
        serving.set()
        return bound

    metrics.serve = serve  # type: ignore[method-assign]
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "report", mine(RunRequest([str(person_head), str(bottle_head), str(VIDEOS / "again.mkv")], config), metrics=metrics)))
    worker.start()
    assert serving.wait(120)
    while worker.is_alive():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5) as resp:  # type: ignore[attr-defined]
                scrapes.append(resp.read().decode())
        except OSError:
            break
        worker.join(0.5)
    worker.join()
    report = result["report"]
    assert scrapes, "scraped during the run"
    live = _samples(scrapes[0])
    assert ("video_miner_queue_depth", (("stage", "filter"),)) in live
    assert ("video_miner_stage_busy_workers", (("stage", "extract"),)) in live

    final = _samples(generate_latest(metrics.registry).decode())
    assert final[("video_miner_stage_items_processed_total", (("stage", "collect"),))] == 3
    assert final[("video_miner_stage_items_failed_total", (("stage", "download"),))] == 0
    assert final[("video_miner_frames_extracted_total", ())] == report.export.frames  # type: ignore[attr-defined]
    assert final[("video_miner_frames_kept_total", ())] == report.export.kept  # type: ignore[attr-defined]
    assert final[("video_miner_frames_duplicates_total", ())] == report.export.duplicates  # type: ignore[attr-defined]
    assert final[("video_miner_videos", (("state", "done"),))] == 3
    assert final[("video_miner_stage_processing_seconds_count", (("stage", "filter"),))] == 3
    assert final[("video_miner_video_seconds_count", ())] == 3
    assert final[("video_miner_detector_batch_size_count", ())] >= 1

    data = run_metrics(out)
    rows = [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]
    assert data.totals["frames"] == len(rows)
    assert data.totals["kept"] == sum(r["decision"] == "kept" for r in rows)
    assert data.totals["duplicates"] == sum(r["decision"] == "duplicate" for r in rows)
    assert final[("video_miner_frames_deferred_total", ())] == data.totals["frames_deferred"]
    # Every frame the filter sent went through the batcher (the export detects a few more itself).
    assert data.detector is not None and data.bottleneck is not None
    assert final[("video_miner_detector_wait_seconds_count", ())] == data.detector.requests > 0
    assert final[("video_miner_detector_batch_size_count", ())] == data.detector.batches
    assert list(data.stages) == ["download", "extract", "filter", "collect"]
    assert data.bottleneck.stage in data.stages and "bottleneck" in data.bottleneck.hint
    for s in data.stages.values():
        assert s.items_in == 3 and 0 <= s.busy_fraction <= 1.0 and s.p50_s <= s.p95_s <= s.max_s


def test_report_prints_tables_and_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = cli_here("run", str(VIDEOS / "again.mkv"), str(VIDEOS / "book.mkv"), "--model", str(MODEL), "-o", str(out), "-q",
                   "--profile")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (out / "profile.pstats").stat().st_size > 0
    assert "filter.py" in (out / "profile.txt").read_text(), "the profile sees the stage threads"
    rep = cli_here("report", "-o", str(out))
    assert rep.returncode == 0, rep.stderr
    assert "stages" in rep.stdout and "totals" in rep.stdout and "is the bottleneck" in rep.stdout
    png = out / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_metrics_stay_small_for_many_videos_and_a_rerun_with_nothing_to_do_keeps_them(
        short_clips: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = [str(p) for p in short_clips]
    config = make_config(out)
    mine(RunRequest(inputs, config))
    first = run_metrics(out)
    det = first.detector
    assert det is not None and det.requests == len(short_clips) == first.totals["frames_to_detector"]
    assert det.batches == sum(det.batch_sizes.values()) and 0 < det.batch_fill_mean <= 1
    assert det.batch_size_p50 >= 1 and det.wait_s.p50 <= det.wait_s.p95 <= det.wait_s.max
    assert len(first.history) == 1
    # Nothing left to do: the last real run's figures stay.
    mine(RunRequest(inputs, config))
    assert run_metrics(out) == first
    # A new input: a second entry in the history, not a file that grows with the videos.
    mine(RunRequest([*inputs, str(VIDEOS / "again.mkv")], config))
    assert [h["videos"] for h in run_metrics(out).history] == [len(inputs), len(inputs) + 1]


def test_the_timeline_is_bounded_however_many_events() -> None:
    from video_miner.observe.metrics import Timeline

    timeline = Timeline(max_points=400)
    for i in range(200_000):
        for stage in ("download", "extract", "filter", "collect"):
            timeline.add(i * 0.01, stage, i % 3, i % 5)
    points = timeline.points()
    assert len(points) <= 400
    assert points[-1]["t"] >= 1000  # still covers the whole run
    assert max(p["busy"] for p in points) == 2 and max(p["queue"] for p in points) == 4  # peaks survive


@pytest.mark.fast
def test_the_bottleneck_is_the_stage_that_held_the_others_back() -> None:
    """Extract busier by the clock (2 workers of 2 half the time) than the filter (6 of 16), but
    the filter had videos waiting for it, then ran alone: the filter held the run back."""
    from video_miner.observe.metrics import RunMetrics, held_back

    metrics = RunMetrics()
    for t in range(0, 100):
        s = t / 10
        extract = (2, 0) if s < 5 else (0, 0)
        filter_ = (6, 3) if 1 <= s < 5 else (6, 0) if s < 10 else (0, 0)
        metrics.timeline.add(s, "extract", *extract)
        metrics.timeline.add(s, "filter", *filter_)
    held = held_back(metrics.timeline.points(), {"extract": 2, "filter": 16}, 10.0)
    assert held["filter"] == pytest.approx(0.9, abs=0.02)  # queue from 1 s, alone from 5 s to 10 s
    assert held["extract"] == pytest.approx(0.5, abs=0.02)  # both workers busy for 5 s


def _exported_names() -> set[str]:
    """Every metric family this program exports: the run's registry, and the families that appear
    only with several models, live sources or a finished run."""
    from video_miner.live.stats import LiveSnapshot
    from video_miner.observe.metrics import RunEnd, RunMetrics, _live_families, _model_families, _RunCollector

    metrics = RunMetrics()
    families = list(metrics.registry.collect())
    snap = {"models": {"m": {"calls": 1, "skipped": 0, "busy": 0, "failed": 0}},
            "joins": {"frames": {"matched": 1, "partial": 0, "expired": 0, "waiting": 0, "wait_p50_s": 0.0,
                                 "wait_p95_s": 0.0}}}
    families += _model_families(snap)
    families += _live_families({"s": LiveSnapshot(source="s", state="live")})
    run_end = _RunCollector()
    run_end.end, run_end.last_success = RunEnd(1, 0, 1, True), 1.0
    families += run_end.collect()
    return {f.name for f in families}


@pytest.mark.fast
def test_the_dashboard_and_the_rules_query_only_metrics_this_program_exports() -> None:
    import re

    import yaml

    names = _exported_names()
    dashboard = json.loads((ROOT / "dashboards" / "grafana-video-miner.json").read_text())
    rules = yaml.safe_load((ROOT / "dashboards" / "rules.yml").read_text())
    panels = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs = panels + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {re.sub(r"_(total|bucket|count|sum|created)$", "", m) for e in exprs for m in re.findall(r"video_miner_\w+", e)}
    assert used and used <= names, sorted(used - names)
    # One dataset at a time (or all): every panel's query is scoped by the dashboard's variables.
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"dataset", "output"}
    assert all('dataset=~"$dataset"' in e for e in panels)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("kept frames", "models", "joins", "live sources"):
        assert topic in titles, topic
