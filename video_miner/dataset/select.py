"""Which frames make the dataset, and why each of the others does not: a pure function of the
settled records (frames with their boxes and embeddings, each video's input order, the last
export's budget picks) and the settings. It reads nothing and writes nothing, so the export,
``diff``, ``status`` and ``export --dry-run`` all ask it the same question.

Every frame the prefilters passed is walked in dedup priority: it is kept if it shows the classes
and no kept frame is its near-duplicate, by pHash (:mod:`.dedup`), then by content
(:mod:`.semantic`); then at most ``extract.per_shot`` per shot, and with a budget the frames that
cover the rest best (:mod:`.budget`). Each frame not kept is told which kept frame stands for it
(a chain of duplicates followed to its end) or that none does, and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import MinerConfig
from ..records import Decision, Detection, FrameRow
from .budget import BudgetRule, choose
from .dedup import KEPT, NO, NOT_ELIGIBLE, YES, select_distinct
from .previous import disagreements
from .retimed import MIN_COPIED, Frames, copies_in_time, time_lines
from .semantic import Match, Vectors, compare, content_duplicates, sure_texts
from .settle import pool_of
from .views import TrackCover, best_views

log = logging.getLogger(__name__)


class Unsettled(RuntimeError):
    """Deferred frames the choice needs were not detected: :func:`~.settle.settle` runs first, and
    the export detects ``keys`` (frames of copies in time, which the pHash walk cannot foresee)."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(f"{len(keys)} deferred frames the choice needs were not detected")
        self.keys = list(keys)

    @property
    def count(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class Cover:
    """A budget pick standing for a frame the budget left out, and how far they are (1 - cosine)."""

    pick: str
    distance: float


@dataclass
class Budgeted:
    #: Kept frames, in the order the budget picked them.
    picks: list[str]
    #: Frames dedup kept that the budget left out, each with the pick nearest to it.
    left_out: dict[str, Cover]
    #: The largest distance (1 - cosine) from a frame of the pool to its nearest pick.
    radius: float


@dataclass
class Selection:
    #: The pool: every frame the prefilters passed.
    pool: list[FrameRow]
    kept: list[FrameRow]
    #: Frame key -> the frame it was found to duplicate (pHash or content; maybe not kept itself).
    duplicate_of: dict[str, str]
    #: Duplicates found by content (a subset of ``duplicate_of``), keyed and pointing by frame key.
    same_content: dict[str, Match[str]] = field(default_factory=dict)
    budget: Budgeted | None = None
    #: Frames left out because their shot already had ``extract.per_shot`` kept frames.
    over_shot: set[str] = field(default_factory=set)
    #: Frames ``select.per_track`` left out, each with the kept view of its track standing for it.
    per_track: dict[str, TrackCover] = field(default_factory=dict)
    #: Frames where the round before's model disagrees with this one (``select.previous_model``): how.
    disagree: dict[str, list[str]] = field(default_factory=dict)

    def stands_for(self, key: str) -> tuple[str | None, list[str]]:
        """The kept frame that stands for frame ``key`` in the dataset (None: none does), and the
        frames the way there passed, each a frame not kept: a duplicate of a duplicate, a frame the
        budget left out (its nearest pick stands for it), one over its shot's cap (nothing does)."""
        kept = {r.key for r in self.kept}
        left_out = self.budget.left_out if self.budget else {}
        way: list[str] = []
        at: str | None = key
        while at is not None and at not in kept and len(way) <= len(self.pool):
            way.append(at)
            if at in self.per_track:
                at = self.per_track[at].pick
            elif at in self.duplicate_of:
                at = self.duplicate_of[at]
            elif at in left_out:
                at = left_out[at].pick
            else:
                at = None  # over its shot's cap, or not shown: nothing kept stands for it
        return at, way[1:]

    @property
    def left_out(self) -> set[str]:
        """Frames that showed the classes and no kept frame duplicates, left out by a cap."""
        return set(self.budget.left_out if self.budget else ()) | self.over_shot | set(self.per_track)




def select_frames(rows: list[FrameRow], order: dict[str, int], config: MinerConfig,
                  earlier_picks: Sequence[str] = (), pinned: frozenset[str] = frozenset(),
                  previous: Mapping[str, list[Detection]] | None = None, live: frozenset[str] = frozenset()
                  ) -> Selection:
    """The frames to keep of ``rows`` (settled: see :mod:`.settle`); ``order``: each video's input
    order; ``earlier_picks``: the last export's budget picks, kept first; ``pinned``: frames a
    reviewer saw (reviewed or handed over), which stay their duplicates' representative unless a
    copy has clearly more pixels (:data:`~.priority.PINNED_PIXELS`); ``previous``: the round
    before's model's boxes per frame (:mod:`.previous`), where they disagree the frame is hard;
    ``live``: the videos that are live segments (:func:`~.views.best_views`)."""
    # Every frame the prefilters passed takes part: a near-duplicate of a kept frame is reported as
    # its duplicate whether or not the detector saw it, so the choice never depends on which
    # detections were skipped.
    pool, priority, eligible, hashes = pool_of(rows, order, pinned)
    per_track = _per_track(pool, eligible, config, live)

    def unsettled(nodes: list[int]) -> list[bool]:
        raise Unsettled([pool[i].key for i in nodes])

    dup_of = select_distinct(hashes, priority, config.phash_radius, eligible, unsettled)
    walk = [i for i in priority.tolist() if dup_of[i] == KEPT]
    by_content = config.dedup.enabled and config.dedup.semantic and bool(walk)
    # read only when a pass compares them (their warnings too)
    vectors = _vectors([pool[i] for i in walk] if by_content or config.select.budget is not None else [])
    local = list(range(len(walk)))  # the frames still in the running, as places in ``walk``
    same_content: dict[str, Match[str]] = {}
    if by_content:
        same_content, local = _by_content(pool, walk, vectors, dup_of, config)
    over_shot, local = _capped_by_shot(pool, walk, local, config.extract.per_shot)
    disagree = _disagree(pool, eligible, previous or {}, set(config.filter.classes))
    budgeted = _budget(config, [pool[walk[place]] for place in local], vectors, local, earlier_picks, set(disagree))
    left_out = set(budgeted.left_out if budgeted else ()) | over_shot
    kept = [pool[i] for i in np.flatnonzero(dup_of == KEPT).tolist() if pool[i].key not in left_out]
    duplicate_of = {pool[i].key: pool[d].key for i, d in enumerate(dup_of.tolist())
                    if d >= 0 and pool[i].key not in per_track}
    return Selection(pool, kept, duplicate_of, same_content, budgeted, over_shot, per_track, disagree)


def _disagree(pool: list[FrameRow], eligible: np.ndarray, previous: Mapping[str, list[Detection]],
              classes: set[str]) -> dict[str, list[str]]:
    """Frames showing the classes where the previous model's boxes tell another story (its classes
    only: another model's boxes, an OCR's, are nothing it could have found)."""
    out = {}
    for i in np.flatnonzero(eligible == YES).tolist():
        row = pool[i]
        if row.key in previous:
            how = disagreements([d for d in row.detections if d.label in classes], previous[row.key])
            if how:
                out[row.key] = how
    return out


def _per_track(pool: list[FrameRow], eligible: np.ndarray, config: MinerConfig, live: frozenset[str]
               ) -> dict[str, TrackCover]:
    """With ``select.per_track``: the frames it leaves out (no longer eligible), each with its
    track's kept view. Before dedup: which frame stands for a track is its best view, not the
    priority of pixels."""
    if config.select.per_track is None:
        return {}
    per_track = best_views(pool, (eligible == YES).tolist(), config.select.per_track, live)
    eligible[[i for i, r in enumerate(pool) if r.key in per_track]] = NO
    return per_track


def _by_content(pool: list[FrameRow], walk: list[int], vectors: Vectors, dup_of: np.ndarray, config: MinerConfig
                ) -> tuple[dict[str, Match[str]], list[int]]:
    """The content pass over the frames pHash kept (``walk``, in priority): the duplicates it finds,
    marked in ``dup_of`` and keyed by frame, and the places in ``walk`` still kept."""
    labels = [[d.label for d in pool[i].detections] for i in walk]
    # Text read counts: the same bus with another plate is other content.
    read = [sure_texts([(d.text, d.conf) for d in pool[i].detections if d.text is not None]) for i in walk]
    texts = read if any(read) else None
    d = config.dedup
    found = content_duplicates(vectors, labels, list(range(len(walk))), d.picture_similarity, d.object_similarity,
                               d.chain_similarity, texts)
    for place, match in found.items():
        dup_of[walk[place]] = walk[match.of]
    if d.in_time:
        found |= _in_time(pool, walk, vectors, labels, texts, dup_of, found, config)
    same_content = {pool[walk[place]].key: Match(pool[walk[m.of]].key, m.picture, m.objects,
                                                 None if m.via is None else pool[walk[m.via]].key, m.speed)
                    for place, m in found.items()}
    return same_content, [place for place in range(len(walk)) if place not in found]


def _in_time(pool: list[FrameRow], walk: list[int], vectors: Vectors, labels: list[list[str]],
             texts: list[list[str]] | None, dup_of: np.ndarray, found: dict[int, Match[int]], config: MinerConfig
             ) -> dict[int, Match[int]]:
    """Frames of copies played faster or slower (:mod:`.retimed`), marked in ``dup_of``: walk places
    to their matches."""
    d = config.dedup
    still = [place for place in range(len(walk)) if place not in found]
    copied, rows = _copies(pool, dup_of, {pool[walk[place]].video_id for place in still})
    if not rows:
        return {}
    interval = _intervals(pool)
    every, _ = Vectors.decode([r.embedding for r in rows], [len(r.detections) for r in rows])
    lines = time_lines(Frames([r.video_id for r in rows], np.array([r.timestamp for r in rows])), every, copied,
                       interval)
    if not lines:
        return {}
    walked = Frames([pool[i].video_id for i in walk], np.array([pool[i].timestamp for i in walk], dtype=np.float64))

    def same(a: int, b: int) -> Match[int] | None:
        return compare(vectors, labels, texts, a, b, d.picture_similarity, d.time_similarity)

    more = copies_in_time(walked, lines, still, found, interval, same)
    for place, match in more.items():
        dup_of[walk[place]] = walk[match.of]
    return more


def _copies(pool: list[FrameRow], dup_of: np.ndarray, keeping: set[str]
            ) -> tuple[dict[tuple[str, str], float], list[FrameRow]]:
    """The pairs of videos a time line may join (the first mostly duplicates of the second, and
    still keeping frames: only those have anything left to find), and the frames to fit it over:
    every frame of theirs that shows the classes. The filter skipped the detector for some of them
    (which ones depends on a run's timing): those are :class:`Unsettled`, detected first, so the
    lines, and the dataset, never depend on what was skipped."""
    copied = {pair: share for pair, share in _copied(pool, dup_of).items()
              if share >= MIN_COPIED and pair[0] in keeping}
    involved = {v for pair in copied for v in pair}
    deferred = [r.key for r in pool if r.video_id in involved and r.decision == Decision.DEFERRED]
    if deferred:
        raise Unsettled(deferred)
    return copied, [r for r in pool if r.video_id in involved and r.decision == Decision.CANDIDATE and r.embedding]


def _intervals(pool: list[FrameRow]) -> dict[str, float]:
    """Each video's sampling interval (the median step between its frames' times), in seconds."""
    times: dict[str, list[float]] = {}
    for row in pool:
        times.setdefault(row.video_id, []).append(row.timestamp)
    steps = {v: np.diff(np.unique(np.asarray(t))) for v, t in times.items()}
    return {v: float(np.median(s)) for v, s in steps.items() if len(s)}


def _copied(pool: list[FrameRow], dup_of: np.ndarray) -> dict[tuple[str, str], float]:
    """(video, other) -> the share of the video's frames found duplicates of frames the other video
    keeps (a chain of duplicates followed to its kept end)."""
    frames: Counter[str] = Counter(r.video_id for r, d in zip(pool, dup_of.tolist(), strict=True) if d != NOT_ELIGIBLE)
    into: Counter[tuple[str, str]] = Counter()
    for i, d in enumerate(dup_of.tolist()):
        end, steps = d, 0
        while end >= 0 and dup_of[end] >= 0 and steps < len(pool):
            end, steps = int(dup_of[end]), steps + 1
        if end >= 0 and pool[end].video_id != pool[i].video_id:
            into[(pool[i].video_id, pool[end].video_id)] += 1
    return {pair: n / frames[pair[0]] for pair, n in into.items()}


def _capped_by_shot(pool: list[FrameRow], walk: list[int], local: list[int], cap: int | None
                    ) -> tuple[set[str], list[int]]:
    """The frames ``extract.per_shot`` leaves out (keys), and the places in ``walk`` still kept."""
    if cap is None:
        return set(), local
    capped = _per_shot([pool[walk[place]] for place in local], cap)
    return {pool[walk[local[at]]].key for at in capped}, [place for at, place in enumerate(local) if at not in capped]


def _per_shot(walk: list[FrameRow], cap: int) -> set[int]:
    """Positions in ``walk`` (kept frames, most preferred first) past the first ``cap`` of their
    shot; frames of no known shot (live, animated images) are never capped."""
    seen: Counter[tuple[str, int]] = Counter()
    over = set()
    for local, row in enumerate(walk):
        if row.shot is None:
            continue
        seen[(row.video_id, row.shot)] += 1
        if seen[(row.video_id, row.shot)] > cap:
            over.add(local)
    return over


def _vectors(rows: list[FrameRow]) -> Vectors:
    """The rows' embeddings (one that does not fit its row's detections is left out; an unreadable
    one is said, and its frame compared by pHash only: a registry is untrusted input)."""
    vectors, refused = Vectors.decode([r.embedding or None for r in rows], [len(r.detections) for r in rows])
    for i, why in sorted(refused.items()):
        log.warning("%s: its embedding is unreadable (%s): compared by pHash only", rows[i].key, why)
    return vectors


def _budget(config: MinerConfig, kept: list[FrameRow], vectors: Vectors, places: list[int],
            earlier_picks: Sequence[str], disagree: set[str]) -> Budgeted | None:
    """The budget's picks among ``kept`` (in priority order; their vectors at ``places``), each
    frame left out with the pick nearest it; None without a budget. Hard: a box marked along its
    track, or a frame the previous model disagrees on (``disagree``)."""
    s = config.select
    if s.budget is None:
        return None
    index = {r.key: i for i, r in enumerate(kept)}
    rule = BudgetRule(s.budget, dict(s.per_class_min), s.hard_fraction, config.filter.conf, s.hard_margin)
    whole = vectors.take(places).whole
    chosen = choose(whole, [[d.label for d in r.detections] for r in kept],
                    [[d.conf for d in r.detections] for r in kept], rule,
                    [index[k] for k in earlier_picks if k in index],
                    [r.key in disagree or any(d.hard is not None for d in r.detections) for r in kept])
    picks = [kept[i].key for i in chosen.picked]
    out = np.setdiff1d(np.arange(len(kept)), np.asarray(chosen.picked, dtype=np.int64))
    covers: dict[str, Cover] = {}
    if len(out) and chosen.picked:
        similarity = whole[out] @ whole[np.asarray(chosen.picked, dtype=np.int64)].T
        nearest = similarity.argmax(axis=1)
        for row, at, best in zip(out.tolist(), nearest.tolist(), similarity.max(axis=1).tolist(), strict=True):
            covers[kept[row].key] = Cover(picks[at], round(max(0.0, 1.0 - best), 4))
    return Budgeted(picks, covers, round(chosen.radius, 4))


def replaced(rows: list[FrameRow], settled: list[FrameRow]) -> list[FrameRow]:
    """``rows`` with the settled frames' new rows in their places."""
    by_key = {r.key: r for r in settled}
    return [by_key.get(r.key, r) for r in rows] if by_key else rows

