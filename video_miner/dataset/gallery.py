"""``<output>/gallery.html``: the dataset to look at, in one offline page (no CDN, no server).

Every kept frame with its boxes (class and confidence), grouped by video in input order; for each
kept frame the duplicates it stands for; the filtered frames with their reasons, collapsed; filters
by class and decision; the counts at the top. Images are referenced relative to the output folder
(the dataset's, and the candidates' for duplicates), loaded lazily, a page at a time, so the page
stays quick with tens of thousands of frames: the data is one compact JSON block, and only the
current page becomes HTML.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..records import Detection
from ..redact import DEFAULT, Redactor, printable
from ..store.files import contained, read_json, write_text
from ..store.layout import OutputLayout, frame_name
from ..store.manifest import PROVENANCE, ManifestRecord, read_manifest

DECISIONS = ("kept", "duplicate", "filtered", "left_out")
PAGE = "gallery.html"


def gallery_data(output: Path, rows: list[ManifestRecord], redactor: Redactor = DEFAULT) -> dict[str, Any]:
    """The page's data: videos in input order, frames as compact rows."""
    classes = sorted({d.label for r in rows for d in [*r.detections, *_model_boxes(r)]})
    class_index = {c: i for i, c in enumerate(classes)}
    videos: dict[str, int] = {}
    video_rows: list[list[Any]] = []
    index = {r.frame: k for k, r in enumerate(rows)}
    layout = OutputLayout(output)
    frames: list[list[Any]] = []
    for r in rows:
        if r.video_id not in videos:
            videos[r.video_id] = len(video_rows)
            # Masked (manifests of older releases kept secrets); invisible characters shown escaped
            # (a U+202E in a name would turn the rest of it around).
            video_rows.append([printable(r.video_id), printable(redactor.url(r.source))])
        frames.append(_frame_row(output, layout, r, videos[r.video_id], class_index, index))
    kept_by_class = Counter(classes[b[0]] for f in frames if f[2] == 0 for b in {x[0]: x for x in f[4]}.values())
    counts = {"videos": len(video_rows), "frames": len(frames), **Counter(DECISIONS[f[2]] for f in frames)}
    return {"classes": [printable(c) for c in classes], "videos": video_rows, "frames": frames,
            "counts": {d: counts.get(d, 0) for d in ("videos", "frames", *DECISIONS)},
            "kept_by_class": {printable(c): n for c, n in kept_by_class.items()}}


def _frame_row(output: Path, layout: OutputLayout, r: ManifestRecord, video: int, class_index: dict[str, int],
               index: dict[str, int]) -> list[Any]:
    """One frame as the page reads it: video, time, decision, image, boxes (an OCR box with the
    text read: shown as text, never as markup), what it duplicates, reason, likeness, each box's
    track (0: none), the frame's hard marks, and for a reviewed frame the model's boxes and what the
    review changed."""
    boxes = [[class_index[d.label], d.conf, *[round(v, 5) for v in d.xywhn], *([printable(d.text)] if d.text else [])]
             for d in r.detections]
    model = [[class_index[d.label], d.conf, *[round(v, 5) for v in d.xywhn]] for d in _model_boxes(r)]
    return [video, round(r.timestamp, 3), DECISIONS.index(r.decision), _image(output, layout, r), boxes,
            index.get(r.duplicate_of or "", -1), printable(r.reason or ""), _likeness(r),
            [d.track or 0 for d in r.detections], [printable(d.hard) for d in r.detections if d.hard], model,
            _reviewed(r)]


def _model_boxes(r: ManifestRecord) -> list[Detection]:
    """A reviewed frame's boxes as the model found them (the manifest is anyone's to edit: a box
    that does not read is left out)."""
    reviewed = r.extra.get("reviewed")
    raw = reviewed.get("model") if isinstance(reviewed, dict) else None
    boxes = []
    for item in raw if isinstance(raw, list) else []:
        try:
            box = Detection.from_json(item)
        except (KeyError, TypeError, ValueError):
            continue
        if all(math.isfinite(v) for v in (*box.xywhn, box.conf)):  # a NaN would make the page's JSON unreadable
            boxes.append(box)
    return boxes


def _reviewed(r: ManifestRecord) -> str:
    """What a review changed, in words ("" for a frame nobody reviewed)."""
    reviewed = r.extra.get("reviewed")
    if not isinstance(reviewed, dict):
        return ""
    by = f" by {reviewed['who']}" if isinstance(reviewed.get("who"), str) else ""
    head = printable(f"reviewed in {reviewed.get('tool')}{by}")
    if reviewed.get("rejected"):
        return head + ": rejected"
    done = reviewed.get("changes")
    done = done if isinstance(done, dict) else {}
    said = ", ".join(f"{n} {what}" for what, n in done.items() if isinstance(n, int) and n > 0 and
                     what in ("added", "deleted", "moved", "reclassed"))
    return f"{head}: {said or 'the model was right'}"


def _likeness(r: ManifestRecord) -> str:
    """How alike a duplicate found by content is to the frame it stands for; "" for pHash's."""
    similarity = r.extra.get("similarity") if r.extra.get("duplicate_by") == "content" else None
    if not isinstance(similarity, dict):
        return ""
    through, speed = r.extra.get("through"), r.extra.get("speed")
    return (f"same content: picture {similarity.get('picture')}, objects {similarity.get('objects')}"
            + (f", through {through}" if isinstance(through, str) else "")
            + (f", the same moment of a copy at {speed}x" if isinstance(speed, (int, float)) else ""))


def _image(output: Path, layout: OutputLayout, r: ManifestRecord) -> str | None:
    """A kept frame's image in the dataset; a duplicate's or a left-out frame's among the
    candidates, while it is there; a frame the models judged and did not keep, its thumbnail (to
    audit what they missed). Frames a prefilter dropped were never written."""
    if r.image:  # a manifest is anyone's to edit: only a path inside the dataset is shown
        return f"dataset/{r.image}" if contained(r.image, output / "dataset") else None
    name = frame_name(r.video_id, r.timestamp)
    for folder in (layout.candidates_dir, layout.thumbs_dir):
        path = folder / r.video_id / name
        if path.is_file() and layout.inside(path):
            return path.relative_to(output).as_posix()
    return None


#: What may not appear as such inside the page's JSON block: "<" could close the script element or
#: open a comment that swallows it, ">" and "&" are escaped with it as the HTML spec advises, and
#: U+2028/9 end a line in older JavaScript. JSON's \u escapes read back as the same characters.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SLOT = re.compile(r"%(TITLE|DATA)%")


def script_json(data: Any) -> str:
    """``data`` as JSON that is inert inside a ``<script>`` element, whatever its strings hold."""
    text = json.dumps(data, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def write_gallery(output: Path, redactor: Redactor = DEFAULT) -> Path:
    dataset = output / "dataset"
    rows = read_manifest(dataset)
    data = gallery_data(output, rows, redactor)
    title = output.resolve().name
    provenance = dataset / PROVENANCE
    if provenance.exists():
        classes = read_json(provenance, 1 << 20).get("classes") or []
        title += f" ({', '.join(map(str, classes))})"
    # One pass: what is put in a slot is never searched for another slot.
    values = {"TITLE": html.escape(printable(redactor.text(title))), "DATA": script_json(data)}
    page = output / PAGE
    write_text(page, _SLOT.sub(lambda m: values[m.group(1)], TEMPLATE), output)
    return page


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>video-miner: %TITLE%</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;z-index:2}
h1{font-size:17px;margin:0 0 4px}
#counts span{margin-right:14px} #counts b{font-size:15px}
#controls{margin-top:6px} #controls label{margin-right:12px}
main{padding:8px 16px}
section.video{margin:14px 0} section.video h2{font-size:14px;margin:0 0 6px;word-break:break-all}
section.video h2 small{color:#666;font-weight:normal}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px;width:330px}
.card.duplicate{border-color:#bbb;background:#fafafa} .meta.hard{color:#b00} .meta.view{color:#060}
.card.filtered{width:auto;max-width:330px}
.shot{position:relative;width:320px;line-height:0;background:#ccc;min-height:40px}
.shot img{width:100%;height:auto}
.box{position:absolute;border:2px solid #e4572e;box-sizing:border-box;pointer-events:none}
.box span{position:absolute;left:-2px;top:-16px;background:#e4572e;color:#fff;font:11px/14px monospace;
  padding:0 3px;white-space:nowrap}
.box.model{border:2px dashed #555} .box.model span{background:#555;top:auto;bottom:-16px}
.meta.reviewed{color:#14532d}
.meta{font-size:12px;color:#555;margin-top:4px} .reason{color:#8a3b12}
details{margin-top:4px} summary{cursor:pointer;color:#335}
.dups{display:flex;flex-wrap:wrap;gap:4px;margin-top:4px} .dups img{width:96px;height:auto}
.dups span{font-size:11px} img.thumb{width:120px;height:auto;vertical-align:middle;margin-right:6px}
nav{margin:10px 0} nav button{margin-right:6px}
</style></head>
<body>
<header><h1>video-miner: %TITLE%</h1><div id="counts"></div>
<div id="controls">
<label>decision <select id="decision"><option value="kept">kept</option><option value="duplicate">duplicates</option>
<option value="left_out">left out</option><option value="filtered">filtered</option><option value="all">all</option>
</select></label>
<label>class <select id="class"><option value="">any</option></select></label>
<label>video <input id="video" type="search" placeholder="part of a name" size="18"></label>
<label>track <input id="track" type="number" min="0" placeholder="any" style="width:5em"></label>
<label><input id="hard" type="checkbox"> hard only</label>
<label><input id="reviewed" type="checkbox"> reviewed only</label>
<label>per page <select id="per"><option>24</option><option selected>60</option><option>200</option>
<option value="100000">all</option></select></label>
</div></header>
<main><nav id="top"></nav><div id="frames"></div><nav id="bottom"></nav></main>
<script type="application/json" id="data">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const DEC = ["kept", "duplicate", "filtered", "left_out"];
const $ = id => document.getElementById(id);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
  for (const k of kids) if (k) e.append(k);
  return e;
};
// Which frames stand for which: duplicates listed under the kept frame they duplicate.
const dupsOf = new Map(), filteredBy = new Map();
const push = (m, k, v) => { if (!m.has(k)) m.set(k, []); m.get(k).push(v); };
D.frames.forEach((f, i) => {
  if (f[2] !== 0 && f[2] !== 2 && f[5] >= 0) push(dupsOf, f[5], i);
  if (f[2] === 2) push(filteredBy, f[0], i);
});
const state = {decision: "kept", cls: "", video: "", track: 0, hard: false, reviewed: false, per: 60, page: 0};

function counts() {
  const c = D.counts, parts = [["videos", c.videos], ["frames", c.frames], ["kept", c.kept],
    ["duplicates", c.duplicate], ["left out", c.left_out], ["filtered", c.filtered]];
  $("counts").replaceChildren(...parts.map(([k, v]) => el("span", {"data-count": k}, el("b", {text: String(v)}), " " + k)),
    el("span", {text: "kept per class: " + Object.entries(D.kept_by_class).map(([k, v]) => k + " " + v).join(", ")}));
  for (const c of D.classes) $("class").append(el("option", {value: c, text: c}));
}
function label(f) { return D.videos[f[0]][0] + " @ " + f[1].toFixed(3) + "s"; }
function matches(f) {
  if (state.decision !== "all" && DEC[f[2]] !== state.decision) return false;
  if (state.cls && !f[4].some(b => D.classes[b[0]] === state.cls)) return false;
  if (state.video && !D.videos[f[0]][0].includes(state.video) && !D.videos[f[0]][1].includes(state.video)) return false;
  if (state.track && !f[8].includes(state.track)) return false;
  if (state.hard && !f[9].length) return false;
  if (state.reviewed && !f[11]) return false;
  // In "all", filtered frames are listed under their video, collapsed, not as cards.
  return !(state.decision === "all" && f[2] === 2);
}
function shot(i, f) {
  const box = el("div", {class: "shot"});
  if (f[3]) box.append(el("img", {src: f[3], loading: "lazy", alt: label(f)}));
  f[4].forEach((b, k) => {
    const [c, conf, x, y, w, h, text] = b;
    const s = el("div", {class: "box", "data-frame": String(i), "data-box": String(k),
      style: `left:${(x - w / 2) * 100}%;top:${(y - h / 2) * 100}%;width:${w * 100}%;height:${h * 100}%`});
    const track = f[8][k] ? " #" + f[8][k] : "";
    const read = text === undefined ? "" : " \u201c" + text + "\u201d";
    s.append(el("span", {text: D.classes[c] + track + read + " " + conf.toFixed(2)}));
    box.append(s);
  });
  // A reviewed frame: the model's boxes too, dashed, so what the reviewer changed is seen.
  f[10].forEach((b, k) => {
    const [c, conf, x, y, w, h] = b;
    const s = el("div", {class: "box model", "data-frame": String(i), "data-model-box": String(k),
      style: `left:${(x - w / 2) * 100}%;top:${(y - h / 2) * 100}%;width:${w * 100}%;height:${h * 100}%`});
    s.append(el("span", {text: "model: " + D.classes[c] + " " + conf.toFixed(2)}));
    box.append(s);
  });
  return box;
}
function card(i) {
  const f = D.frames[i], kind = DEC[f[2]];
  const c = el("div", {class: "card " + kind, "data-frame": String(i), "data-decision": kind, "data-video": D.videos[f[0]][0],
    "data-t": String(f[1])});
  if (f[3] || f[4].length) c.append(shot(i, f));
  c.append(el("div", {class: "meta", text: "t=" + f[1].toFixed(3) + "s " + kind}));
  if (kind === "duplicate" && f[5] >= 0) {
    c.append(el("div", {class: "meta", text: "duplicate of " + label(D.frames[f[5]])}));
    c.append(el("div", {class: "meta likeness", text: f[7] || "same pHash"}));
  }
  if (kind === "filtered" || kind === "left_out") c.append(el("div", {class: "meta reason", text: f[6]}));
  const tracks = [...new Set(f[8].filter(t => t))];
  if (kind === "kept" && tracks.length) {
    c.append(el("div", {class: "meta view", text: "view of track " + tracks.map(t => "#" + t).join(", ")}));
  }
  for (const mark of f[9]) c.append(el("div", {class: "meta hard", text: "hard: " + mark}));
  if (f[11]) c.append(el("div", {class: "meta reviewed", text: f[11]}));
  const dups = dupsOf.get(i) || [];
  if (kind === "kept" && dups.length) {
    const n = dups.length + " duplicate" + (dups.length > 1 ? "s" : "");
    const d = el("details", {class: "stands-for"}, el("summary", {text: "stands for " + n}));
    const list = el("div", {class: "dups"});
    d.addEventListener("toggle", () => {  // built when opened: most are never opened
      if (list.childElementCount) return;
      for (const j of dups) {
        const g = D.frames[j];
        list.append(g[3] ? el("img", {src: g[3], loading: "lazy", title: label(g), alt: label(g)})
                         : el("span", {text: label(g)}));
      }
    });
    d.append(list); c.append(d);
  }
  return c;
}
function filteredOf(video) {
  const own = filteredBy.get(video) || [];
  if (!own.length) return null;
  const n = own.length + " filtered frame" + (own.length > 1 ? "s" : "");
  const d = el("details", {class: "filtered-list"}, el("summary", {text: n}));
  const ul = el("ul");
  for (const k of own) {  // a thumbnail where the models judged it: a filter there audits what they missed
    const g = D.frames[k], li = el("li", {"data-frame": String(k), text: "t=" + g[1].toFixed(3) + "s: " + g[6]});
    if (g[3]) li.prepend(el("img", {src: g[3], loading: "lazy", alt: label(g), class: "thumb"}));
    ul.append(li);
  }
  d.append(ul);
  return d;
}
function render() {
  const hits = [];
  D.frames.forEach((f, i) => { if (matches(f)) hits.push(i); });
  const pages = Math.max(1, Math.ceil(hits.length / state.per));
  state.page = Math.min(state.page, pages - 1);
  const slice = hits.slice(state.page * state.per, (state.page + 1) * state.per);
  const out = [];
  let section = null, cards = null, current = -1;
  for (const i of slice) {
    const f = D.frames[i];
    if (f[0] !== current) {
      current = f[0];
      const [vid, src] = D.videos[current];
      cards = el("div", {class: "cards"});
      section = el("section", {class: "video", "data-video": vid}, el("h2", {text: vid + " "}, el("small", {text: src})), cards);
      if (state.decision === "all") { const fl = filteredOf(current); if (fl) section.append(fl); }
      out.push(section);
    }
    cards.append(card(i));
  }
  $("frames").replaceChildren(...out);
  for (const nav of [$("top"), $("bottom")]) {
    const prev = el("button", {text: "previous", "data-nav": "prev"}), next = el("button", {text: "next", "data-nav": "next"});
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    prev.onclick = () => { state.page--; render(); scrollTo(0, 0); };
    next.onclick = () => { state.page++; render(); scrollTo(0, 0); };
    const where = `page ${state.page + 1} of ${pages} · ${hits.length} frames`;
    nav.replaceChildren(prev, next, el("span", {class: "page", text: where}));
  }
  document.body.dataset.shown = String(slice.length);
  document.body.dataset.matching = String(hits.length);
}
for (const [id, key, parse] of [["decision", "decision", String], ["class", "cls", String], ["per", "per", Number]]) {
  $(id).addEventListener("change", e => { state[key] = parse(e.target.value); state.page = 0; render(); });
}
$("video").addEventListener("input", e => { state.video = e.target.value; state.page = 0; render(); });
$("track").addEventListener("input", e => { state.track = Number(e.target.value) || 0; state.page = 0; render(); });
$("hard").addEventListener("change", e => { state.hard = e.target.checked; state.page = 0; render(); });
$("reviewed").addEventListener("change", e => { state.reviewed = e.target.checked; state.page = 0; render(); });
counts();
render();
document.body.dataset.ready = "1";
</script></body></html>
"""
