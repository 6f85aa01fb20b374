"""Per-video state in an SQLite database beside the dataset: what resume and status read.

Each state change is committed before the next stage sees the video, so a crash at any moment
leaves every video at its last durable state.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from ..errors import environment_error, registry_damaged
from ..records import (
    Decision,
    Detection,
    FrameRow,
    MediaInfo,
    Review,
    State,
    VideoRow,
    VideoUpdate,
    detections_from_json,
    detections_json,
)
from .files import refuse_links
from .layout import SQLITE_SIDECARS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    video_id TEXT PRIMARY KEY,
    input TEXT NOT NULL,
    normalized TEXT NOT NULL,
    kind TEXT NOT NULL,
    ord INTEGER NOT NULL,
    parent TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    error_message TEXT,
    warning TEXT,
    path TEXT,
    source_json TEXT,
    n_extracted INTEGER NOT NULL DEFAULT 0,
    n_candidates INTEGER NOT NULL DEFAULT 0,
    n_kept INTEGER NOT NULL DEFAULT 0,
    n_duplicates INTEGER NOT NULL DEFAULT 0,
    bytes_downloaded INTEGER NOT NULL DEFAULT 0,
    config_hash TEXT,
    media_json TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    video_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    file TEXT NOT NULL,
    phash INTEGER NOT NULL,
    blur REAL NOT NULL,
    detections TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    pixels INTEGER NOT NULL DEFAULT 0,
    bpp REAL NOT NULL DEFAULT 0,
    sharpness REAL NOT NULL DEFAULT 0,
    sizes_json TEXT,
    embedding BLOB,
    shot INTEGER,
    PRIMARY KEY (video_id, frame_index)
);
CREATE TABLE IF NOT EXISTS reviews (
    frame TEXT NOT NULL,
    revision INTEGER NOT NULL,
    review_json TEXT NOT NULL,
    PRIMARY KEY (frame, revision)
);
CREATE TABLE IF NOT EXISTS previous_boxes (
    model TEXT NOT NULL,
    frame TEXT NOT NULL,
    boxes_json TEXT NOT NULL,
    PRIMARY KEY (model, frame)
);
"""
#: Columns added since the first schema: (table, column, declaration). Added to older registries.
MIGRATIONS = (
    ("videos", "media_json", "TEXT"),
    ("frames", "sizes_json", "TEXT"),
    ("frames", "pixels", "INTEGER NOT NULL DEFAULT 0"),
    ("frames", "bpp", "REAL NOT NULL DEFAULT 0"),
    ("frames", "sharpness", "REAL NOT NULL DEFAULT 0"),
    ("frames", "embedding", "BLOB"),
    ("frames", "shot", "INTEGER"),
)
FRAME_COLUMNS = ("video_id", "frame_index", "timestamp", "file", "phash", "blur", "detections", "decision", "reason",
                 "pixels", "bpp", "sharpness", "sizes_json", "embedding", "shot")


@dataclass(frozen=True)
class NewRow:
    """A video to register."""

    video_id: str
    input: str
    normalized: str
    kind: str
    order: int
    parent: str | None = None
    config_hash: str | None = None


def _to_signed(h: int) -> int:
    """SQLite integers are signed 64-bit; pHashes are unsigned."""
    return h - (1 << 64) if h >= 1 << 63 else h


def _to_unsigned(h: int) -> int:
    return h + (1 << 64) if h < 0 else h


def _frame_values(f: FrameRow) -> tuple[Any, ...]:
    sizes = None if f.decoded_size is None and f.display_size is None else json.dumps([f.decoded_size, f.display_size])
    return (f.video_id, f.frame_index, f.timestamp, f.file, _to_signed(f.phash), _finite(f.blur),
            json.dumps(detections_json(f.detections)), f.decision.value, f.reason, f.pixels, _finite(f.bpp),
            _finite(f.sharpness), sizes, f.embedding, f.shot)


def _finite(value: float) -> float:
    """SQLite stores NaN as NULL (refused in these columns): a measure that is not a number is 0."""
    return value if math.isfinite(value) else 0.0


def _frame_row(r: sqlite3.Row) -> FrameRow:
    decoded, display = json.loads(r["sizes_json"]) if r["sizes_json"] else (None, None)
    return FrameRow(r["video_id"], r["frame_index"], r["timestamp"], r["file"], _to_unsigned(r["phash"]), r["blur"],
                    detections_from_json(json.loads(r["detections"])), Decision(r["decision"]), r["reason"],
                    r["pixels"], r["bpp"], r["sharpness"], decoded, display, r["embedding"], r["shot"])


def _video_row(r: sqlite3.Row) -> VideoRow:
    return VideoRow(
        video_id=r["video_id"], input=r["input"], normalized=r["normalized"], kind=r["kind"], order=r["ord"],
        state=State(r["state"]), parent=r["parent"], attempts=r["attempts"], error_class=r["error_class"],
        error_message=r["error_message"], warning=r["warning"], path=r["path"],
        source_meta=json.loads(r["source_json"]) if r["source_json"] else {},
        media=MediaInfo.from_json(json.loads(r["media_json"]) if r["media_json"] else None),
        n_extracted=r["n_extracted"], n_candidates=r["n_candidates"], n_kept=r["n_kept"],
        n_duplicates=r["n_duplicates"], bytes_downloaded=r["bytes_downloaded"], config_hash=r["config_hash"])


def _update_columns(update: VideoUpdate) -> dict[str, Any]:
    """The columns an update sets (None leaves a column as it is)."""
    columns: dict[str, Any] = {
        "path": update.path,
        "source_json": None if update.source_meta is None else json.dumps(update.source_meta),
        "media_json": None if update.media is None else json.dumps(update.media.as_json()),
        "n_extracted": update.n_extracted, "bytes_downloaded": update.bytes_downloaded,
        "error_class": update.error_class, "error_message": update.error_message,
    }
    columns = {k: v for k, v in columns.items() if v is not None}
    if update.warning is not None:
        columns["warning"] = update.warning or None
    return columns


class Registry:
    """``readonly``: for ``status`` and ``report`` beside a running run (SQLite's WAL lets them read
    while it writes). Opening checks the file with SQLite's own ``quick_check``: a damaged registry
    (a torn write, a bad disk, a partial copy) is reported as :class:`RegistryDamaged`, never
    written to."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        # SQLite follows links: one to another application's database would get our tables.
        refuse_links([path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)])
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # One connection shared by the stage threads, serialized by a lock: SQLite allows one
            # writer at a time anyway, and the writes are tiny next to decoding and inference.
            # A URI: the path quoted, or a folder named "%DATA%" or "a?b" would be read as escapes.
            target = f"file:{pathname2url(str(path.absolute()))}?mode=ro" if readonly else str(path)
            self._db = sqlite3.connect(target, uri=readonly, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._check()
            if not readonly:
                self._prepare()
        except sqlite3.DatabaseError as exc:
            error = environment_error(exc, path)
            if hasattr(self, "_db"):
                self._db.close()
            if error is None:
                raise
            raise error from exc

    def _check(self) -> None:
        result = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        if result != ["ok"]:
            problems = [line.strip() for r in result for line in r.splitlines() if line.strip() and "***" not in line]
            raise registry_damaged(self.path, "; ".join(problems[:2]) or "quick_check failed")

    def _prepare(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            for table, column, declaration in MIGRATIONS:
                have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- reviews ---------------------------------------------------------------------------
    def add_reviews(self, reviews: Sequence[Review]) -> int:
        """Record each review as its frame's next revision, unless it says what the latest already
        says (importing the same file twice changes nothing); the model's own boxes stay in
        ``frames``. Returns how many revisions were added."""
        added = 0
        with self._tx() as db:
            for review in reviews:
                row = db.execute("SELECT revision, review_json FROM reviews WHERE frame=? ORDER BY revision DESC "
                                 "LIMIT 1", (review.frame,)).fetchone()
                if row is not None and Review.from_json(json.loads(row["review_json"])).same_as(review):
                    continue
                revision = 1 if row is None else int(row["revision"]) + 1
                db.execute("INSERT INTO reviews(frame, revision, review_json) VALUES (?, ?, ?)",
                           (review.frame, revision, json.dumps(review.as_json())))
                added += 1
        return added

    def latest_reviews(self) -> dict[str, Review]:
        """Frame key -> its latest review (a damaged row is read past: the model's boxes stand)."""
        with self._lock:
            rows = self._db.execute("SELECT frame, revision, review_json FROM reviews ORDER BY frame, revision").fetchall()
        out: dict[str, Review] = {}
        for r in rows:
            try:
                out[str(r["frame"])] = replace(Review.from_json(json.loads(r["review_json"])), revision=int(r["revision"]))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    # ---- the round before's model -----------------------------------------------------------
    def previous_boxes(self, model: str) -> dict[str, list[Detection]]:
        """Frame key -> the boxes the model ``model`` (its file's digest) found there (a damaged row
        is read past: that frame is detected again)."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT frame, boxes_json FROM previous_boxes WHERE model=?", (model,)).fetchall()
            except sqlite3.OperationalError:  # a read-only registry from before the table existed
                return {}
        out: dict[str, list[Detection]] = {}
        for r in rows:
            try:
                out[str(r["frame"])] = detections_from_json(json.loads(r["boxes_json"]))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def add_previous_boxes(self, model: str, boxes: dict[str, list[Detection]]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO previous_boxes(model, frame, boxes_json) VALUES (?, ?, ?)",
                           [(model, frame, json.dumps(detections_json(found))) for frame, found in boxes.items()])

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- videos ----------------------------------------------------------------------------
    def upsert_video(self, video_id: str, *, input: str, normalized: str, kind: str, order: int,
                     parent: str | None = None, config_hash: str | None = None) -> None:
        self.register([NewRow(video_id, input, normalized, kind, order, parent, config_hash)])

    def register(self, rows: Sequence[NewRow]) -> dict[str, VideoRow]:
        """Add (or update the input, order and kind of) many videos in one transaction; returns
        their rows as they now are (a list of 20,000 inputs registers in well under a second)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                """INSERT INTO videos(video_id, input, normalized, kind, ord, parent, state, config_hash,
                                      created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(video_id) DO UPDATE SET input=excluded.input, ord=excluded.ord,
                                                       normalized=excluded.normalized, kind=excluded.kind""",
                [(r.video_id, r.input, r.normalized, r.kind, r.order, r.parent, State.QUEUED.value, r.config_hash,
                  now, now) for r in rows],
            )
            ids = sorted({r.video_id for r in rows})
            found: dict[str, VideoRow] = {}
            for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
                chunk = ids[start:start + 500]
                for r in db.execute(f"SELECT * FROM videos WHERE video_id IN ({','.join('?' * len(chunk))})", chunk):
                    found[r["video_id"]] = _video_row(r)
        return found

    def fail_many(self, failures: Sequence[tuple[str, str, str]]) -> None:
        """(video id, failure class, message) for each: failed, in one transaction."""
        with self._tx() as db:
            db.executemany("UPDATE videos SET state=?, error_class=?, error_message=?, updated_at=? WHERE video_id=?",
                           [(State.FAILED.value, kind, message, time.time(), vid) for vid, kind, message in failures])

    def video(self, video_id: str) -> VideoRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM videos WHERE video_id=?", (video_id,)).fetchone()
        return None if row is None else _video_row(row)

    def videos(self, states: Sequence[State] | None = None) -> list[VideoRow]:
        query, args = "SELECT * FROM videos", ()
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(s.value for s in states)  # type: ignore[assignment]
        with self._lock:
            return [_video_row(r) for r in self._db.execute(query + " ORDER BY ord, video_id", args)]

    def set_state(self, video_id: str, state: State) -> None:
        self.update(video_id, VideoUpdate(state))

    def update(self, video_id: str, update: VideoUpdate) -> None:
        columns = _update_columns(update)
        sets = "".join(f", {k}=?" for k in columns)
        with self._tx() as db:
            db.execute(f"UPDATE videos SET state=?, updated_at=?{sets} WHERE video_id=?",
                       (update.state.value, time.time(), *columns.values(), video_id))

    def bump_attempts(self, video_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE videos SET attempts=attempts+1 WHERE video_id=?", (video_id,))

    def mark_failed(self, video_id: str, error_class: str, message: str) -> None:
        self.update(video_id, VideoUpdate(State.FAILED, error_class=error_class, error_message=message))

    def reset(self, video_id: str) -> None:
        """Back to queued (retry a failed video from scratch)."""
        with self._tx() as db:
            db.execute("DELETE FROM frames WHERE video_id=?", (video_id,))
            db.execute(
                "UPDATE videos SET state=?, error_class=NULL, error_message=NULL, updated_at=? WHERE video_id=?",
                (State.QUEUED.value, time.time(), video_id),
            )

    # ---- frames ----------------------------------------------------------------------------
    def complete_video(self, video_id: str, frames: Sequence[FrameRow]) -> None:
        """Record a video's frames and mark it done in one transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM frames WHERE video_id=?", (video_id,))
            db.executemany(
                f"INSERT INTO frames ({', '.join(FRAME_COLUMNS)}) VALUES ({', '.join('?' * len(FRAME_COLUMNS))})",
                [_frame_values(f) for f in frames],
            )
            db.execute(
                "UPDATE videos SET state=?, n_candidates=?, error_class=NULL, error_message=NULL, updated_at=? "
                "WHERE video_id=?",
                (State.DONE.value, sum(f.decision == Decision.CANDIDATE for f in frames), time.time(), video_id),
            )

    def add_frames(self, frames: Sequence[FrameRow]) -> None:
        """Commit frames of a live segment as they are decided (the segment stays live)."""
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO frames ({', '.join(FRAME_COLUMNS)}) VALUES ({', '.join('?' * len(FRAME_COLUMNS))})",
                [_frame_values(f) for f in frames],
            )

    def set_media(self, video_id: str, media: MediaInfo) -> None:
        """How a live segment is decoded (known once its first frame is)."""
        with self._tx() as db:
            db.execute("UPDATE videos SET media_json=? WHERE video_id=? AND media_json IS NULL",
                       (json.dumps(media.as_json()), video_id))

    def end_live(self) -> int:
        """Live segments left open by a run that was killed: their committed frames are final."""
        with self._tx() as db:
            return db.execute("UPDATE videos SET state=? WHERE state=? AND parent IS NOT NULL",
                              (State.DONE.value, State.LIVE.value)).rowcount

    def update_frames(self, frames: Sequence[FrameRow]) -> None:
        """Record frames decided again: the export's detections for frames whose detection the
        filter deferred, a live frame's boxes that its track changed (and its picture, kept now)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE frames SET detections=?, decision=?, reason=?, embedding=?, file=? "
                "WHERE video_id=? AND frame_index=?",
                [(json.dumps(detections_json(f.detections)), f.decision.value, f.reason, f.embedding, f.file,
                  f.video_id, f.frame_index) for f in frames],
            )

    def done_frames(self) -> list[FrameRow]:
        with self._lock:
            # A live segment's frames count from the moment they commit.
            rows = self._db.execute(
                "SELECT f.* FROM frames f JOIN videos v USING (video_id) WHERE v.state IN (?, ?) "
                "ORDER BY v.ord, f.video_id, f.frame_index",
                (State.DONE.value, State.LIVE.value),
            ).fetchall()
        return [_frame_row(r) for r in rows]

    def set_dedup_counts(self, counts: dict[str, tuple[int, int]]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE videos SET n_kept=?, n_duplicates=? WHERE video_id=?",
                [(kept, dups, vid) for vid, (kept, dups) in counts.items()],
            )

    def counts_by_state(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM videos GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}
