"""Batch runs in a real Prometheus: Debian's prometheus and prometheus-pushgateway started here on
127.0.0.1, a short run pushing its figures, queried back through Prometheus' HTTP API; the textfile
for node_exporter checked with promtool; the endpoint lingering for a scraper; series that stay
bounded; the alerting rules checked and unit-tested with promtool."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from video_miner.observe.metrics import RunMetrics
from video_miner.run.compose import mine
from video_miner.run.request import RunRequest

from .conftest import MODEL, ROOT, VIDEOS
from .helpers import cli_here, make_config, run

PROMETHEUS = shutil.which("prometheus")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
PROMTOOL = shutil.which("promtool")
RULES = ROOT / "dashboards" / "rules.yml"
AGAIN, BOOK = VIDEOS / "again.mkv", VIDEOS / "book.mkv"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool: .ci/run installs Debian's prometheus")
needs_servers = pytest.mark.skipif(PROMETHEUS is None or PUSHGATEWAY is None,
                                   reason="no prometheus/prometheus-pushgateway: .ci/run installs Debian's packages")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def _process(args: list[str], ready: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(ready)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(Pushgateway URL, Prometheus URL): Prometheus scrapes the gateway every second."""
    assert PROMETHEUS is not None and PUSHGATEWAY is not None
    folder = tmp_path_factory.mktemp("prometheus")
    gateway_port, prometheus_port = _free_port(), _free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    config = folder / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True,
                            "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]}],
    }))
    with _process([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{gateway_port}"], f"{gateway}/-/ready",
                  folder / "pushgateway.log"), \
         _process([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                   f"--web.listen-address=127.0.0.1:{prometheus_port}"], f"http://127.0.0.1:{prometheus_port}/-/ready",
                  folder / "prometheus.log"):
        yield gateway, f"http://127.0.0.1:{prometheus_port}"


def _query(prometheus: str, expr: str) -> dict[str, float]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.loads(resp.read())
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in data["data"]["result"]}


def _until(prometheus: str, expr: str, wanted: float | None, seconds: float = 60) -> float:
    """The one value of ``expr`` once Prometheus has scraped it as ``wanted`` (any value when
    ``wanted`` is None), or the last seen after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        values = list(_query(prometheus, expr).values())
        if (len(values) == 1 and wanted in (None, values[0])) or time.monotonic() > deadline:
            assert len(values) == 1, (expr, values)
            return values[0]
        time.sleep(0.2)


def _summary(text: str) -> dict[str, int]:
    import re

    line = next(x for x in text.splitlines() if x.startswith("done in"))
    m = re.search(r"videos (\d+)/(\d+) done .* (\d+) failed \| frames \d+: kept (\d+)", line)
    assert m is not None, line
    return {"done": int(m.group(1)), "failed": int(m.group(3)), "kept": int(m.group(4))}


@needs_servers
@pytest.mark.timeout(600)
def test_a_batch_run_reaches_prometheus_through_the_pushgateway(prometheus: tuple[str, str], tmp_path: Path) -> None:
    gateway, server = prometheus
    out = tmp_path / "people"
    where = f'{{job="video-miner",dataset="people",output="{out.resolve()}"}}'
    proc = cli_here("run", str(AGAIN), str(BOOK), "--model", str(MODEL), "-o", str(out), "-q", "--pushgateway",
                    gateway, "-c", str(_named(tmp_path, "people")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = _summary(proc.stdout)
    assert _until(server, f"video_miner_frames_kept_total{where}", first["kept"]) == first["kept"] > 0
    assert _until(server, f"video_miner_last_run_videos_done{where}", 2) == first["done"] == 2
    assert _until(server, f"video_miner_last_run_videos_failed{where}", 0) == 0
    assert _until(server, f"video_miner_last_run_frames_kept{where}", first["kept"]) == first["kept"]
    success = _until(server, f"video_miner_last_success_timestamp_seconds{where}", None)
    assert time.time() - 300 < success <= time.time()
    # A run with a failed input (the same settings, in this process): videos_failed moves, the
    # time of the last success does not.
    report = run([str(AGAIN), str(BOOK), str(tmp_path / "gone.mp4")], out, name="people",
                 **{"metrics.pushgateway": gateway})
    assert len(report.failures) == 1
    assert _until(server, f"video_miner_last_run_videos_failed{where}", 1) == 1
    assert _until(server, f"video_miner_last_success_timestamp_seconds{where}", success) == success
    # Another dataset never overwrites this one's figures.
    cars = tmp_path / "cars"
    assert not run([str(AGAIN)], cars, name="cars", **{"metrics.pushgateway": gateway}).failures
    assert _until(server, f"video_miner_last_run_videos_done{{dataset='cars',output='{cars.resolve()}'}}", 1) == 1
    assert _until(server, f"video_miner_last_run_videos_failed{where}", 1) == 1


def _named(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n")
    return path


def test_a_push_that_fails_is_one_warning_and_never_fails_the_run(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    proc = cli_here("run", str(AGAIN), "--model", str(MODEL), "-o", str(tmp_path / "out"), "-q", "--pushgateway", dead,
                    "-c", str(_config(tmp_path, {"metrics": {"push_every_s": 0.2}})))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [r for r in caplog.records if "could not push metrics" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING", caplog.text


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data))
    return path


@needs_promtool
def test_the_textfile_is_valid_exposition_and_keeps_the_last_success(tmp_path: Path) -> None:
    textfile = tmp_path / "textfile" / "video_miner.prom"
    out = tmp_path / "out"
    proc = cli_here("run", str(AGAIN), "--model", str(MODEL), "-o", str(out), "-q", "--metrics-textfile", str(textfile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=textfile.read_text(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    first = _samples(textfile.read_text())
    # Grouped as pushed series are (rules.yml sums by dataset and output).
    samples = [x for fam in text_string_to_metric_families(textfile.read_text()) for x in fam.samples]
    assert samples and all(x.labels["job"] == "video-miner" and x.labels["dataset"] == "dataset" and
                           x.labels["output"] == str(out.resolve()) for x in samples)
    assert first["video_miner_last_run_frames_kept"] == _summary(proc.stdout)["kept"] > 0
    success = first["video_miner_last_success_timestamp_seconds"]
    report = run([str(AGAIN), str(tmp_path / "gone.mp4")], out, **{"metrics.textfile": str(textfile)})
    assert len(report.failures) == 1
    second = _samples(textfile.read_text())
    assert second["video_miner_last_run_videos_failed"] == 1
    assert second["video_miner_last_success_timestamp_seconds"] == success
    assert not list(textfile.parent.glob("*.tmp*")), "written atomically"


#: The labels that group a dataset's series, the Pushgateway's and the textfile's alike.
GROUPING = {"job", "dataset", "output"}


def _samples(text: str) -> dict[str, float]:
    """The run-level samples (no label but the grouping ones)."""
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if set(s.labels) <= GROUPING}


def test_a_short_run_lingers_so_a_scraper_takes_the_final_values(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "video_miner", "run", str(AGAIN), "--model", str(MODEL), "-o",
                             str(tmp_path / "out"), "-q", "--metrics-port", str(port), "--metrics-linger", "30"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the summary is printed at once: the linger does not hold it back
        lines.append(line)
        if line.startswith("done in"):
            break
    kept = _summary("".join(lines))["kept"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        final = _samples(resp.read().decode())
    proc.terminate()
    proc.wait(30)
    assert final["video_miner_frames_kept_total"] == final["video_miner_last_run_frames_kept"] == kept > 0
    assert final["video_miner_last_run_videos_done"] == 1


@pytest.mark.timeout(600)
def test_series_stay_bounded_however_many_inputs_and_sources(tmp_path: Path) -> None:
    """500 inputs and 20 live sources: no label takes a video's or a frame's name; the series grow
    with the sources (a fixed number each), not with the videos."""

    def series(inputs: list[str], out: Path) -> tuple[set[tuple[str, tuple[tuple[str, str], ...]]], Any]:
        metrics = RunMetrics()
        config = make_config(out, **{"live.reconnect_timeout_s": 0})
        report = mine(RunRequest(inputs, config), metrics=metrics)
        text = generate_latest(metrics.registry).decode()
        return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
                for s in f.samples}, report

    few, _ = series([str(AGAIN), str(tmp_path / "gone.mp4"), f"tcp://127.0.0.1:{_free_port()}"], tmp_path / "few")
    # Twenty distinct ports: the OS may hand a just-closed port out again, and a source listed
    # twice runs once (a flake: 19 sources).
    ports: set[int] = set()
    while len(ports) < 20:
        ports.add(_free_port())
    dead = [f"tcp://127.0.0.1:{port}" for port in sorted(ports)]
    many, report = series([str(AGAIN), *(str(tmp_path / f"gone-{k}.mp4") for k in range(499)), *dead],
                          tmp_path / "many")
    assert report.videos_total == 500
    per_source = [s for s in many if any(k == "source" for k, _ in s[1])]
    assert len({dict(s[1])["source"] for s in per_source}) == 20
    each = len(per_source) // 20
    assert len(per_source) == 20 * each and each <= 13  # a fixed handful per source
    # 498 more videos add nothing; 19 more sources add their handful each.
    assert len(many) == len(few) + 19 * each, sorted(many - few)
    for _, labels in many:
        for key, value in labels:
            assert "gone-" not in value and "again" not in value, (key, value)


@needs_promtool
def test_the_alerting_rules_check_and_pass_their_unit_tests() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.with_name("rules.test.yml"))]):
        proc = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=RULES.parent)
        assert proc.returncode == 0, proc.stdout + proc.stderr
