"""The blur judge's table: frames of the shared videos, copied the way footage reaches users (plain
downscales to 640x360, 426x240, 320x240 and 176x144, each also re-encoded at 0.1 bits per pixel, and a
landscape frame reposted as 9:16 over a blurred copy of itself), then motion-blurred (a smear of 3%
of the width) and defocused (a blur of 1% of the width). Sharp copies should pass at every size,
blurred ones not. Prints the table and writes it to docs/bench-results.json (``blur``).

    python scripts/bench_blur.py [--frames 8] [--threshold 0.45]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from video_miner.media.quality import BLUR_SIDE, at_most, blur_effect, content_box  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
NAMES = ["one-by-one-person-detection.mp4", "bottle-detection.mp4", "car-detection.mp4", "again.mkv", "book.mkv"]
SIZES: list[tuple[int, int] | None] = [None, (640, 360), (426, 240), (320, 240), (176, 144)]


def frames(path: Path, n: int) -> list[Image.Image]:
    """``n`` frames spread over the video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 300
        step = max(1, total // n)
        out = [f.to_image() for k, f in enumerate(container.decode(stream)) if k % step == 0]
    return out[:n]


def low_bitrate(picture: Image.Image) -> Image.Image:
    """A frame through H.264 at 0.1 bits per pixel, the last of a 10-frame GOP (a CCTV export, a
    re-upload; UCF101 and QCIF clips run at about 0.17)."""
    w, h = picture.width // 2 * 2, picture.height // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = int(0.1 * w * h * 10)
        for k in range(10):
            frame = av.VideoFrame.from_image(picture.resize((w, h)))
            frame.pts, frame.time_base = k, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as back:
        return [f.to_image() for f in back.decode(video=0)][-1]


def motion(picture: Image.Image) -> Image.Image:
    a = np.asarray(picture, np.float32)
    length = max(5, int(picture.width * 0.03))
    kernel = np.ones(length) / length
    smeared = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, a)
    return Image.fromarray(smeared.clip(0, 255).astype(np.uint8))


def defocus(picture: Image.Image) -> Image.Image:
    return picture.filter(ImageFilter.GaussianBlur(max(1.5, picture.width * 0.01)))


def repost(picture: Image.Image) -> Image.Image:
    """A landscape frame in the middle of a 9:16 canvas filled with a blurred, enlarged copy of it."""
    w, h = picture.size
    tall = int(w * 16 / 9)
    background = picture.resize((int(tall * w / h), tall)).filter(ImageFilter.GaussianBlur(20)).crop((0, 0, w, tall))
    background.paste(picture, (0, (tall - h) // 2))
    return background


def judge(picture: Image.Image) -> float:
    """As the prefilter judges a frame: inside black bars, at most BLUR_SIDE, never upscaled."""
    gray = picture.convert("L")
    box = content_box(np.asarray(gray))
    return blur_effect(at_most(gray.crop(box), BLUR_SIDE))


def table(per_video: int, threshold: float) -> dict[str, object]:
    pictures = [p for name in NAMES for p in frames(VIDEOS / name, per_video)]
    kinds: dict[str, Callable[[Image.Image], Image.Image]] = {
        "sharp": lambda p: p, "sharp, low bitrate": low_bitrate, "motion-blurred": motion, "defocused": defocus}
    rows = []
    for size in SIZES:
        row: dict[str, object] = {"size": "original" if size is None else f"{size[0]}x{size[1]}"}
        for kind, make in kinds.items():
            values = np.array([judge(make(p.resize(size, Image.Resampling.LANCZOS) if size else p)) for p in pictures])
            passed = float((values <= threshold).mean())
            row[kind] = {"min": round(float(values.min()), 3), "max": round(float(values.max()), 3),
                         "passed": round(passed, 3)}
        rows.append(row)
    reposts = np.array([judge(repost(p)) for p in pictures])
    started = time.perf_counter()
    for p in pictures[:20]:
        judge(p)
    ms = (time.perf_counter() - started) / min(20, len(pictures)) * 1000
    return {"threshold": threshold, "frames": len(pictures), "sizes": rows,
            "repost_9_16": {"min": round(float(reposts.min()), 3), "max": round(float(reposts.max()), 3),
                            "passed": round(float((reposts <= threshold).mean()), 3)},
            "ms_per_frame": round(ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames per shared video")
    parser.add_argument("--threshold", type=float, default=None, help="filter.max_blur (default: the config's)")
    args = parser.parse_args()
    from video_miner.config import FilterConfig

    threshold = args.threshold if args.threshold is not None else FilterConfig().max_blur
    result = table(args.frames, threshold)
    print(f"blur judge, threshold {threshold}, {result['frames']} frames of the shared videos, "
          f"{result['ms_per_frame']} ms a frame")
    print(f"{'size':>10} | {'sharp':>20} | {'sharp, low bitrate':>20} | {'motion-blurred':>20} | {'defocused':>20}")
    for row in result["sizes"]:  # type: ignore[attr-defined]
        cells = [f"{row[k]['min']:.2f}-{row[k]['max']:.2f} {100 * row[k]['passed']:3.0f}% pass"
                 for k in ("sharp", "sharp, low bitrate", "motion-blurred", "defocused")]
        print(f"{row['size']:>10} | " + " | ".join(f"{c:>20}" for c in cells))
    r = result["repost_9_16"]
    print(f"9:16 repost over a blurred copy: {r['min']:.2f}-{r['max']:.2f}, {100 * r['passed']:.0f}% pass")  # type: ignore[index]
    results = ROOT / "docs" / "bench-results.json"
    data = json.loads(results.read_text()) if results.exists() else {}
    data["blur"] = {**result, "date": time.strftime("%Y-%m-%d")}
    results.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
