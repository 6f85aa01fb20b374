"""Run metrics: a Prometheus endpoint while the run goes, metrics.json when it ends.

Live values (queue depths, busy workers, stage counters, frame totals) are read from the engine's
snapshot and the run's counters at scrape time, so nothing is counted twice; per-item durations
feed real histograms as the engine reports them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from async_pipeline import PipelineEvent

from .context import MiningContext
from .fsutil import atomic_write_json

PREFIX = "video_miner"
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
HINTS = {
    "download": "raise pipeline.download_workers, or check bandwidth and download.rate_limit",
    "extract": "raise pipeline.extract_workers, lower extract.fps or extract.max_side",
    "filter": "add a GPU, lower extract.fps or raise the prefilter thresholds (filter.blur_threshold, "
              "filter.static_max_diff)",
    "collect": "check the output disk's speed",
}


class _LiveCollector(Collector):
    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        snap = m.snapshot()
        gauges = {
            "queue_depth": ("Items waiting in each stage's input queue", "queue_depth"),
            "stage_busy_workers": ("Workers of each stage busy with an item", "busy"),
            "stage_workers": ("Workers of each stage", "workers"),
        }
        for name, (doc, key) in gauges.items():
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["stage"])
            for stage, s in snap.items():
                g.add_metric([stage], s[key])
            yield g
        counters = {
            "stage_items_processed": ("Items a stage finished (passed on, fanned out or dropped)", "processed"),
            "stage_items_failed": ("Items that failed in a stage", "failed"),
            "stage_items_dropped": ("Items a stage or its queue policy dropped", "dropped"),
        }
        for name, (doc, key) in counters.items():
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["stage"])
            for stage, s in snap.items():
                c.add_metric([stage], s[key] + (s["queue_dropped"] if key == "dropped" else 0))
            yield c
        counts = m.ctx.counters.as_dict() if m.ctx else {}
        for name, key, doc in (
            ("frames_extracted", "frames_extracted", "Frames written by the extract stage"),
            ("frames_filtered_out", "frames_filtered", "Frames the prefilters or the detector rejected"),
            ("frames_candidates", "frames_candidates", "Frames the detector kept, before cross-video dedup"),
            ("frames_deferred", "frames_deferred", "Frames not sent to the detector: near-duplicates of a frame it kept"),
            ("frames_kept", "frames_kept", "Frames in the exported dataset"),
            ("frames_duplicates", "frames_duplicates", "Frames removed as near-duplicates"),
            ("bytes_downloaded", "bytes_downloaded", "Bytes downloaded"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=counts.get(key, 0))
        videos = GaugeMetricFamily(f"{PREFIX}_videos", "Videos per registry state", labels=["state"])
        for state, n in m.video_states.items():
            videos.add_metric([state], n)
        yield videos


@dataclass
class RunMetrics:
    """Observer of one run. Pass :meth:`on_event` to the engine and call :meth:`attach` first."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    ctx: MiningContext | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    _runner: Any = None
    _video_started: dict[str, float] = field(default_factory=dict)
    _durations: dict[str, list[float]] = field(default_factory=dict)
    _last_point: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Videos per registry state, refreshed as videos finish (scrapes never touch the database).
    video_states: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    def __post_init__(self) -> None:
        self.stage_seconds = Histogram(f"{PREFIX}_stage_processing_seconds", "Processing time per item per stage",
                                       ["stage"], buckets=BUCKETS, registry=self.registry)
        self.video_seconds = Histogram(f"{PREFIX}_video_seconds", "End-to-end time per video, first stage to last",
                                       buckets=BUCKETS, registry=self.registry)
        self.registry.register(_LiveCollector(self))

    def attach(self, runner: Any, ctx: MiningContext) -> None:
        self._runner, self.ctx = runner, ctx
        self.started_at = time.monotonic()
        self.refresh_videos()

    def refresh_videos(self) -> None:
        if self.ctx is not None:
            self.video_states = self.ctx.registry.counts_by_state()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self._runner.snapshot() if self._runner is not None else {}

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint; returns the port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def on_event(self, event: PipelineEvent) -> None:
        now = time.monotonic()
        with self._lock:
            if event.kind == "started" and event.item_id not in self._video_started:
                self._video_started[event.item_id] = now
            elif event.kind == "item_done" and event.item_id in self._video_started:
                self.video_seconds.observe(now - self._video_started.pop(event.item_id))
        if event.kind == "item_done":
            self.refresh_videos()
        if event.kind in ("finished", "failed") and event.stage:
            self.stage_seconds.labels(event.stage).observe(event.seconds)
            with self._lock:
                self._durations.setdefault(event.stage, []).append(event.seconds)
        if event.stage and event.kind in ("started", "finished", "failed", "queue_dropped"):
            # A queue fills on the upstream stage's events, so every stage is sampled each time.
            t = round(now - self.started_at, 4)
            with self._lock:
                for name, s in self.snapshot().items():
                    state = (s["busy"], s["queue_depth"])
                    if self._last_point.get(name) != state:  # only changes: the file stays small
                        self._last_point[name] = state
                        self.timeline.append({"t": t, "stage": name, "busy": state[0], "queue": state[1]})

    def report(self, totals: dict[str, Any], wall: float) -> dict[str, Any]:
        """``wall``: seconds the stages ran, the denominator of busy fractions and throughput."""
        stages: dict[str, Any] = {}
        for name, s in self.snapshot().items():
            d = np.array(self._durations.get(name) or [0.0])
            capacity = s["workers"] * wall
            stages[name] = {
                "workers": s["workers"],
                "items_in": s["items_in"],
                "items_out": s["items_out"],
                "failed": s["failed"],
                "dropped": s["dropped"] + s["queue_dropped"],
                "retries": s["retries"],
                "p50_s": round(float(np.percentile(d, 50)), 4),
                "p95_s": round(float(np.percentile(d, 95)), 4),
                "max_s": round(float(d.max()), 4),
                "busy_seconds": round(s["busy_seconds"], 3),
                "setup_seconds": round(s["setup_seconds"], 3),
                "busy_fraction": round(s["busy_seconds"] / capacity, 4) if capacity > 0 else 0.0,
                "throughput_per_s": round(s["processed"] / wall, 4) if wall > 0 else 0.0,
                "queue_high_water": s["queue_high_water"],
                "queue_size": s["queue_size"],
            }
        bottleneck = None
        if stages:
            name = max(stages, key=lambda n: stages[n]["busy_fraction"])
            frac = stages[name]["busy_fraction"]
            bottleneck = {"stage": name, "busy_fraction": frac,
                          "hint": f"{name} is the bottleneck: {frac:.0%} busy; {HINTS.get(name, 'give it more workers')}"}
        return {"stages": stages, "totals": totals, "bottleneck": bottleneck, "timeline": self.timeline}

    def write(self, path: Path, totals: dict[str, Any], wall: float) -> dict[str, Any]:
        data = self.report(totals, wall)
        atomic_write_json(path, data, sort_keys=False)  # keep stages in pipeline order
        return data


def load_metrics(output: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((output / "metrics.json").read_text())
    return data
