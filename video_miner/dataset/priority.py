"""Which of near-identical frames is kept: the dedup priority, shared by the export's walk and
the filter's deferral hints, so both rank frames the same way."""

from __future__ import annotations

from ..records import FrameRecord, FrameRow

#: Most preferred first: of near-identical frames a person keeps the best copy: more pixels (the
#: source's, as shown), then less compressed (bits per pixel), then sharper at a common scale; then
#: input order, then time, so the order never depends on timing.
PriorityKey = tuple[int, float, float, int, str, float]
#: A frame a reviewer saw (reviewed, or handed over to a labelling tool) counts its pixels this many
#: times: it stays its duplicates' representative unless a copy has clearly more pixels, so a
#: re-encode never takes the place of a frame a person already worked on.
PINNED_PIXELS = 2


def priority_key(pixels: int, bpp: float, sharpness: float, order: int, video_id: str, timestamp: float) -> PriorityKey:
    return (-pixels, -bpp, -sharpness, order, video_id, timestamp)


def frame_priority(frame: FrameRecord, order: int, video_id: str) -> PriorityKey:
    """A frame's priority as the filter sees it (the export computes the same from the registry)."""
    return priority_key(frame.pixels, frame.bpp, frame.sharpness, order, video_id, frame.t)


def row_priority(row: FrameRow, order: int, pinned: bool = False) -> PriorityKey:
    """``pinned``: a frame a reviewer saw (see ``PINNED_PIXELS``)."""
    pixels = row.pixels * (PINNED_PIXELS if pinned else 1)
    return priority_key(pixels, row.bpp, row.sharpness, order, row.video_id, row.timestamp)
