"""Build small demo videos from the photos that ship inside the ultralytics wheel.

Each video pans and zooms slowly over one photo (people on a street, a football pitch), with a few
seconds of a blank wall between photos, so a demo run shows every stage at work: the detector keeps
the people, the blank stretches are filtered out, and near-identical frames are deduplicated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image


def _frames(photo: Image.Image, seconds: float, fps: int, size: tuple[int, int]) -> list[np.ndarray]:
    w, h = size
    frames = []
    n = int(seconds * fps)
    for i in range(n):
        zoom = 1.0 + 0.25 * i / max(1, n - 1)
        cw, ch = int(photo.width / zoom), int(photo.height / zoom)
        x = int((photo.width - cw) * i / max(1, n - 1))
        crop = photo.crop((x, (photo.height - ch) // 2, x + cw, (photo.height - ch) // 2 + ch)).resize((w, h))
        frames.append(np.asarray(crop))
    return frames


def make_video(path: Path, photos: list[Path], fps: int = 10, size: tuple[int, int] = (640, 480)) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        blank = np.full((size[1], size[0], 3), 200, dtype=np.uint8)
        sequence: list[np.ndarray] = []
        for photo in photos:
            sequence += _frames(Image.open(photo).convert("RGB"), 6.0, fps, size)
            sequence += [blank] * (3 * fps)
        for array in sequence:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    import ultralytics

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("demo-videos"))
    args = parser.parse_args()
    assets = Path(ultralytics.__file__).parent / "assets"
    args.out.mkdir(parents=True, exist_ok=True)
    make_video(args.out / "street.mp4", [assets / "bus.jpg"])
    make_video(args.out / "pitch.mp4", [assets / "zidane.jpg"])
    make_video(args.out / "both.mp4", [assets / "zidane.jpg", assets / "bus.jpg"], size=(480, 360))
    print(f"wrote 3 demo videos to {args.out}")


if __name__ == "__main__":
    main()
