"""The gallery of a real run, opened in a real browser (headless Chromium from the Debian package,
driven by Playwright): what a person sees is what the manifest says."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import VIDEOS
from .helpers import cli_here, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: .ci/run installs Debian's chromium package")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def mined(bottle_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "out"
    report = run([str(VIDEOS / "again.mkv"), str(VIDEOS / "book.mkv"), str(bottle_head)], out,
                 **{"filter.classes": ["person", "bottle"]})
    assert report.export.kept >= 5
    proc = cli_here("report", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"gallery: {out / 'gallery.html'}" in proc.stdout
    return out


@pytest.fixture(scope="module")
def page(mined: Path) -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api", reason="the [test] extra installs playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((mined / "gallery.html").as_uri())
        page.wait_for_function("document.body.dataset.ready === '1'")
        yield page
        assert not errors, errors
        assert all(url.startswith("file://") for url in requests), "offline: nothing but local files"
        browser.close()


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "dataset" / "manifest.jsonl").read_text().splitlines()]


def choose(page: Any, select: str, value: str) -> None:
    page.select_option(f"#{select}", value)
    page.wait_for_function("document.body.dataset.shown !== undefined")


def cards(page: Any, decision: str) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all(f".card[data-decision={decision}]", """els => els.map(e => ({
        video: e.dataset.video, t: Number(e.dataset.t), text: e.textContent,
        labels: [...e.querySelectorAll('.box span')].map(s => s.textContent)}))"""))


def test_counts_at_the_top_are_the_manifests(page: Any, mined: Path) -> None:
    rows = manifest(mined)
    shown = dict(page.eval_on_selector_all("[data-count]",
                                           "els => els.map(e => [e.dataset.count, e.querySelector('b').textContent])"))
    decisions = Counter(r["decision"] for r in rows)
    assert shown == {"videos": str(len({r["video_id"] for r in rows})), "frames": str(len(rows)),
                     "kept": str(decisions["kept"]), "duplicates": str(decisions["duplicate"]),
                     "left out": str(decisions["left_out"]), "filtered": str(decisions["filtered"])}


def test_every_kept_frame_is_shown_with_its_image_grouped_by_video_in_input_order(page: Any, mined: Path) -> None:
    rows = manifest(mined)
    choose(page, "decision", "kept")
    choose(page, "per", "100000")
    shown = cards(page, "kept")
    kept = [r for r in rows if r["decision"] == "kept"]
    assert sorted((c["video"], round(c["t"], 3)) for c in shown) == sorted((r["video_id"], round(r["timestamp"], 3))
                                                                           for r in kept)
    order = list(dict.fromkeys(r["video_id"] for r in rows))
    sections = page.eval_on_selector_all("section.video", "els => els.map(e => e.dataset.video)")
    assert sections == [v for v in order if v in {r["video_id"] for r in kept}]
    # Each kept card's picture is the dataset's image (loaded when scrolled to: lazy).
    for k in range(len(shown)):
        image = page.locator(".card[data-decision=kept] img").nth(k)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())


def test_boxes_are_where_the_manifest_says_with_class_and_confidence(page: Any, mined: Path) -> None:
    rows = {(r["video_id"], round(r["timestamp"], 3)): r for r in manifest(mined) if r["decision"] == "kept"}
    choose(page, "decision", "kept")
    choose(page, "per", "100000")
    checked = 0
    for k in range(page.locator(".card[data-decision=kept]").count()):
        card = page.locator(".card[data-decision=kept]").nth(k)
        card.scroll_into_view_if_needed()
        info = card.evaluate("""c => { const img = c.querySelector('img'); const r = img.getBoundingClientRect();
            return {video: c.dataset.video, t: Number(c.dataset.t), img: [r.left, r.top, r.width, r.height],
                    boxes: [...c.querySelectorAll('.box:not(.model)')].map(b => { const q = b.getBoundingClientRect();
                        return [q.left, q.top, q.width, q.height, b.querySelector('span').textContent]; })}; }""")
        row = rows[(info["video"], round(info["t"], 3))]
        assert len(info["boxes"]) == len(row["detections"])
        left, top, width, height = info["img"]
        for (bl, bt, bw, bh, label), det in zip(info["boxes"], row["detections"], strict=True):
            x, y, w, h = det["xywhn"]
            assert abs(bl - (left + (x - w / 2) * width)) < 1.5 and abs(bt - (top + (y - h / 2) * height)) < 1.5
            assert abs(bw - w * width) < 1.5 and abs(bh - h * height) < 1.5
            assert label == f"{det['class']} {det['conf']:.2f}"
            checked += 1
    assert checked >= 5


def test_filters_by_class_and_decision(page: Any, mined: Path) -> None:
    rows = manifest(mined)
    choose(page, "per", "100000")
    choose(page, "decision", "kept")
    choose(page, "class", "bottle")
    with_bottle = [r for r in rows if r["decision"] == "kept" and any(d["class"] == "bottle" for d in r["detections"])]
    shown = cards(page, "kept")
    assert len(shown) == len(with_bottle) > 0
    assert all(any(label.startswith("bottle ") for label in c["labels"]) for c in shown)
    choose(page, "class", "")
    choose(page, "decision", "filtered")
    filtered = [r for r in rows if r["decision"] == "filtered"]
    shown = cards(page, "filtered")
    assert len(shown) == len(filtered) > 0
    reasons = Counter(r["reason"] for r in filtered)
    assert Counter(next(reason for reason in reasons if reason in c["text"]) for c in shown) == reasons
    choose(page, "decision", "duplicate")
    duplicates = cards(page, "duplicate")
    assert len(duplicates) == sum(r["decision"] == "duplicate" for r in rows)
    # Each says how it was found: by content with both similarities, or by pHash.
    by_content = [r for r in rows if r.get("duplicate_by") == "content"]
    assert by_content, "the bottle video has frames that show the same bottles"
    texts = [c["text"] for c in duplicates]
    for r in by_content:
        sim = r["similarity"]
        assert any(f"picture {sim['picture']}, objects {sim['objects']}" in t for t in texts)
    assert sum("same content:" in t for t in texts) == len(by_content)


def test_duplicates_under_their_kept_frame_and_filtered_frames_collapsed(page: Any, mined: Path) -> None:
    rows = manifest(mined)
    choose(page, "per", "100000")
    choose(page, "decision", "all")
    stands = page.eval_on_selector_all(".stands-for summary", "els => els.map(e => e.textContent)")
    assert sum(int(s.split()[2]) for s in stands) == sum(r["decision"] == "duplicate" for r in rows)
    lists = page.eval_on_selector_all("details.filtered-list", "els => els.map(e => [e.open, e.querySelectorAll('li').length])")
    assert lists and all(not is_open for is_open, _ in lists), "filtered frames are collapsed by default"
    assert sum(n for _, n in lists) == sum(r["decision"] == "filtered" for r in rows)
    # Opening one shows its duplicates' pictures.
    first = page.locator(".stands-for").first
    first.locator("summary").click()
    page.wait_for_function("n => document.querySelector('.stands-for .dups').childElementCount === n",
                           arg=int(stands[0].split()[2]))


def test_a_screenshot_shows_the_page(page: Any, tmp_path: Path) -> None:
    choose(page, "decision", "kept")
    choose(page, "per", "60")
    shot = tmp_path / "gallery.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_reviewed_frame_shows_the_models_boxes_beside_the_reviewed_ones(page: Any, mined: Path,
                                                                           tmp_path: Path) -> None:
    """After a review came back (a box moved, one added), the gallery draws the model's boxes
    dashed beside the reviewed ones, says what changed, and "reviewed only" finds the frame (the
    page of the module's browser goes to that output's gallery: this test comes last)."""
    out = tmp_path / "out"
    shutil.copytree(mined, out)
    row = next(r for r in manifest(out) if r["decision"] == "kept" and len(r["detections"]) == 1)
    x, y, w, h = row["detections"][0]["xywhn"]
    index = row["detections"][0]["class_index"]
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / Path(row["image"]).with_suffix(".txt").name).write_text(
        f"{index} {x + w / 4:.6f} {y:.6f} {w:.6f} {h:.6f}\n{index} 0.1 0.1 0.1 0.1\n")
    assert cli_here("import", "-o", str(out), "--format", "yolo", str(labels)).returncode == 0
    assert not run([str(VIDEOS / "again.mkv"), str(VIDEOS / "book.mkv"), *_third(mined)], out,
                   **{"filter.classes": ["person", "bottle"]}).failures
    reviewed = next(r for r in manifest(out) if r["frame"] == row["frame"])["reviewed"]
    assert reviewed["changes"] == {"added": 1, "deleted": 0, "moved": 1, "reclassed": 0}
    assert cli_here("report", "-o", str(out)).returncode == 0
    page.goto((out / "gallery.html").as_uri())
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.check("#reviewed")
    page.wait_for_function("document.body.dataset.matching === '1'")
    card = page.locator(".card[data-decision=kept]").first
    assert card.locator(".box:not(.model)").count() == 2 and card.locator(".box.model").count() == 1
    assert card.locator(".box.model span").text_content().startswith("model: " + row["detections"][0]["class"])
    assert card.locator(".meta.reviewed").text_content() == "reviewed in yolo: 1 added, 1 moved"


def _third(mined: Path) -> list[str]:
    """The bottle clip the fixture mined (its path, from the manifest's sources)."""
    return sorted({r["source"] for r in manifest(mined) if "bottle" in r["source"]})
