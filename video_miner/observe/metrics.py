"""Run metrics: a Prometheus endpoint while the run goes, metrics.json when it ends.

Live values (queue depths, busy workers, stage counters, frame totals) are read from the engine's
snapshot and the run's counters at scrape time, so nothing is counted twice; per-item durations
feed real histograms as the engine reports them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from async_pipeline import Distribution, DynamicBatcher, PipelineEvent, StageSnapshot

from ..errors import ConfigError
from ..live.stats import LiveSnapshot
from .metrics_file import (
    BatchFigures,
    Bottleneck,
    MetricsFile,
    ModelsFigures,
    StageFigures,
    TimelinePoint,
    read_metrics,
    write_metrics,
)
from .view import RunView

PREFIX = "video_miner"
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Runs remembered in metrics.json's history.
HISTORY = 20
HINTS = {
    "download": "raise pipeline.download_workers, or check bandwidth and download.rate_limit",
    "extract": "raise pipeline.extract_workers, lower extract.fps or extract.max_side",
    "filter": "add a GPU, lower extract.fps or tighten the prefilters (lower filter.max_blur, raise "
              "filter.static_max_diff)",
    "collect": "check the output disk's speed",
}


class ModelsView(Protocol):
    """What metrics read of several models (:class:`~video_miner.detect.model_graph.ModelGraph`)."""

    @property
    def batchers(self) -> tuple[DynamicBatcher[Any, Any], ...]: ...

    def snapshot(self) -> dict[str, Any]: ...


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
                g.add_metric([stage], getattr(s, key))
            yield g
        counters = {
            "stage_items_processed": ("Items a stage finished (passed on, fanned out or dropped)", "processed"),
            "stage_items_failed": ("Items that failed in a stage", "failed"),
            "stage_items_dropped": ("Items a stage or its queue policy dropped", "dropped"),
        }
        for name, (doc, key) in counters.items():
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["stage"])
            for stage, s in snap.items():
                c.add_metric([stage], getattr(s, key) + (s.queue_dropped if key == "dropped" else 0))
            yield c
        counts = m.view.counters.as_dict() if m.view else {}
        for name, key, doc in (
            ("frames_extracted", "frames_extracted", "Frames written by the extract stage"),
            ("frames_filtered_out", "frames_filtered", "Frames the prefilters or the detector rejected"),
            ("frames_candidates", "frames_candidates", "Frames the detector kept, before cross-video dedup"),
            ("frames_deferred", "frames_deferred", "Frames not sent to the detector: near-duplicates of a frame it kept"),
            ("frames_kept", "frames_kept", "Frames in the exported dataset"),
            ("frames_duplicates", "frames_duplicates", "Frames removed as near-duplicates"),
            ("bytes_downloaded", "bytes_downloaded", "Bytes downloaded"),
            ("tracks", "tracks", "Objects tracked through the videos (track: true)"),
            ("frames_hard", "frames_hard", "Boxes where the model contradicts itself along a track (missed, class changed)"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=counts.get(key, 0))
        videos = GaugeMetricFamily(f"{PREFIX}_videos", "Videos per registry state", labels=["state"])
        for state, n in m.video_states.items():
            videos.add_metric([state], n)
        yield videos
        yield from _live_families(m.live())
        if m.models is not None:
            yield from _model_families(m.models.snapshot())


def _model_families(snap: dict[str, Any]) -> Iterator[Any]:
    """Several models: each model's frames by outcome, each join's keys and waits."""
    frames = CounterMetricFamily(f"{PREFIX}_model_frames", "Frames per model: answered (calls), spared by a cascade "
                                 "(skipped), no room for (busy, live), failed", labels=["model", "outcome"])
    for model, counts in snap["models"].items():
        for outcome in ("calls", "skipped", "busy", "failed"):
            frames.add_metric([model, outcome], counts[outcome])
    yield frames
    keys = CounterMetricFamily(f"{PREFIX}_join_keys", "Frames a join sent on: every model answered (matched), "
                               "without some (partial), dropped waiting (expired)", labels=["join", "how"])
    waiting = GaugeMetricFamily(f"{PREFIX}_join_waiting", "Frames a join holds for a model's answer", labels=["join"])
    wait = GaugeMetricFamily(f"{PREFIX}_join_wait_seconds", "Time from a frame's first answer to its last",
                             labels=["join", "quantile"])
    for join, stats in snap["joins"].items():
        for how in ("matched", "partial", "expired"):
            keys.add_metric([join, how], stats[how])
        waiting.add_metric([join], stats["waiting"])
        wait.add_metric([join, "0.5"], stats["wait_p50_s"])
        wait.add_metric([join, "0.95"], stats["wait_p95_s"])
    yield from (keys, waiting, wait)


def _live_families(live: dict[str, LiveSnapshot]) -> Iterator[Any]:
    """Per live source: frames at each step, latency from capture to decision, reconnects."""
    if not live:
        return
    for name, key, doc in (
        ("live_frames_captured", "frames_captured", "Frames the source delivered"),
        ("live_frames_sampled", "frames_sampled", "Frames sampled at extract.fps"),
        ("live_frames_filtered", "frames_filtered", "Sampled frames the prefilters dropped"),
        ("live_frames_dropped", "frames_dropped", "Frames live.queue_policy threw away: the detector was behind"),
        ("live_frames_decided", "frames_decided", "Frames the filter decided"),
        ("live_frames_partial", "frames_partial", "Frames decided without a slow model's answer (several models)"),
        ("live_frames_expired", "frames_expired", "Frames dropped waiting for a slow model (live.wait_all)"),
        ("live_reconnects", "reconnects", "Times the source came back after dropping"),
        ("live_tracks_new", "tracks_new", "Objects that came into view (tracks started, tracks on)"),
    ):
        c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["source"])
        for source, s in live.items():
            c.add_metric([source], getattr(s, key))
        yield c
    latency = GaugeMetricFamily(f"{PREFIX}_live_latency_seconds", "Capture to decision, per source",
                                labels=["source", "quantile"])
    for source, s in live.items():
        for q, value in (("0.5", s.latency_p50_s), ("0.95", s.latency_p95_s), ("1", s.latency_max_s)):
            latency.add_metric([source, q], value)
    yield latency
    up = GaugeMetricFamily(f"{PREFIX}_live_source_up", "1 while the source is being read, else 0 (connecting, "
                                                       "retrying, ended, failed)", labels=["source"])
    for source, s in live.items():
        up.add_metric([source], float(s.state == "live"))
    yield up


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, for the run-level gauges (``last_run_*``, ``last_success``)."""

    videos_done: int
    videos_failed: int
    frames_kept: int
    #: Every video succeeded and nothing stopped the run: what a nightly job's alert waits for.
    success: bool
    at: float = field(default_factory=time.time)


class _RunCollector(Collector):
    """The last run's outcome. ``last_success`` is only there when known: a failed run's push or
    textfile must not overwrite the time of the last success with nothing."""

    def __init__(self) -> None:
        self.end: RunEnd | None = None
        self.last_success: float | None = None

    def collect(self) -> Iterator[Any]:
        if self.last_success is not None:
            yield GaugeMetricFamily(f"{PREFIX}_last_success_timestamp_seconds",
                                    "When a run last ended with every video done (Unix time)", value=self.last_success)
        if self.end is None:
            return
        for name, value, doc in (
            ("last_run_videos_done", self.end.videos_done, "Videos the last run finished"),
            ("last_run_videos_failed", self.end.videos_failed, "Videos the last run failed (or left unfinished)"),
            ("last_run_frames_kept", self.end.frames_kept, "Frames in the dataset the last run exported"),
            ("last_run_end_timestamp_seconds", self.end.at, "When the last run ended (Unix time)"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


class Timeline:
    """Busy workers and queue depth per stage over time, for the report's plot. Bounded: time is cut
    into buckets that keep each stage's peak; past ``max_points`` neighbouring buckets merge and
    the buckets double in length, so a week-long run writes as few points as a minute-long one."""

    def __init__(self, max_points: int = 1000, bucket_s: float = 0.05) -> None:
        self.max_points = max_points
        self.bucket_s = bucket_s
        self._buckets: dict[int, dict[str, tuple[int, int]]] = {}
        self._stages: set[str] = set()

    def add(self, t: float, stage: str, busy: int, queue: int) -> None:
        bucket = self._buckets.setdefault(int(t // self.bucket_s), {})
        old = bucket.get(stage, (0, 0))
        bucket[stage] = (max(old[0], busy), max(old[1], queue))
        self._stages.add(stage)
        while len(self._buckets) * max(1, len(self._stages)) > self.max_points:
            self._coarsen()

    def _coarsen(self) -> None:
        merged: dict[int, dict[str, tuple[int, int]]] = {}
        for k, stages in self._buckets.items():
            into = merged.setdefault(k // 2, {})
            for stage, (busy, queue) in stages.items():
                old = into.get(stage, (0, 0))
                into[stage] = (max(old[0], busy), max(old[1], queue))
        self._buckets = merged
        self.bucket_s *= 2

    def points(self) -> list[dict[str, Any]]:
        return [{"t": round(k * self.bucket_s, 4), "stage": stage, "busy": busy, "queue": queue}
                for k in sorted(self._buckets) for stage, (busy, queue) in sorted(self._buckets[k].items())]


def held_back(points: list[dict[str, Any]], workers: dict[str, int], wall: float) -> dict[str, float]:
    """Per stage, the share of the run during which it held the others back, read off the
    timeline: work waited in its queue, every worker of it was busy, or it was the only stage
    still working (the others had nothing left to do but wait for it)."""
    if wall <= 0 or not points:
        return dict.fromkeys(workers, 0.0)
    at: dict[float, list[dict[str, Any]]] = {}
    for p in points:
        at.setdefault(float(p["t"]), []).append(p)
    times = sorted(at)
    state: dict[str, tuple[int, int]] = {}
    held = dict.fromkeys(workers, 0.0)
    for t, until in zip(times, [*times[1:], max(wall, times[-1])], strict=True):
        for p in at[t]:
            state[p["stage"]] = (int(p["busy"]), int(p["queue"]))
        span = max(0.0, until - t)
        working = [name for name, (busy, _) in state.items() if busy > 0]
        for name, (busy, queue) in state.items():
            if name in held and (queue > 0 or busy >= max(1, workers[name]) or working == [name]):
                held[name] += span
    return {name: min(1.0, seconds / wall) for name, seconds in held.items()}


@dataclass
class RunMetrics:
    """Observer of one run. Pass :meth:`on_event` to the engine and call :meth:`attach` first."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    view: RunView | None = None
    timeline: Timeline = field(default_factory=Timeline)
    started_at: float = field(default_factory=time.monotonic)
    #: The shared detector's batcher (local engines): batch sizes, waits, throughput.
    detector: DynamicBatcher[Any, Any] | None = None
    #: Several models (a ``models:`` list): their counts, joins and batchers.
    models: ModelsView | None = None
    _video_started: dict[str, float] = field(default_factory=dict)
    _durations: dict[str, Distribution] = field(default_factory=dict)
    #: Videos per registry state, refreshed as videos finish (scrapes never touch the database).
    video_states: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    def __post_init__(self) -> None:
        self.stage_seconds = Histogram(f"{PREFIX}_stage_processing_seconds", "Processing time per item per stage",
                                       ["stage"], buckets=BUCKETS, registry=self.registry)
        self.video_seconds = Histogram(f"{PREFIX}_video_seconds", "End-to-end time per video, first stage to last",
                                       buckets=BUCKETS, registry=self.registry)
        self.batch_size = Histogram(f"{PREFIX}_detector_batch_size", "Frames per detector batch (across videos)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_wait = Histogram(f"{PREFIX}_detector_wait_seconds", "Time a frame waited for its detector batch",
                                    buckets=WAIT_BUCKETS, registry=self.registry)
        self.registry.register(_LiveCollector(self))
        self.run_end = _RunCollector()
        self.registry.register(self.run_end)

    def finish(self, end: RunEnd) -> None:
        """The run is over: its outcome joins what is scraped, pushed and written."""
        self.run_end.end = end
        if end.success:
            self.run_end.last_success = end.at

    def on_batch(self, size: int, waits: list[float], seconds: float) -> None:
        """The detector batcher's report of one batch."""
        self.batch_size.observe(size)
        for w in waits:
            self.batch_wait.observe(w)

    def attach(self, view: RunView) -> None:
        self.view = view
        self.started_at = time.monotonic()
        self.refresh_videos()

    def refresh_videos(self) -> None:
        if self.view is not None:
            self.video_states = self.view.registry.counts_by_state()

    def snapshot(self) -> dict[str, StageSnapshot]:
        return self.view.snapshot() if self.view is not None else {}

    def live(self) -> dict[str, LiveSnapshot]:
        return self.view.live() if self.view is not None else {}

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint; returns the port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self, linger_s: float = 0.0) -> None:
        """Stop serving; with ``linger_s``, only after that long (in a thread that keeps the process
        alive until then, so the summary is printed at once and a scraper still gets the final values)."""
        server, self._server = self._server, None
        if server is None:
            return

        def stop() -> None:
            time.sleep(linger_s)
            server.shutdown()
            server.server_close()

        if linger_s > 0:
            threading.Thread(target=stop, name="metrics-linger").start()
        else:
            stop()

    def on_event(self, event: PipelineEvent) -> None:
        now = time.monotonic()
        with self._lock:
            if event.kind == "started" and event.item_id not in self._video_started:
                self._video_started[event.item_id] = now
            elif event.kind == "item_done" and event.item_id in self._video_started:
                self.video_seconds.observe(now - self._video_started.pop(event.item_id))
        if event.kind == "item_done":
            self.refresh_videos()  # the file pipeline's videos only: the live one reports elsewhere
        if event.kind in ("finished", "failed") and event.stage:
            self.stage_seconds.labels(event.stage).observe(event.seconds)
            with self._lock:
                self._durations.setdefault(event.stage, Distribution()).add(event.seconds)
        if event.stage and event.kind in ("started", "finished", "failed", "queue_dropped"):
            # A queue fills on the upstream stage's events, so every stage is sampled each time.
            t = now - self.started_at
            with self._lock:
                for name, s in self.snapshot().items():
                    self.timeline.add(t, name, s.busy, s.queue_depth)

    def report(self, totals: dict[str, Any], wall: float) -> MetricsFile:
        """``wall``: seconds the stages ran, the denominator of busy fractions and throughput."""
        stages: dict[str, StageFigures] = {}
        for name, s in self.snapshot().items():
            d = self._durations.get(name) or Distribution()
            capacity = s.workers * wall
            stages[name] = StageFigures(
                workers=s.workers, items_in=s.items_in, items_out=s.items_out, failed=s.failed,
                dropped=s.dropped + s.queue_dropped, retries=s.retries, p50_s=round(d.quantile(0.5), 4),
                p95_s=round(d.quantile(0.95), 4), max_s=round(d.max, 4), busy_seconds=round(s.busy_seconds, 3),
                setup_seconds=round(s.setup_seconds, 3),
                busy_fraction=round(s.busy_seconds / capacity, 4) if capacity > 0 else 0.0,
                throughput_per_s=round(s.processed / wall, 4) if wall > 0 else 0.0,
                queue_high_water=s.queue_high_water, queue_size=s.queue_size)
        timeline = self.timeline.points()
        held = held_back(timeline, {name: s.workers for name, s in stages.items()}, wall)
        stages = {name: s.model_copy(update={"held_fraction": round(held.get(name, 0.0), 4)})
                  for name, s in stages.items()}
        return MetricsFile(stages=stages, totals=totals, bottleneck=_bottleneck(stages),
                           detector=detector_report(self.detector, wall) if self.detector is not None else None,
                           models=self._models(wall), timeline=[TimelinePoint.model_validate(p) for p in timeline])

    def _models(self, wall: float) -> ModelsFigures | None:
        if self.models is None:
            return None
        snap = self.models.snapshot()
        for batcher in self.models.batchers:
            snap["models"][batcher.name]["batches"] = detector_report(batcher, wall)
        return ModelsFigures.model_validate(snap)

    def write(self, path: Path, totals: dict[str, Any], wall: float,
              live: dict[str, LiveSnapshot] | None = None, hard_by_class: dict[str, int] | None = None) -> MetricsFile:
        """metrics.json: this run's figures, its live sources' (``live``, keyed by source), the
        boxes marked hard per class (tracks on), and the totals of the runs before it (``history``)."""
        previous: list[dict[str, Any]] = []
        if path.exists():
            try:
                previous = read_metrics(path).history
            except ConfigError:  # a damaged file: its history is lost, this run's figures are not
                previous = []
        entry = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{k: v for k, v in totals.items()
                                                                          if isinstance(v, (int, float))}}
        data = self.report(totals, wall).model_copy(update={
            "live": {source: s.figures() for source, s in live.items()} if live else None,
            "hard_by_class": hard_by_class or None,
            "history": [*previous, entry][-HISTORY:]})
        write_metrics(path, data)
        return data


def _bottleneck(stages: dict[str, StageFigures]) -> Bottleneck | None:
    """The stage that held the others back, as the timeline shows it; busy time breaks ties."""
    if not stages:
        return None
    name = max(stages, key=lambda n: (stages[n].held_fraction, stages[n].busy_fraction))
    frac = stages[name].held_fraction
    return Bottleneck(stage=name, held_fraction=frac, busy_fraction=stages[name].busy_fraction,
                      hint=f"{name} is the bottleneck: it held the run back {frac:.0%} of the time (work waiting "
                           f"for it, every worker busy, or it alone running); {HINTS.get(name, 'give it more workers')}")


def detector_report(batcher: DynamicBatcher[Any, Any], wall: float) -> BatchFigures:
    """Batch fill against the batch size, time frames waited for a batch, frames per second."""
    stats = batcher.stats.snapshot()
    stats["max_wait_s"] = batcher.max_wait_s
    stats["frames_per_s"] = round(stats["requests"] / wall, 3) if wall > 0 else 0.0
    stats["busy_fraction"] = round(stats["busy_seconds"] / wall, 4) if wall > 0 else 0.0
    return BatchFigures.model_validate(stats)
