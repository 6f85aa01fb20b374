"""Video helpers the benchmark and the tests share."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path


def reencode(src: Path, dst: Path, scale: float, seconds: float | None = None) -> None:
    """A copy at another resolution (optionally only the first ``seconds``): its frames are
    near-duplicates of the original's, never byte-identical."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = max(1, round(float(vin.average_rate or 25)))
        vout = out.add_stream("libx264", rate=rate)
        vout.width = int(vin.codec_context.width * scale) // 2 * 2
        vout.height = int(vin.codec_context.height * scale) // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.options = {"preset": "veryfast", "crf": "23"}
        for i, frame in enumerate(inp.decode(vin)):
            if seconds is not None and i >= seconds * rate:
                break
            frame = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            for packet in vout.encode(frame):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
