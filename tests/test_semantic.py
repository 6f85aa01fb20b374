"""Frames chosen for what they show: embeddings from the detection pass, duplicates by content, and
a budget. Real model, real footage: six different people from the person video, and copies of those
frames (mirrored, cropped to 70-90%, panned, letterboxed, re-lit, re-encoded at 360p, logo-stamped) as clips
of their own."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from video_miner.config import MinerConfig
from video_miner.dataset.budget import BudgetRule, choose, radius_of
from video_miner.dataset.retimed import line_through
from video_miner.dataset.select import Unsettled, replaced, select_frames
from video_miner.dataset.semantic import objects_match
from video_miner.detect.detector import Detector, DetectorSpec
from video_miner.detect.embed import feature_outputs
from video_miner.records import Decision, FrameEmbedding
from video_miner.store.registry import Registry

from .conftest import MODEL, PERSON
from .helpers import cli_here, make_config, manifest, run

#: One frame of each of the six people who walk through the person video, one after another.
PEOPLE_AT = (13, 34, 60, 80, 106, 129)


def _frames(path: Path, at: tuple[int, ...]) -> list[Image.Image]:
    got: dict[int, Image.Image] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            for want in at:
                if want not in got and t >= want:
                    got[want] = frame.to_image()
            if len(got) == len(at):
                break
    return [got[t] for t in at]


def _copies(im: Image.Image) -> dict[str, Image.Image]:
    w, h = im.size
    out = {"mirrored": ImageOps.mirror(im)}
    for share in (0.7, 0.8, 0.9):
        cw, ch = int(w * share), int(h * share)
        out[f"crop{int(share * 100)}"] = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    out["pan"] = im.crop((w - int(w * 0.8), 0, w, h))
    boxed = Image.new("RGB", (w, int(w * 0.75)))
    boxed.paste(im, (0, (boxed.height - h) // 2))
    out["letterbox"] = boxed
    out["brighter"] = ImageEnhance.Brightness(im).enhance(1.3)
    out["darker"] = ImageEnhance.Brightness(im).enhance(0.7)
    small = io.BytesIO()
    im.resize((int(w * 360 / h) // 2 * 2, 360)).save(small, "JPEG", quality=35)
    out["360p"] = Image.open(io.BytesIO(small.getvalue())).convert("RGB")
    logo = im.copy()
    ImageDraw.Draw(logo).rectangle((w - 160, 10, w - 10, 60), fill=(255, 255, 255))
    out["logo"] = logo
    return out


def _clip(path: Path, images: list[Image.Image]) -> Path:
    """One image a second, so extract.fps 1 samples each once."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height = (v // 2 * 2 for v in images[0].size)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16"}
        for im in images:
            frame = av.VideoFrame.from_image(im.resize((stream.width, stream.height)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The six people as a clip, and each kind of copy of those frames as a clip of its own."""
    folder = tmp_path_factory.mktemp("people")
    frames = _frames(PERSON, PEOPLE_AT)
    kinds: dict[str, list[Image.Image]] = {}
    for im in frames:
        for kind, copy in _copies(im).items():
            kinds.setdefault(kind, []).append(copy)
    clips = {"original": _clip(folder / "original.mp4", frames)}
    clips |= {kind: _clip(folder / f"{kind}.mp4", images) for kind, images in kinds.items()}
    return clips


def _manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]


def _person(row: dict[str, Any]) -> int:
    return round(row["timestamp"])


SETTINGS: dict[str, Any] = {"extract.mode": "fps", "extract.fps": 1.0, "filter.max_blur": 1.0}


def test_copies_are_duplicates_of_their_person_and_the_six_people_stay_apart(people: dict[str, Path],
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run([str(p) for p in people.values()], out, **SETTINGS)
    assert report.videos_done == len(people)
    rows = _manifest(out)
    by_key = {r["frame"]: r for r in rows}
    candidates = [r for r in rows if r["decision"] in ("kept", "duplicate")]
    kept = [r for r in rows if r["decision"] == "kept"]
    # Every person once: a copy of a frame never survives beside it, and no person hides another.
    assert sorted(_person(r) for r in kept) == list(range(len(PEOPLE_AT))), [(r["frame"]) for r in kept]
    assert len(candidates) >= 0.9 * len(people) * len(PEOPLE_AT)  # the copies reach the detector
    for row in candidates:
        if row["decision"] == "duplicate":
            # It stands for the same person's frame (through a chain of duplicates at most).
            target = by_key[row["duplicate_of"]]
            assert _person(target) == _person(row), (row["frame"], row["duplicate_of"])
    by_content = [r for r in rows if r.get("duplicate_by") == "content"]
    assert by_content, "pHash alone cannot see mirrored or cropped copies"
    for row in by_content:
        through = row.get("through")
        assert row["reason"] == f"same content as {row['duplicate_of']}" + (f" (through {through})" if through else "")
        assert set(row["similarity"]) == {"picture", "objects"}
        # Matched directly, or through another duplicate of the same kept frame and still near it.
        assert row["similarity"]["objects"] >= (0.88 if through else 0.94)
        if through:
            assert by_key[through]["duplicate_of"] == row["duplicate_of"]
    assert any(r.get("through") for r in by_content), "no crop of a crop here: the chain rule is not under test"


def test_phash_alone_keeps_the_mirrored_and_cropped_copies(people: dict[str, Path], tmp_path: Path) -> None:
    """What the semantic pass is for (and the switch that turns it off)."""
    out = tmp_path / "out"
    run([str(people["original"]), str(people["mirrored"]), str(people["crop80"])], out,
        **SETTINGS, **{"dedup.semantic": False})
    kept = [r for r in _manifest(out) if r["decision"] == "kept"]
    assert len(kept) > len(PEOPLE_AT) and not any(r.get("duplicate_by") for r in _manifest(out))


def test_a_larger_budget_keeps_every_frame_chosen_before(people: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = [str(people["original"]), str(people["crop80"])]

    def mine(budget: int) -> tuple[list[str], list[dict[str, Any]]]:
        done = cli_here("run", *inputs, "-o", str(out), "--model", str(MODEL), "--classes", "person", "--fps", "1",
                        "--budget", str(budget), "-q")
        assert done.returncode == 0, done.stdout + done.stderr
        picks = json.loads((out / "dataset" / "selection.json").read_text())["picks"]
        return picks, _manifest(out)

    three, rows = mine(3)
    assert len(three) == 3 and sorted(r["frame"] for r in rows if r["decision"] == "kept") == sorted(three)
    # Its own class: each frame the budget left out names the pick that covers it, and how far.
    left = [r for r in rows if r["reason"] and r["reason"].startswith("left out by select.budget")]
    assert left and all(r["decision"] == "left_out" for r in left)
    assert all(r["covered_by"] in three and r["duplicate_of"] == r["covered_by"] and 0 <= r["distance"] <= 2
               and f"{r['covered_by']} covers it at distance {r['distance']}" in r["reason"] for r in left)
    # A duplicate names the kept frame that stands for it, through a frame the budget left out.
    kept = {r["frame"] for r in rows if r["decision"] == "kept"}
    assert all(r["duplicate_of"] in kept for r in rows if r["decision"] == "duplicate" and r["duplicate_of"])
    five, rows = mine(5)
    assert five[:3] == three and len(five) == 5
    assert {r["frame"] for r in rows if r["decision"] == "kept"} == set(five)


@pytest.fixture(scope="module")
def retimed_copies(person_head: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """The person video's first 40 s (two people cross the room) played at 1.1x (half size, 20%
    brighter), 1.25x and 0.9x."""
    from scripts.media import retimed

    folder = tmp_path_factory.mktemp("retimed")
    made = {1.1: (0.5, 1.2), 1.25: (0.5, 1.0), 0.9: (0.5, 1.0)}
    return {speed: retimed(person_head, folder / f"x{speed}.mp4", speed, 40, scale, gain)
            for speed, (scale, gain) in made.items()}


def test_copies_played_faster_or_slower_are_duplicates_of_the_original(person_head: Path,
                                                                      retimed_copies: dict[float, Path],
                                                                      tmp_path: Path) -> None:
    """Their frames fall between the original's samples: matched by the videos' time lines, >= 95%
    of the frames that show a person are the original's duplicates, each naming the speed; the
    original keeps what it keeps alone; with ``dedup.in_time`` off, some copy frames are kept."""
    out = tmp_path / "out"
    settings = {"filter.max_blur": 1.0}
    run([str(person_head), *map(str, retimed_copies.values())], out, **settings)
    rows = manifest(out)
    original = rows[0].video_id
    copies = [r for r in rows if r.video_id != original and r.decision in ("kept", "duplicate")]
    assert len(copies) >= 30
    recognised = [r for r in copies if r.decision == "duplicate"]
    assert len(recognised) >= 0.95 * len(copies), [r.frame for r in copies if r.decision == "kept"]
    in_time = [r for r in recognised if "speed" in r.extra]
    assert in_time, "the time lines are not what recognised them"
    speeds = {r.video_id: speed for r in rows for speed, path in retimed_copies.items() if r.source == str(path)}
    for row in in_time:
        # the speed said is the copy's own, within what 1 s samples tell apart
        assert abs(row.extra["speed"] / speeds[row.video_id] - 1) < 0.15 and "at the same moment" in (row.reason or "")
        assert row.duplicate_of is not None and row.duplicate_of.startswith(original + "@")
    _lines_never_depend_on_skipped_detections(out, make_config(out, **settings))
    alone = run([str(person_head)], tmp_path / "alone", **settings)
    assert alone.export.kept == sum(r.decision == "kept" for r in rows)
    # An export-only setting: the same folder re-exported without the pass keeps some copy frames.
    run([str(person_head), *map(str, retimed_copies.values())], out, **settings, **{"dedup.in_time": False})
    without = [r for r in manifest(out) if r.video_id != original and r.decision == "kept"]
    assert without and not any("speed" in r.extra for r in manifest(out))


def _lines_never_depend_on_skipped_detections(out: Path, config: MinerConfig) -> None:
    """Which frames the filter skipped depends on a run's timing: the choice refuses to fit a time
    line while a copy's frame is still deferred, naming it (the export detects it first), and with
    it detected chooses as before."""
    registry = Registry(out / "registry.sqlite", readonly=True)
    try:
        rows, order = registry.done_frames(), {v.video_id: v.order for v in registry.videos()}
    finally:
        registry.close()
    chosen = select_frames(rows, order, config)
    walked = {r.key for r in chosen.kept} | set(chosen.same_content)
    # Frames the pHash walk covers whatever they show: skipping them never changes that walk.
    skippable = [r for r in rows if r.decision == Decision.CANDIDATE and r.key not in walked
                 and r.key in chosen.duplicate_of]
    assert skippable
    skipped = {r.key for r in skippable[::2]}
    as_skipped = [replace(r, decision=Decision.DEFERRED, detections=[], embedding=None) if r.key in skipped else r
                  for r in rows]
    with pytest.raises(Unsettled) as refused:
        select_frames(as_skipped, order, config)
    assert set(refused.value.keys) <= skipped and refused.value.keys
    again = select_frames(replaced(as_skipped, [r for r in rows if r.key in refused.value.keys]), order, config)
    assert [r.key for r in again.kept] == [r.key for r in chosen.kept]
    assert again.same_content == chosen.same_content


def test_the_time_line_of_a_copy_is_found_among_look_alikes_of_a_still_scene() -> None:
    """A copy at 1.25x sampled once a second: each of its frames' three nearest moments in the
    original, the true one (to the original's nearest sample) among frames of a still room that
    look alike at any time."""
    rng = np.random.default_rng(1)
    t = np.arange(0.0, 32.0)
    true = np.round(1.25 * t + 0.4)
    nearest = np.stack([true, rng.integers(0, 40, len(t)), rng.integers(0, 40, len(t))], axis=1).astype(float)
    nearest[::3] = nearest[::3, ::-1]  # a third of the frames find their moment only third
    speed, offset, on = line_through(t, nearest, 1.0)
    assert abs(speed - 1.25) < 0.03 and abs(offset - 0.4) < 0.6 and on == len(t)
    # Unrelated moments: no line holds half of them.
    scattered = rng.integers(0, 40, (len(t), 3)).astype(float)
    assert line_through(t, scattered, 1.0)[2] < 0.5 * len(t)


# ---- the parts -------------------------------------------------------------------------------
def test_the_feature_maps_are_found_by_pattern_not_by_name() -> None:
    import onnx

    model = onnx.load(str(MODEL))
    first = feature_outputs(model.graph)
    # The same graph with every tensor renamed: the same maps are found.
    renames: dict[str, str] = {}
    for k, node in enumerate(model.graph.node):
        for i, name in enumerate(node.output):
            renames[name] = f"t{k}_{i}"
            node.output[i] = renames[name]
        node.name = f"n{k}"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    assert feature_outputs(model.graph) == [renames[n] for n in first] and len(first) == 2


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_the_detector_gives_a_vector_per_frame_and_per_box(kind: str, tmp_path: Path) -> None:
    """ONNX through an extra graph output, PyTorch through hooks (a randomly initialised YOLOv8n
    built offline from its yaml: the hooks, not the weights, are under test)."""
    if kind == "onnx":
        spec = DetectorSpec(str(MODEL), ("person",), 0.25, embed=True)
    else:
        from ultralytics import YOLO

        YOLO("yolov8n.yaml").save(str(tmp_path / "random.pt"))
        spec = DetectorSpec(str(tmp_path / "random.pt"), ("0",), 1e-9, embed=True, trust_model=True)
    detector = Detector(spec)
    detector.warm_up()
    frames = _frames(PERSON, PEOPLE_AT[:2])
    found = detector.detect([*frames, ImageOps.mirror(frames[0])])
    embeddings = [FrameEmbedding.from_bytes(d.embedding) for d in found if d.embedding]
    assert len(embeddings) == 3
    for dets, e in zip(found, embeddings, strict=True):
        assert e.whole.shape == (256,) and e.boxes.shape == (len(dets), 384)
        assert np.allclose(np.linalg.norm(e.boxes, axis=1), 1, atol=1e-2)
    if kind == "onnx":  # a mirror shows the same person; the next person is someone else
        mirror, other = embeddings[2], embeddings[1]
        assert objects_match(embeddings[0].boxes, ["person"], mirror.boxes, ["person"]) > \
            objects_match(embeddings[0].boxes, ["person"], other.boxes, ["person"])


def _centre_crop(im: Image.Image, share: float) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * share), int(h * share)
    return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def test_a_crop_of_a_crop_stands_with_the_original_through_the_first_crop() -> None:
    """Real features: a 70% crop is nearer the 80% crop than the original (whose match with it
    falls under 0.94), so it is a duplicate of the original only through the 80% crop; no person
    ever stands for another, and without chains those 70% crops are kept."""
    from video_miner.dataset.semantic import content_duplicates

    detector = Detector(DetectorSpec(str(MODEL), ("person",), 0.4, embed=True))
    images, person = [], []
    for k, im in enumerate(_frames(PERSON, PEOPLE_AT)):
        images += [im, _centre_crop(im, 0.8), _centre_crop(im, 0.7)]
        person += [k] * 3
    found = detector.detect(images)
    embeddings = [FrameEmbedding.from_bytes(d.embedding) for d in found if d.embedding]
    labels = [[d.label for d in dets] for dets in found]
    assert len(embeddings) == len(images) and all(x == ["person"] for x in labels)
    walk = list(range(len(images)))  # each original, then its crops: most pixels first
    chained = content_duplicates(embeddings, labels, walk, 0.75, 0.94, 0.88)
    direct = content_duplicates(embeddings, labels, walk, 0.75, 0.94, 0.94)
    through = {i: m for i, m in chained.items() if m.via is not None}
    assert through, "the 70% crops of the six people all match their original directly: nothing under test"
    for i, m in chained.items():
        assert person[m.of] == person[i] and m.of % 3 == 0, (i, m)  # its own person's original
        if m.via is not None:
            assert m.via == i - 1 and m.objects < 0.94 and m.objects >= 0.88  # the 80% crop led there
            assert i not in direct or direct[i].of != m.of  # too far from the original for a direct match
    own = [i for i, m in direct.items() if person[m.of] == person[i]]
    assert len(chained) == len(images) - len(PEOPLE_AT) > len(own)  # every crop, once they may chain


def test_a_frame_near_a_duplicate_but_far_from_its_kept_frame_is_kept() -> None:
    """Chains never drift: C matches B (a duplicate of A) but is too far from A itself."""
    from video_miner.dataset.semantic import content_duplicates

    def unit(*v: float) -> np.ndarray:
        x = np.array(v, np.float32)
        return x / np.linalg.norm(x)

    whole = unit(1, 0, 0)
    a, b = unit(1, 0, 0), unit(0.97, 0.243, 0)  # cos(a, b) = 0.97
    near_a, far_a = unit(0.9, 0.436, 0), unit(0.8, 0.6, 0)  # to b: 0.98 / 0.92; to a: 0.90 / 0.80
    emb = [FrameEmbedding(whole, x[None, :]) for x in (a, b, near_a, far_a)]
    labels = [["person"]] * 4
    found = content_duplicates(emb, labels, [0, 1, 2, 3], 0.75, 0.92, 0.88)
    assert found[1].of == 0 and found[1].via is None
    assert found[2].of == 0 and found[2].via == 1 and found[2].objects == pytest.approx(0.9, abs=1e-3)
    assert 3 not in found  # it matches b at 0.92 but a at only 0.80


def _one_frame_at_a_time(embeddings: list[FrameEmbedding | None], labels: list[list[str]], walk: list[int],
                         texts: list[list[str]]) -> dict[int, Any]:
    """The content rule written plainly (every pair looked at, no index, no vectors in bulk): what
    :func:`content_duplicates` must find. Thresholds 0.75 / 0.94 / 0.88."""
    from video_miner.dataset.semantic import Match, texts_agree

    def same(a: int, b: int, at_least: float) -> Match | None:
        ea, eb = embeddings[a], embeddings[b]
        assert ea is not None and eb is not None
        score = objects_match(ea.boxes, labels[a], eb.boxes, labels[b])
        picture = float(ea.whole @ eb.whole)
        if score < at_least or picture < 0.75 or not texts_agree(texts[a], texts[b]):
            return None
        return Match(b, round(picture, 4), round(score, 4))

    position = {node: pos for pos, node in enumerate(walk)}
    found: dict[int, Match] = {}
    for pos, node in enumerate(walk):
        mine = embeddings[node]
        if mine is None:
            continue
        # its 32 nearest pictures among all frames, nearest first, of which those walked before it
        near = sorted((-float(mine.whole @ e.whole), j) for j, e in enumerate(embeddings)
                      if e is not None and j != node and float(mine.whole @ e.whole) >= 0.75)[:32]
        before = set(walk[:pos])
        best = None
        for _, j in near:
            if j not in before or (match := same(node, j, 0.94)) is None:
                continue
            if j in found:
                if (direct := same(node, found[j].of, 0.88)) is None:
                    continue
                match = Match(found[j].of, direct.picture, direct.objects, via=j)
            link = match.of if match.via is None else match.via
            rank = (match.objects, match.picture, -position[match.of], -position[link])
            if best is None or rank > best[0]:
                best = (rank, match)
        if best is not None:
            found[node] = best[1]
    return found


def test_the_content_pass_finds_what_the_rule_written_plainly_finds() -> None:
    """Frames of a few scenes, one to three boxes of two classes, some without an embedding, some
    with text, walked in a shuffled order over a subset: the bulk pass (pairs scored many at a
    time, only frames with a candidate walked) gives exactly what comparing frame by frame gives."""
    from video_miner.dataset.semantic import content_duplicates

    rng = np.random.default_rng(11)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    scenes = rng.normal(size=(12, 32))
    objects = rng.normal(size=(12, 3, 48))
    embeddings: list[FrameEmbedding | None] = []
    labels, texts = [], []
    for i in range(400):
        scene = int(rng.integers(0, 12))
        count = int(rng.choice([1, 1, 1, 2, 3]))
        kinds = ["person", "car", "person"][:count]
        boxes = unit(objects[scene, :count] + rng.uniform(0.05, 0.45) * rng.normal(size=(count, 48)))
        embeddings.append(None if i % 37 == 5 else FrameEmbedding(unit(scenes[scene] + 0.4 * rng.normal(size=32)), boxes))
        labels.append(kinds)
        texts.append(["BUS42"] if i % 11 == 0 else (["TAXI7"] if i % 13 == 0 else []))
    walk = [int(x) for x in rng.permutation(400)[:360]]
    expected = _one_frame_at_a_time(embeddings, labels, walk, texts)
    found = content_duplicates(embeddings, labels, walk, 0.75, 0.94, 0.88, texts)
    assert found == expected
    assert len(expected) > 40 and any(m.via is not None for m in expected.values())  # chains too
    assert any(len(labels[i]) > 1 for i in expected)  # and frames of several boxes
    assert content_duplicates(embeddings[:1], labels[:1], [0], 0.75, 0.94, 0.88) == {}  # nothing to compare


def test_the_index_finds_what_the_exact_search_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``EXACT_UP_TO`` frames neighbours come from the faiss index: every planted equal pair,
    nearly every pair the exact products find (nothing they do not), the same answer twice."""
    from video_miner.dataset import semantic

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(600, 256)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), 3000)] + 0.25 * rng.normal(size=(3000, 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    planted = rng.choice(len(vectors), 100, replace=False)
    vectors[planted[1::2]] = vectors[planted[0::2]]
    exact = semantic.neighbours(vectors, 0.75)
    monkeypatch.setattr(semantic, "EXACT_UP_TO", 100)
    indexed = semantic.neighbours(vectors, 0.75)
    assert all(len(a) == len(b) and (a == b).all() for a, b in zip(indexed, semantic.neighbours(vectors, 0.75),
                                                                     strict=True))
    for a, b in zip(planted[0::2], planted[1::2], strict=True):
        assert b in indexed[a] and a in indexed[b]
    pairs = {(i, int(j)) for i, row in enumerate(exact) for j in row}
    found = {(i, int(j)) for i, row in enumerate(indexed) for j in row}
    assert found <= pairs and len(found) >= 0.98 * len(pairs) > 0
    for i, row in enumerate(indexed):  # nearest first, and at the gate or above, on the whole vectors
        sims = vectors[row] @ vectors[i]
        assert (sims >= 0.75).all() and (np.diff(sims) <= 1e-6).all()


def test_a_crowd_of_equal_frames_still_finds_its_neighbours_among_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A still camera's frames all fall in one cell, searched in its first ``CROWD`` members (so
    the pass stays linear; that it is faster is for the benchmark): every frame of the crowd still
    gets its full count of neighbours, the crowd's most preferred, and nothing else is near."""
    from video_miner.dataset import semantic

    rng = np.random.default_rng(3)
    others = rng.normal(size=(1000, 256)).astype(np.float32)
    crowd = np.repeat(rng.normal(size=(1, 256)).astype(np.float32), 3000, axis=0)
    vectors = np.concatenate([crowd, others])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(semantic, "EXACT_UP_TO", 100)
    monkeypatch.setattr(semantic, "CROWD", 200)
    near = semantic.neighbours(vectors, 0.75)
    for row in range(3000):
        assert len(near[row]) == semantic.NEIGHBOURS and set(near[row].tolist()) <= set(range(200)) - {row}
    assert all(len(near[row]) == 0 for row in range(3000, 4000))  # random vectors: nothing near


def test_a_row_of_equal_similarities_keeps_k_of_them_the_first() -> None:
    """Each frame keeps at most k candidates however many tie (a crowd of equal frames compared
    with 20,000 members each would otherwise keep 20,000 pairs a frame), nearest first, ties by
    column; rows with fewer keep all of theirs."""
    from video_miner.dataset.semantic import _at_least

    sims = np.full((3, 50), 0.9, np.float32)
    sims[1, 40] = 0.95  # one above the tie
    sims[2, :] = 0.1
    sims[2, 5] = sims[2, 9] = 0.8
    rows, cols = _at_least(sims, 0.5, 4)
    got = {r: sorted(cols[rows == r].tolist()) for r in range(3)}
    assert got == {0: [0, 1, 2, 3], 1: [0, 1, 2, 40], 2: [5, 9]}


def test_an_embedding_from_an_untrusted_registry_is_refused_not_misread() -> None:
    good = FrameEmbedding(np.ones(4, np.float32) / 2, np.eye(2, 3, dtype=np.float32)).to_bytes()
    assert FrameEmbedding.from_bytes(good).boxes.shape == (2, 3)
    nan = FrameEmbedding(np.array([np.nan, 0, 0, 1], np.float32), np.eye(2, 3, dtype=np.float32)).to_bytes()
    inf = FrameEmbedding(np.ones(4, np.float32) / 2, np.full((2, 3), np.inf, np.float32)).to_bytes()
    for bad in (b"", good[:-2], good + b"\0\0", b"\xff\xff\xff\xff\xff\xff", nan, inf):
        with pytest.raises(ValueError):
            FrameEmbedding.from_bytes(bad)


def test_stored_embeddings_are_read_in_bulk_as_one_at_a_time_and_bad_ones_refused() -> None:
    """:meth:`Vectors.decode` (the export's path: 1M one-box frames at once) gives what reading
    each embedding alone gives; an unreadable one (cut short, NaN or inf, another model's size) is
    refused and said, one whose box count is not its frame's is left out, the rest are unharmed."""
    from video_miner.dataset.semantic import Vectors

    rng = np.random.default_rng(5)

    def made(boxes: int, d: int = 8, e: int = 6) -> FrameEmbedding:
        whole, box = rng.normal(size=d), rng.normal(size=(boxes, e))
        return FrameEmbedding((whole / np.linalg.norm(whole)).astype(np.float32),
                              (box / np.linalg.norm(box, axis=1, keepdims=True)).astype(np.float32))

    good = [made(1), made(1), made(3), made(1), made(0), made(1)]
    blobs: list[bytes | None] = [g.to_bytes() for g in good]
    counts = [1, 1, 3, 1, 0, 1]
    nan = bytearray(made(1).to_bytes())
    nan[6:8] = np.array([np.nan], "<f2").tobytes()
    inf = bytearray(made(2).to_bytes())
    inf[-2:] = np.array([np.inf], "<f2").tobytes()
    blobs += [None, bytes(nan), bytes(inf), made(1).to_bytes()[:-2], made(1, d=4).to_bytes(), made(2).to_bytes()]
    counts += [0, 1, 2, 1, 1, 1]  # the last one: two boxes stored for a frame of one detection
    vectors, refused = Vectors.decode(blobs, counts)
    assert sorted(refused) == [7, 8, 9, 10]
    assert "not finite" in refused[7] and "not finite" in refused[8] and "another model" in refused[10]
    one_by_one = Vectors.of([FrameEmbedding.from_bytes(b) for b in blobs[:6]] + [None] * 6)
    for field in ("whole", "present", "one", "single"):
        assert np.array_equal(getattr(vectors, field), getattr(one_by_one, field)), field
    for i in range(len(blobs)):
        assert np.array_equal(vectors.boxes(i), one_by_one.boxes(i))
    assert vectors.boxes(2).shape == (3, 6) and vectors.boxes(4).shape == (0, 6) and not vectors.present[11]
    part = vectors.take([2, 0])
    assert np.array_equal(part.boxes(0), vectors.boxes(2)) and np.array_equal(part.whole[1], vectors.whole[0])
    several = [made(2), made(3)]  # no frame of one box: the sizes still come from the pool
    vectors, refused = Vectors.decode([x.to_bytes() for x in several], [2, 3])
    assert not refused and vectors.present.all() and vectors.boxes(1).shape == (3, 6)
    with pytest.raises(ValueError, match="different sizes"):
        Vectors.of([made(1), made(1, d=4)])
    # a majority of damaged ones (a header claiming other sizes, nothing behind it) decides nothing
    damaged = [made(1, d=4, e=4).to_bytes()[:10] for _ in range(5)]
    vectors, refused = Vectors.decode([made(1).to_bytes() for _ in range(3)] + damaged, [1] * 8)
    assert sorted(refused) == [3, 4, 5, 6, 7] and vectors.present[:3].all() and vectors.whole.shape[1] == 8


def test_k_center_covers_better_than_even_sampling_and_is_prefix_stable() -> None:
    rng = np.random.default_rng(0)
    # A pool like a long video: one scene for most frames, a few short different ones.
    centres = rng.normal(size=(6, 16))
    sizes = [400, 20, 20, 10, 10, 5]
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(n, 16)) for c, n in zip(centres, sizes, strict=True)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    labels = [["person"]] * len(vectors)
    confs = [[0.9]] * len(vectors)
    rule = BudgetRule(6, {}, 0.0, 0.4, 0.15)
    chosen = choose(vectors, labels, confs, rule)
    even = np.linspace(0, len(vectors) - 1, 6).round().astype(int).tolist()
    assert chosen.radius <= 0.8 * radius_of(vectors, even)
    bigger = choose(vectors, labels, confs, BudgetRule(10, {}, 0.0, 0.4, 0.15))
    assert bigger.picked[:6] == chosen.picked
    again = choose(vectors, labels, confs, BudgetRule(10, {}, 0.0, 0.4, 0.15), earlier=chosen.picked[::-1])
    assert again.picked[:6] == chosen.picked[::-1]


def test_quotas_and_hard_examples_come_first() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [["person"]] * 47 + [["dog"]] * 3
    confs = [[0.95]] * 40 + [[0.42]] * 7 + [[0.9]] * 3
    chosen = choose(vectors, labels, confs, BudgetRule(6, {"dog": 2}, 0.5, 0.4, 0.15))
    picked = chosen.picked
    assert len(picked) == 6 and sum(labels[i] == ["dog"] for i in picked) >= 2
    assert sum(40 <= i < 47 for i in picked) >= 3


def test_hand_edited_sidecars_are_read_defensively(tmp_path: Path) -> None:
    """embeddings.jsonl and selection.json are files anyone could edit: an overlong line, junk or a
    wrong shape is skipped, not read whole into memory or trusted."""
    import base64

    from video_miner.dataset.export import earlier_picks
    from video_miner.store.manifest import MAX_EMBEDDING_LINE, read_embeddings

    good = base64.b64encode(b"abc").decode()
    (tmp_path / "embeddings.jsonl").write_text("\n".join([
        json.dumps({"frame": "a@1.000", "embedding": good}), "x" * (3 * MAX_EMBEDDING_LINE), "{not json",
        json.dumps({"frame": "b@2.000", "embedding": "not base64!"}), json.dumps({"frame": "c@3.000"}),
        json.dumps({"frame": "d@4.000", "embedding": good})]) + "\n")
    assert read_embeddings(tmp_path) == {"a@1.000": b"abc", "d@4.000": b"abc"}
    for junk in ("[1, 2]", '{"picks": "a@1.000"}', "{", '{"picks": [1, "a@1.000", null]}'):
        (tmp_path / "selection.json").write_text(junk)
        assert earlier_picks(tmp_path) == ([] if "null" not in junk else ["a@1.000"])


def test_frames_whose_sure_text_differs_are_never_the_same_content() -> None:
    from video_miner.dataset.semantic import sure_texts, texts_agree

    plate, other = sure_texts([("KA51 MN 2024", 0.99), ("x", 0.99), ("blurred", 0.5)]), sure_texts([("MH12AB3456", 0.98)])
    assert plate == ["KA51MN2024"] and texts_agree(plate, sure_texts([("ka51mn 2024", 0.95)]))
    assert texts_agree(plate, sure_texts([("KA51MN2O24", 0.95)]))  # one letter misread: the same plate
    assert not texts_agree(plate, other) and not texts_agree(plate, []) and texts_agree([], [])


def test_a_copys_time_line_and_the_line_back_are_found_and_agree() -> None:
    """A copy at 1.25x of a video whose moments look different: its line (1.25) and the original's
    line back (0.8) are both found, and kept because they invert each other."""
    from video_miner.dataset.retimed import Frames, time_lines
    from video_miner.dataset.semantic import Vectors

    rng = np.random.default_rng(3)
    moments = rng.normal(size=(40, 16))
    copy_t = np.arange(32.0)
    copy = moments[np.clip(np.round(copy_t * 1.25).astype(int), 0, 39)] + 0.05 * rng.normal(size=(32, 16))
    pictures = np.vstack([moments, copy])
    whole = pictures / np.linalg.norm(pictures, axis=1, keepdims=True)
    vectors = Vectors(whole, np.ones(72, bool), np.zeros(72, bool), np.zeros((72, 1)), {})
    frames = Frames(["a"] * 40 + ["b"] * 32, np.concatenate([np.arange(40.0), copy_t]))
    lines = time_lines(frames, vectors, {("b", "a"): 1.0, ("a", "b"): 1.0}, {"a": 1.0, "b": 1.0})
    assert abs(lines["b"][0].speed - 1.25) < 0.03 and abs(lines["a"][0].speed - 0.8) < 0.03, lines
