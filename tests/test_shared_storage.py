"""Work files through an fsspec URL: a real S3 protocol (moto's server on 127.0.0.1, read by s3fs).

The Ray test runs the whole pipeline through a file:// URL; this one checks that the same
hand-off works against S3: what a worker fetches, what it uploads, what the driver gets back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from async_pipeline import StageMessage
from video_miner.download.remote import open_filesystem
from video_miner.errors import ConfigError
from video_miner.records import VideoItem
from video_miner.run.shared_storage import SharedStorage


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """One S3 server for the module (s3fs caches its filesystem, endpoint included, per process)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as env:
            port = server._server.server_port  # type: ignore[union-attr]
            # botocore (under s3fs) reads these, as it would for MinIO or any S3-compatible store.
            env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            env.setenv("AWS_ACCESS_KEY_ID", "test")
            env.setenv("AWS_SECRET_ACCESS_KEY", "test")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            fs, _ = open_filesystem("s3://miner")
            fs.mkdir("miner")
            yield "s3://miner/run-1"
            fs.clear_instance_cache()
    finally:
        server.stop()


def test_worker_and_driver_exchange_files_over_s3(s3_url: str, tmp_path: Path) -> None:
    output = tmp_path / "out"  # the driver's output folder
    storage = SharedStorage(s3_url, output)
    # The scratch folder is named by URL and output: a run long ago with the same tmp path (pytest
    # numbers them from 0 again once /tmp/pytest-of-* is cleared) may have left one.
    shutil.rmtree(storage.scratch, ignore_errors=True)

    # A download worker wrote a video in its scratch copy of the output folder.
    video = storage.scratch / "work" / "videos" / "v1" / "clip.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"\x00video" * 1000)
    item = VideoItem("v1", "url", "https://example.com/clip.mp4", 0, video_path=str(video))
    published = storage.publish(StageMessage("v1", input_path=video, payload=item), set())
    assert published.input_path == output / "work" / "videos" / "v1" / "clip.mp4"
    assert published.item.video_path == str(published.input_path)
    storage.drop_scratch(published)
    assert not video.exists()

    # An extract worker elsewhere fetches it, writes frames; only the new files go up.
    local, fetched = storage.localize(published)
    assert local.input_path == video and video.read_bytes() == b"\x00video" * 1000 and fetched == {video}
    frames = storage.scratch / "work" / "frames" / "v1"
    frames.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (frames / name).write_bytes(name.encode() * 100)
    out = storage.publish(published.evolve(input_path=frames), fetched)
    storage.drop_scratch(out)

    # The filter worker fetches the folder, adds its result.
    local, fetched = storage.localize(out)
    assert sorted(p.name for p in fetched) == ["a.jpg", "b.jpg"]
    (local.input_path / "filter.json").write_text(json.dumps([{"file": "b.jpg", "decision": "candidate"}]))
    out = storage.publish(local, fetched)
    fs = storage.fs
    assert sorted(Path(p).name for p in fs.ls(storage.remote("work/frames/v1"))) == ["a.jpg", "b.jpg", "filter.json"]

    # The driver takes the result and the frames it keeps, and frees the storage.
    assert out.input_path is not None
    storage.fetch_to_driver(out.input_path, lambda d: [r["file"] for r in json.loads((d / "filter.json").read_text())],
                            "filter.json")
    assert sorted(p.name for p in out.input_path.iterdir()) == ["b.jpg", "filter.json"]
    assert (out.input_path / "b.jpg").read_bytes() == b"b.jpg" * 100
    assert not fs.exists(storage.remote("work/frames/v1"))
    storage.remove(published.input_path)  # type: ignore[arg-type]
    assert not fs.exists(storage.remote("work/videos/v1/clip.mp4"))
    shutil.rmtree(storage.scratch)


def test_unknown_or_uninstalled_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs"):
        open_filesystem("nosuchfs://bucket/x")


def test_object_store_inputs_a_prefix_and_a_missing_object(s3_url: str, tmp_path: Path) -> None:
    """Inputs given as s3:// URLs: a prefix expands to every video under it (sorted), each is copied
    into the output folder and mined; a missing object is one not_found failure."""
    from video_miner.store.registry import Registry

    from .conftest import BOTTLE, CARS
    from .helpers import run

    fs, _ = open_filesystem(s3_url)
    fs.put_file(str(BOTTLE), "miner/in/b-bottle.mp4")
    fs.put_file(str(CARS), "miner/in/a-cars.mp4")
    fs.put_file(str(BOTTLE), "miner/in/notes.txt")  # not a video extension: skipped
    report = run(["s3://miner/in/", "s3://miner/missing.mp4"], tmp_path / "out", **{"filter.classes": ["bottle"]})
    assert report.videos_done == 2 and report.export.kept > 0
    assert [(f.kind, f.input) for f in report.failures] == [("not_found", "s3://miner/missing.mp4")]
    reg = Registry(tmp_path / "out" / "registry.sqlite")
    rows = {r.input: r for r in reg.videos()}
    reg.close()
    assert rows["s3://miner/in/a-cars.mp4"].order < rows["s3://miner/in/b-bottle.mp4"].order
    path = rows["s3://miner/in/b-bottle.mp4"].path
    assert path is not None
    copied = Path(path)
    assert copied.is_relative_to(tmp_path / "out" / "work" / "videos") and copied.read_bytes() == BOTTLE.read_bytes()
