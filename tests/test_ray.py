"""--engine ray: the same stages on Ray, a local instance and a simulated two-node cluster.

Marked ``ray``: ``pytest -m "not ray"`` skips them when Ray is not wanted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BOTTLE, VIDEOS
from .helpers import dataset_files, manifest, run
from .http_server import serve

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
INPUTS = [str(BOTTLE), str(VIDEOS / "again.mkv"), str(VIDEOS / "book.mkv")]


def _loopback_only(ray) -> None:  # type: ignore[no-untyped-def]
    nodes = ray.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes), nodes


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A simulated two-node Ray cluster on 127.0.0.1 (one Ray start for the module): a head with one
    CPU and a custom ``head`` resource, a worker node with two CPUs and ``cpu_node``."""
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    nodes.add_node(num_cpus=2, resources={"cpu_node": 2})
    try:
        ray.init(address=nodes.address)
        _loopback_only(ray)
        assert len(ray.nodes()) == 2
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_ray_through_shared_storage_gives_the_same_dataset_as_async_mode(cluster: object, bottle_head: Path,
                                                                       tmp_path: Path) -> None:
    """Workers exchange files only through an fsspec URL (here file://, as s3:// would be): the driver's
    output never sees a download, the storage holds the video and is emptied of frames once collected."""
    store = tmp_path / "store"
    with serve({"/clip/bottle.mp4": bottle_head}) as (base, _):
        inputs = [f"{base}/clip/bottle.mp4", *INPUTS[1:]]
        # With tracks on: the filter stage tracks a video once its frames are decided, on any node.
        on_ray = run(inputs, tmp_path / "ray", engine="ray", **{"ray.shared_storage": store.as_uri(),
                                                                "track.enabled": True})
        local = run(inputs, tmp_path / "async", **{"track.enabled": True})
    assert not on_ray.failures and on_ray.videos_done == 3, [f.line() for f in on_ray.failures]
    assert on_ray.export.kept == local.export.kept > 0 and on_ray.export.frames == local.export.frames
    assert dataset_files(tmp_path / "ray" / "dataset") == dataset_files(tmp_path / "async" / "dataset")
    rows = manifest(tmp_path / "ray")
    assert rows == manifest(tmp_path / "async")
    assert any(d.track for r in rows for d in r.detections), "tracks, the same as locally"
    assert (tmp_path / "ray" / "metrics.json").exists()
    assert not (tmp_path / "ray" / "work" / "videos").exists(), "downloads went to the storage, not the driver"
    stored = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.suffix == ".mp4" and "work/videos" in p.as_posix() for p in stored), stored
    assert not any("work/frames" in p.as_posix() for p in stored), "frames are freed once the driver has them"


def _kill_first_extract_worker(stop: threading.Event, killed: list[int]) -> None:
    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
            if "ray::extract" in title and "IDLE" not in title:
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.05)


def _kill_processes(title: str) -> list[int]:
    """SIGKILL every process whose title holds ``title`` (a Ray worker's: ``ray::Class.method``)."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if title in " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or ""):
            os.kill(proc.info["pid"], signal.SIGKILL)
            killed.append(proc.info["pid"])
    return killed


def test_two_node_cluster_places_work_on_both_and_retries_a_killed_worker(cluster: object, person_head: Path,
                                                                         bottle_head: Path, tmp_path: Path) -> None:
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_extract_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        # the person clip is the longest: its extraction is still going when the killer looks
        report = run([str(person_head), str(bottle_head), *INPUTS[1:]], tmp_path / "out", engine="ray",
                     **{"ray.filter_resources": {"head": 1}, "ray.cpu_resources": {"cpu_node": 1}})
    finally:
        stop.set()
    assert killed, "an extract worker was killed mid-task"
    assert not report.failures and report.videos_done == 4, [f.line() for f in report.failures]
    assert report.result is not None
    placed = [dict(o.outputs[0].payload.nodes) for o in report.result.items]
    filter_nodes = {p["filter"] for p in placed}
    extract_nodes = {p["extract"] for p in placed}
    assert len(filter_nodes) == 1 and len(extract_nodes) == 1 and filter_nodes != extract_nodes



def test_a_models_graph_on_ray_gives_the_dataset_of_the_local_engine(cluster: object, tmp_path: Path) -> None:
    """A detector, an OCR after it (a cascade) and a shots model with a cap per shot: the filter
    actor holds the detector and the OCR joined per frame, the extract task finds the shots; the
    dataset and manifest are byte for byte those of the local engine."""
    from scripts.media import make_plates_clip

    clip = make_plates_clip(tmp_path / "plates.mp4")
    config = {"models": [{"name": "vehicles", "classes": ["bus", "person"]},
                         {"name": "plates", "kind": "ocr", "after": "vehicles"},
                         {"name": "cuts", "kind": "shots"}],
              "keep": "bus and text", "filter.static_max_diff": -1, "extract.fps": 2, "extract.per_shot": 2}
    on_ray = run([str(clip)], tmp_path / "ray", engine="ray", **config)
    local = run([str(clip)], tmp_path / "async", **config)
    assert not on_ray.failures and not local.failures, [f.line() for f in on_ray.failures]
    assert on_ray.export.kept == local.export.kept > 0
    assert dataset_files(tmp_path / "ray" / "dataset") == dataset_files(tmp_path / "async" / "dataset")
    rows = manifest(tmp_path / "ray")
    assert rows == manifest(tmp_path / "async")
    assert any(d.text for r in rows for d in r.detections), "the OCR read the plate on Ray"
    assert any(r.extra.get("shot", 0) > 0 for r in rows), "the shots model found the cuts on Ray"


def test_a_watched_folder_on_ray_is_watched_on_the_driver_and_mined_on_the_cluster(cluster: object,
                                                                                  tmp_path: Path) -> None:
    import shutil

    from video_miner.run.compose import mine
    from video_miner.run.request import RunRequest, StopSignal

    from .helpers import done_videos, make_config, wait_for

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(VIDEOS / "book.mkv", inbox / "already-there.mkv")
    out = tmp_path / "out"
    stop = StopSignal()
    request = RunRequest([], make_config(out, **{"watch.settle_s": 0.5}), engine="ray", watch=[inbox], stop=stop)
    reports = []
    thread = threading.Thread(target=lambda: reports.append(mine(request)))
    thread.start()
    try:
        wait_for(lambda: done_videos(out) == 1, "the file already there mined on Ray", alive=thread.is_alive)
        shutil.copy(VIDEOS / "again.mkv", inbox / "new.mkv")
        wait_for(lambda: done_videos(out) == 2, "the new file mined on Ray", alive=thread.is_alive)
    finally:
        stop.set()
        thread.join(120)
    assert reports and not reports[0].failures and reports[0].videos_done == 2


def test_doctor_checks_the_clusters_nodes_resources_and_storage_from_every_node(cluster: object,
                                                                                tmp_path: Path) -> None:
    from video_miner.observe.cluster import check_nodes
    from video_miner.observe.doctor import FAIL, OK

    from .helpers import make_config

    checks = {c.name: c for c in check_nodes(make_config(tmp_path / "out"))}
    assert checks["cluster nodes"].status == OK and checks["cluster nodes"].detail.startswith("2 alive")
    assert checks["filter actor"].status == OK and checks["download/extract tasks"].status == OK
    storage = checks["output folder from every node"]
    assert storage.status == OK and "from 2 nodes" in storage.detail, storage
    assert not list((tmp_path / "out" / ".video-miner-doctor").iterdir()), "the probes are removed"
    # A resource no node has, and storage no node can write: each says what to change.
    unreachable = tmp_path / "file"
    unreachable.write_text("a file where the output folder should be")
    bad = {c.name: c for c in check_nodes(make_config(unreachable / "out", **{"ray.filter_resources": {"tpu": 1}}))}
    assert bad["filter actor"].status == FAIL and "ray.filter_resources" in bad["filter actor"].fix
    assert bad["output folder from every node"].status == FAIL and "0 of" not in bad["output folder from every node"].detail
    assert "mount the output folder" in bad["output folder from every node"].fix


def test_a_live_stream_on_ray_is_read_on_the_driver_and_decided_by_an_actor_on_the_cluster(
        cluster: object, ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera's stream with --engine ray: the reader on the driver, each frame decided by the
    live filter actor placed on the worker node (``ray.filter_resources``), committed on the
    driver; the boxes are those the model gives the same picture here, and the source's figures
    add up as on the local engine. The actor's process is killed mid-stream: Ray restarts it, the
    frame it held is decided again, and none is lost or committed twice."""
    import logging

    import ray
    from PIL import Image

    from video_miner.detect.detector import Detector, detector_spec

    from .helpers import free_port, kept, make_config, wait_for
    from .test_live import LIVE, Mining, decided_frames, live_metrics, stream_stopped, tcp_stream

    caplog.set_level(logging.INFO, logger="video_miner")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    # every sample decided: no static prefilter, and a queue that blocks instead of dropping
    settings = {"ray.filter_resources": {"cpu_node": 1}, "live.queue_policy": "block", "filter.static_max_diff": -1}
    with tcp_stream(ffmpeg, port, 6.0):
        mining = Mining([url], out, engine="ray", **settings)
        wait_for(lambda: decided_frames(out) >= 2, "two frames decided on Ray", alive=mining.alive)
        killed = _kill_processes("ray::LiveFilterActor")
        wait_for(lambda: decided_frames(out) >= 4, "frames decided after the kill", alive=mining.alive)
        wait_for(stream_stopped(caplog, url), "the stream read to its end", alive=mining.alive)
        mining.stop.set()
        report = mining.finish()
    worker = next(n["NodeID"] for n in ray.nodes() if "cpu_node" in n["Resources"])
    assert any(r.getMessage() == f"live frames are decided on Ray node {worker}" for r in caplog.records)
    assert not report.failures, [f.line() for f in report.failures]
    stats = live_metrics(out, url)
    assert stats.frames_decided >= 2 and stats.frames_dropped == 0, stats
    # (a frame the reader handed on as the run stopped is not decided: at most the last one)
    assert stats.frames_filtered + stats.frames_decided in (stats.frames_sampled, stats.frames_sampled - 1), stats
    assert 0 < stats.latency_p50_s <= stats.latency_p95_s < float("inf"), stats
    assert killed, "the live filter actor's process was killed"
    rows = [r for r in manifest(out) if r.source == url]
    chosen = kept(rows)
    assert chosen and len(rows) == stats.frames_decided == len({r.frame for r in rows})
    # the actor's boxes are the model's: the same picture detected here gives the same ones
    detector = Detector(detector_spec(make_config(out, **LIVE)))
    with Image.open(out / "dataset" / chosen[0].image) as im:
        here = detector.detect([im.convert("RGB")])[0]
    assert [(d.label, d.xywhn) for d in here] == [(d.label, d.xywhn) for d in chosen[0].detections]
