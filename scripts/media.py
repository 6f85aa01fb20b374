"""Video helpers the benchmark and the tests share."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any


def reencode(src: Path, dst: Path, scale: float, seconds: float | None = None, crf: int = 23,
             picture: Callable[[Any], Any] | None = None) -> Path:
    """A copy at another resolution (optionally only the first ``seconds``; ``crf``: x264's quality,
    lower is finer and more bits): its frames are near-duplicates of the original's, never
    byte-identical. ``picture``: each frame's PIL image changed first (a crop, a mirror)."""
    import av
    from PIL import Image

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = max(1, round(float(vin.average_rate or 25)))
        vout = out.add_stream("libx264", rate=rate)
        vout.width = int(vin.codec_context.width * scale) // 2 * 2
        vout.height = int(vin.codec_context.height * scale) // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.options = {"preset": "veryfast", "crf": str(crf)}
        for i, frame in enumerate(inp.decode(vin)):
            if seconds is not None and i >= seconds * rate:
                break
            if picture is None:
                frame = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
            else:
                changed = picture(frame.to_image()).resize((vout.width, vout.height), Image.Resampling.LANCZOS)
                frame = av.VideoFrame.from_image(changed)
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            for packet in vout.encode(frame):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dst


def reframed(src: Path, dst: Path, crop: float, scale: float, mirror: bool) -> Path:
    """A repost: the centre ``crop`` of each frame (0-1 of each side), optionally mirrored left to
    right, at ``scale`` times the original's size, re-encoded."""
    from PIL import ImageOps

    def change(im: Any) -> Any:
        w, h = im.size
        im = im.crop((round(w * (1 - crop) / 2), round(h * (1 - crop) / 2),
                      round(w * (1 + crop) / 2), round(h * (1 + crop) / 2)))
        return ImageOps.mirror(im) if mirror else im

    return reencode(src, dst, scale, crf=18, picture=change)


def head(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src``'s video track, its packets copied (no re-encoding: the
    frames are the original's, bit for bit)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        start = vin.start_time or 0
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            if packet.pts is not None and (packet.pts - start) * vin.time_base >= seconds:
                break
            packet.stream = vout
            out.mux(packet)
    return dst


def _clip_frame(k: int, size: tuple[int, int], photos: list[Path], person_share: float) -> Any:
    """One still picture, distinct for each ``k``: random shapes (sharp edges, so the blur prefilter
    passes it), and for a ``person_share`` of them a crop of a photo with people pasted in."""
    import random

    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(k)
    w, h = size
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    if photos and rng.random() < person_share:
        with Image.open(photos[k % len(photos)]) as photo:
            photo = photo.convert("RGB")
            scale = rng.uniform(0.55, 0.85)
            pw, ph = int(w * scale), int(h * scale)
            crop_w = min(photo.width, int(photo.height * pw / ph))
            x = rng.randrange(max(1, photo.width - crop_w + 1))
            crop = photo.crop((x, 0, x + crop_w, photo.height)).resize((pw, ph))
        image.paste(crop, (rng.randrange(w - pw + 1), rng.randrange(h - ph + 1)))
    return np.asarray(image)


def make_short_clips(folder: Path, n: int, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (640, 360),
                     person_share: float = 0.25, joined: Path | None = None) -> list[Path]:
    """``n`` distinct clips of ``seconds`` each (one still picture: at 1 fps one frame per clip gets
    past the static-frame prefilter), and optionally the same pictures joined into one video."""
    import av
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    photos = [assets / "bus.jpg", assets / "zidane.jpg"]
    folder.mkdir(parents=True, exist_ok=True)
    frames_per_clip = round(seconds * fps)

    def open_out(path: Path) -> tuple[Any, Any]:
        out = av.open(str(path), "w")
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        return out, stream

    def write(out: Any, stream: Any, frame: Any, count: int) -> None:
        for _ in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)

    def finish(out: Any, stream: Any) -> None:
        for packet in stream.encode():
            out.mux(packet)
        out.close()

    whole = open_out(joined) if joined is not None else None
    clips = []
    for k in range(n):
        frame = _clip_frame(k, size, photos, person_share)
        path = folder / f"clip{k:04d}.mp4"
        clip = open_out(path)
        write(*clip, frame, frames_per_clip)
        finish(*clip)
        if whole is not None:
            write(*whole, frame, frames_per_clip)
        clips.append(path)
    if whole is not None:
        finish(*whole)
    return clips


def gif_bomb(path: Path, width: int = 16000, height: int = 16000, frames: int = 20) -> Path:
    """A tiny animated GIF (under a kilobyte) whose logical screen declares ``width`` x ``height``:
    a decoder that allocates the canvas for each frame needs gigabytes."""
    from PIL import Image

    pictures = [Image.new("P", (1, 1), k % 2) for k in range(frames)]
    for picture in pictures:
        picture.putpalette([0, 0, 0, 255, 255, 255])
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0, optimize=False)
    data = bytearray(path.read_bytes())
    data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")  # the logical screen descriptor
    path.write_bytes(bytes(data))
    return path


def _write_frames(path: Path, frames: Any, fps: int, size: tuple[int, int]) -> None:
    """RGB arrays of ``size`` to an H.264 file at ``fps``."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


#: The plate the plates clip shows on its bus, and the sign it shows where no vehicle is.
PLATE, SIGN = "KA51 MN 2024", "EXIT 12"


def make_plates_clip(path: Path, seconds: float = 2.0, fps: int = 5, plates: tuple[str, ...] = (PLATE,)) -> Path:
    """Scenes of ``seconds`` each, for a detector + OCR cascade: a bus with a number plate (white,
    black text) drawn on it, one scene per plate of ``plates``; people on a pitch (no vehicle, no
    text); shapes with a sign (``SIGN``) and no vehicle. A little noise per frame keeps frames from
    being identical."""
    import random

    import numpy as np
    import ultralytics
    from PIL import Image, ImageDraw, ImageFont

    assets = Path(ultralytics.__file__).parent / "assets"
    size = (640, 480)
    font = ImageFont.load_default(size=30)
    with Image.open(assets / "bus.jpg") as photo:
        bus = photo.convert("RGB").crop((0, 200, 810, 810)).resize(size)
    buses = []
    for plate in plates:
        scene = bus.copy()
        draw = ImageDraw.Draw(scene)
        draw.rectangle((250, 330, 470, 372), fill="white", outline="black")
        draw.text((258, 334), plate, fill="black", font=font)
        buses.append(scene)
    with Image.open(assets / "zidane.jpg") as photo:
        pitch = photo.convert("RGB").resize(size)
    sign = Image.fromarray(_clip_frame(7, size, [], 0.0))
    draw = ImageDraw.Draw(sign)
    draw.rectangle((200, 200, 420, 250), fill="white", outline="black")
    draw.text((230, 207), SIGN, fill="black", font=font)
    rng = random.Random(0)

    def frames() -> Any:
        for scene in (*buses, pitch, sign):
            base = np.asarray(scene, dtype=np.int16)
            for _ in range(round(seconds * fps)):
                noise = np.array([rng.randrange(-3, 4) for _ in range(3)], dtype=np.int16)
                yield np.clip(base + noise, 0, 255).astype(np.uint8)

    _write_frames(path, frames(), fps, size)
    return path


def join_videos(path: Path, parts: list[tuple[Path, float, float]], size: tuple[int, int] = (480, 270), fps: int = 25
                ) -> list[float]:
    """Pieces (video, from second, seconds) one after the other (hard cuts), frame for frame at
    ``fps``; returns the times at which each piece starts."""
    import av
    import numpy as np

    starts: list[float] = []

    def frames() -> Any:
        done = 0
        for src, start, seconds in parts:
            starts.append(done / fps)
            taken = 0
            with av.open(str(src)) as inp:
                for frame in inp.decode(video=0):
                    if frame.time is not None and frame.time < start:
                        continue
                    if taken >= round(seconds * fps):
                        break
                    taken += 1
                    yield np.asarray(frame.to_image().resize(size))
            done += taken

    _write_frames(path, frames(), fps, size)
    return starts


def _frame_at(video: Path, t: float) -> Any:
    """The RGB picture of ``video`` shown at ``t`` seconds."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        container.seek(int(t / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time + 1e-6 >= t:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{video} has no frame at {t} s")


#: Where the person video shows an empty room, and two people (each box as x, y, w, h, 0-1).
EMPTY_ROOM = 1.0
WALKERS = ((37.0, (0.607, 0.451, 0.213, 0.871)), (85.5, (0.702, 0.513, 0.229, 0.812)))


def make_tracks_clip(path: Path, person_video: Path, seconds: float = 6.0, fps: int = 10,
                     misses: tuple[float, ...] = ()) -> dict[float, list[tuple[int, tuple[float, float, float, float]]]]:
    """Two people of the person video pasted on its empty room and moved along known paths: person
    1 walks left to right across the clip, person 2 from the right towards the middle, smaller. At
    each time of ``misses`` (on the frames within half a frame of it) person 1 is not pasted: a
    miss the tracker should notice. Returns the truth: time -> [(person, (x, y, w, h) 0-1)], person 1
    included at the planted misses (it is there; the model is made to miss it)."""
    import numpy as np
    from PIL import Image

    room = Image.fromarray(_frame_at(person_video, EMPTY_ROOM))
    width, height = room.size
    crops = []
    for t, (x, y, w, h) in WALKERS:
        picture = Image.fromarray(_frame_at(person_video, t))
        crops.append(picture.crop((round((x - w / 2) * width), round((y - h / 2) * height),
                                   round((x + w / 2) * width), round((y + h / 2) * height))))
    n = round(seconds * fps)
    truth: dict[float, list[tuple[int, tuple[float, float, float, float]]]] = {}

    def frames() -> Any:
        for k in range(n):
            t = round(k / fps, 6)
            scene = room.copy()
            u = k / max(1, n - 1)
            placed = []
            for person, (crop, scale, x) in enumerate(((crops[0], 0.6, 0.12 + 0.45 * u),
                                                       (crops[1], 0.5, 0.88 - 0.2 * u)), start=1):
                h = scale
                w = h * crop.width / crop.height * height / width
                y = 0.55
                box = (round(x, 6), y, round(w, 6), h)
                placed.append((person, box))
                if person == 1 and any(abs(t - m) < 0.5 / fps for m in misses):
                    continue
                size = (round(w * width), round(h * height))
                scene.paste(crop.resize(size), (round((x - w / 2) * width), round((y - h / 2) * height)))
            truth[t] = placed
            yield np.asarray(scene)

    _write_frames(path, frames(), fps, (width, height))
    return truth


def retimed(src: Path, dst: Path, speed: float, seconds: float, scale: float = 1.0, gain: float = 1.0) -> Path:
    """The first ``seconds`` of ``src`` played at ``speed`` (every frame of the original shown for
    1/speed of its time: a copy sped up or slowed down, as reposts are), optionally scaled and
    brightened by ``gain``; re-encoded, so its frames are near-duplicates, never byte-identical."""
    import av
    import numpy as np

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or 25)
        vout = out.add_stream("libx264", rate=(rate * Fraction(speed).limit_denominator(100)).limit_denominator(1000))
        vout.width = int(vin.codec_context.width * scale) // 2 * 2
        vout.height = int(vin.codec_context.height * scale) // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.options = {"preset": "veryfast", "crf": "23"}
        for i, frame in enumerate(inp.decode(vin)):
            if i >= seconds * rate:
                break
            picture = frame.to_ndarray(format="rgb24", width=vout.width, height=vout.height)
            if gain != 1.0:
                picture = np.clip(picture.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            for packet in vout.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dst
