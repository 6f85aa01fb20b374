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

import base64
import http.client
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, generate_latest, pushadd_to_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ..config import MinerConfig
from ..errors import UnsafePath
from ..redact import DEFAULT
from ..store.files import read_bytes, write_bytes
from .metrics import PREFIX, RunMetrics
from .progress import every

log = logging.getLogger(__name__)
JOB = "video-miner"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


class Publisher:
    def __init__(self, config: MinerConfig, metrics: RunMetrics) -> None:
        self.gateway, auth = _without_credentials(config.metrics.pushgateway)
        self.handler = _push_handler(config.metrics.push_timeout_s, auth)
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
                    pushadd_to_gateway(self.gateway, JOB, registry, grouping_key=self.grouping_key, handler=self.handler)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    self._warn("push", f"could not push metrics to {DEFAULT.url(self.gateway)}: "
                                       f"{type(exc).__name__}: {exc}")
            if self.textfile is not None:
                try:
                    write_bytes(self.textfile, generate_latest(_Grouped(registry, {"job": JOB, **self.grouping_key})),
                                self.textfile.parent)
                except (OSError, UnsafePath) as exc:
                    self._warn("textfile", f"could not write metrics to {self.textfile}: {exc}")

    def _warn(self, what: str, message: str) -> None:
        """Once per kind of failure: a gateway that is down says so once, not every minute."""
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s (the run goes on)", message)

    def periodically(self) -> AbstractContextManager[None]:
        """Publish every ``push_every_s`` while the block runs."""
        return every(self.every_s, self.publish) if self.wanted else nullcontext()


class _Grouped(Collector):
    """The registry's families with the Pushgateway's grouping labels on every sample (job, dataset,
    output), so the textfile's series group like the pushed ones (``rules.yml`` sums by them)."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self.registry, self.labels = registry, labels

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            grouped = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                grouped.add_sample(sample.name, {**sample.labels, **self.labels}, sample.value, sample.timestamp,
                                   sample.exemplar)
            yield grouped


def _without_credentials(url: str | None) -> tuple[str | None, str | None]:
    """The Pushgateway URL without its ``user:password@``, and those as a basic-auth header value."""
    if url is None:
        return None, None
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return urlunsplit(parts._replace(netloc=netloc)), "Basic " + base64.b64encode(pair.encode()).decode()


#: The most of an answer read: a Pushgateway answers a push with a few bytes.
MAX_ANSWER = 64 << 10
Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]


def _push_handler(deadline_s: float, auth: str | None) -> Handler:
    """prometheus_client's push handler with a deadline for the whole exchange (connect, send,
    headers, body): a server that trickles, answers garbage or never stops sending headers costs
    at most ``deadline_s``, then one warning. Its own handler has a timeout per socket operation only."""

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
                ) -> Callable[[], None]:
        def push() -> None:
            sent = dict(headers)
            if auth is not None:
                sent["Authorization"] = auth
            _exchange(url, method, sent, data, deadline_s)

        return push

    return handler


def _exchange(url: str, method: str, headers: dict[str, str], data: bytes, deadline_s: float) -> None:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=deadline_s)
    outcome: list[BaseException | None] = []

    def talk() -> None:
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=headers)
            answer = conn.getresponse()
            body = answer.read(MAX_ANSWER)
            if answer.status >= 400:
                raise OSError(f"HTTP {answer.status} {answer.reason}: {body[:200].decode(errors='replace')}")
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread, raised there
            outcome.append(exc)

    # A daemon: a server that never lets go never holds the run's end.
    worker = threading.Thread(target=talk, name="metrics-push", daemon=True)
    worker.start()
    worker.join(deadline_s)
    late = TimeoutError(f"no complete answer within metrics.push_timeout_s={deadline_s:g}s")
    if worker.is_alive():
        sock = conn.sock
        if sock is not None:  # unblocks the worker's read
            with suppress(OSError):
                sock.shutdown(2)
        conn.close()
        raise late
    conn.close()
    if outcome and outcome[0] is not None:
        # The socket's own timeout is the same deadline, and may strike a moment before the join
        # gives up: either way the answer did not come in time, and the warning says so alike.
        if isinstance(outcome[0], TimeoutError):
            raise late from outcome[0]
        raise outcome[0]


def _last_success(textfile: Path) -> float | None:
    try:
        text = read_bytes(textfile, 64 << 20).decode("utf-8", errors="replace") if textfile.exists() else ""
    except (OSError, UnsafePath):
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:  # not the exposition format: rewritten whole
        return None
    return None
