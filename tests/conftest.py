from __future__ import annotations

import os

# Before anything imports ultralytics: never reach for the network.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

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


@pytest.fixture(scope="session", autouse=True)
def _shared_data() -> None:
    if not MODEL.exists() or not PERSON.exists():
        pytest.fail(f"../shared is missing ({SHARED}); tests need the real model and videos")


@pytest.fixture(scope="session")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 distinct three-second clips (some show people); one frame of each reaches the detector."""
    from scripts.media import make_short_clips

    return make_short_clips(tmp_path_factory.mktemp("clips"), 24, person_share=0.4)
