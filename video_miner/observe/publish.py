"""A batch run's figures where Prometheus keeps them: pushed to a Pushgateway and/or written for
node_exporter's textfile collector, while the run goes (every ``metrics.push_every_s``) and once at
its end, whatever its outcome. A scrape endpoint alone loses them: a run usually ends before the
next scrape.

Pushes use the Pushgateway's POST (``pushadd``): metrics this push does not carry stay as they were,
which is how ``video_miner_last_success_timestamp_seconds`` survives a failed run. The grouping key
is ``job="video-miner"`` plus the dataset's name and the output folder, so two datasets never
overwrite each other. A push or a write that fails is one warning line, never the run's failure.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from prometheus_client import CollectorRegistry, pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from ..config import MinerConfig
from ..redact import DEFAULT
from .metrics import PREFIX, RunMetrics
from .progress import every

log = logging.getLogger(__name__)
JOB = "video-miner"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


class Publisher:
    def __init__(self, config: MinerConfig, metrics: RunMetrics) -> None:
        self.gateway = config.metrics.pushgateway
        self.textfile = config.metrics.textfile
        self.every_s = config.metrics.push_every_s
        self.metrics = metrics
        self.grouping_key = {"dataset": config.name, "output": str(config.output_dir.resolve())}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        if self.textfile is not None and metrics.run_end.last_success is None:
            # node_exporter reads only this file: a failed run rewrites it, and must keep the time of
            # the last success it holds.
            metrics.run_end.last_success = _last_success(self.textfile)

    @property
    def wanted(self) -> bool:
        return self.gateway is not None or self.textfile is not None

    def publish(self) -> None:
        """Push and/or write what the metrics say now (one at a time)."""
        with self._lock:
            registry: CollectorRegistry = self.metrics.registry
            if self.gateway is not None:
                try:
                    pushadd_to_gateway(self.gateway, JOB, registry, grouping_key=self.grouping_key, timeout=10)
                except OSError as exc:
                    self._warn("push", f"could not push metrics to {DEFAULT.url(self.gateway)}: {exc}")
            if self.textfile is not None:
                try:
                    self.textfile.parent.mkdir(parents=True, exist_ok=True)
                    write_to_textfile(str(self.textfile), registry)
                except OSError as exc:
                    self._warn("textfile", f"could not write metrics to {self.textfile}: {exc}")

    def _warn(self, what: str, message: str) -> None:
        """Once per kind of failure: a gateway that is down says so once, not every minute."""
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s (the run goes on)", message)

    def periodically(self) -> AbstractContextManager[None]:
        """Publish every ``push_every_s`` while the block runs."""
        return every(self.every_s, self.publish) if self.wanted else nullcontext()


def _last_success(textfile: Path) -> float | None:
    try:
        text = textfile.read_text()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:  # not the exposition format: rewritten whole
        return None
    return None
