from __future__ import annotations

import os

# Before anything imports ultralytics: never reach for the network.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# The test clusters' workers at the tests' priority: at Ray's default nice 15, a busy process
# beside them (a CPU hog, another test run) left them ~3% of a core and their tests timed out.
os.environ.setdefault("RAY_worker_niceness", "0")

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
MODEL = SHARED / "models" / "yolov8n_int8.onnx"
PERSON = VIDEOS / "one-by-one-person-detection.mp4"
BOTTLE = VIDEOS / "bottle-detection.mp4"
CARS = VIDEOS / "car-detection.mp4"
MP4S = [PERSON, BOTTLE, CARS]

#: Modules that run the product end to end (real videos, the model, servers, child processes):
#: ``pytest -m "not slow"`` leaves them out for a quick edit-test loop (a test marked ``fast`` in
#: them stays in it).
SLOW = {"test_mining", "test_faults", "test_resume", "test_gallery", "test_handover", "test_cli_output",
        "test_semantic", "test_prometheus", "test_ray", "test_shared_storage", "test_bad_inputs", "test_metrics",
        "test_live", "test_decode", "test_hostile", "test_models", "test_download", "test_stages", "test_fuzz",
        "test_safe_files", "test_tracks", "test_review"}
#: The files by the time they take (docs/test-times.md), longest first: xdist hands whole files to
#: its workers in collection order (``--no-loadscope-reorder`` in pyproject: its own order is by
#: the number of tests), so the long files go first and the short ones fill in at the end, when a
#: worker would otherwise sit idle (longest first is within 4/3 of the best split). The first two
#: start together: the live tests, which mostly wait on real-time streams (a third of a core), beside
#: the Ray cluster's, which slow down most beside other CPU-bound work (two nodes on two cores).
LONGEST = ("test_live", "test_ray", "test_models", "test_hostile", "test_mining", "test_faults", "test_resume",
           "test_decode", "test_semantic", "test_tracks", "test_prometheus", "test_fuzz", "test_download",
           "test_safe_files", "test_metrics", "test_stages", "test_handover", "test_bad_inputs")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW and not item.get_closest_marker("fast"):
            item.add_marker(pytest.mark.slow)
    rank = {stem: k for k, stem in enumerate(LONGEST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(LONGEST)))  # stable: each file keeps its order


@pytest.fixture(scope="session", autouse=True)
def _shared_data() -> None:
    if not MODEL.exists() or not PERSON.exists():
        pytest.fail(f"../shared is missing ({SHARED}); tests need the real model and videos")


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="the [test] extra installs imageio-ffmpeg")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@pytest.fixture(scope="session")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 distinct three-second clips (some show people); one frame of each reaches the detector."""
    from scripts.media import make_short_clips

    return make_short_clips(tmp_path_factory.mktemp("clips"), 24, person_share=0.4)


@pytest.fixture(scope="session")
def person_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The person video's first 40 s, its packets copied (the same frames as the original's first
    40 s; two people cross the room): where a test needs people, not the whole 139 s."""
    from scripts.media import head

    return head(PERSON, tmp_path_factory.mktemp("person-head") / "person-40s.mp4", 40)


@pytest.fixture(scope="session")
def bottle_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bottle video's first 12 s, its packets copied."""
    from scripts.media import head

    return head(BOTTLE, tmp_path_factory.mktemp("bottle-head") / "bottle-12s.mp4", 12)
