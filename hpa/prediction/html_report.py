"""report.html: one static page for a folder's predictions that opens from disk (no server, no
network): a table of the images (thumbnail of the stain composite, predicted classes with their
probabilities), sortable by any class probability and filterable by predicted class, a detail
view per image with each stain and each class map, the thresholds used, and the samples skipped
with the reason. The page's data is one JSON block; its images are files in `report_files/`.
"""

from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:12px 20px;background:#1d2b3a;color:#fff}header h1{font-size:18px;margin:0}
header p{margin:4px 0 0;color:#c8d3de}
.controls{padding:10px 20px;display:flex;gap:16px;align-items:center;flex-wrap:wrap;background:#fff;
border-bottom:1px solid #ddd;position:sticky;top:0;z-index:2}
main{display:flex;gap:20px;padding:16px 20px;align-items:flex-start}
table{border-collapse:collapse;background:#fff}th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;
vertical-align:middle}th{background:#f0f3f6;cursor:pointer;user-select:none}
#rows tr{cursor:pointer}#rows tr:hover{background:#eef5ff}#rows tr.sel{background:#dbeaff}
td img{width:72px;height:72px;object-fit:cover;display:block;background:#000}
.chip{display:inline-block;margin:1px 4px 1px 0;padding:1px 6px;border-radius:9px;background:#e3ecf7;
font-size:12px;white-space:nowrap}.num{font-variant-numeric:tabular-nums;text-align:right}
#detail{flex:1;min-width:420px;background:#fff;border:1px solid #ddd;padding:12px;position:sticky;top:64px}
#detail[hidden]{display:none}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:160px}
.grid img{width:160px;height:160px;object-fit:contain;background:#000;display:block}
figcaption{font-size:12px;color:#555}.bar{height:8px;background:#4a8fe7}.bar.off{background:#bbb}
.probs td{padding:1px 6px;font-size:12px}.skipped td{color:#8a1c1c}
</style></head><body>
<header><h1>__TITLE__</h1><p id="summary"></p></header>
<div class="controls">
<label>Sort by <select id="sort"></select></label>
<label>Order <select id="order"><option value="desc">highest first</option>
<option value="asc">lowest first</option></select></label>
<label>Show images predicted as <select id="filter"></select></label>
<span id="count"></span>
</div>
<main>
<div><table><thead><tr><th>Image</th><th data-sort="id">Id</th><th>Predicted (probability)</th>
<th id="sortcol" class="num">p</th></tr></thead><tbody id="rows"></tbody></table>
<h3>Skipped samples</h3><table class="skipped"><thead><tr><th>Sample</th><th>Reason</th></tr></thead>
<tbody id="skipped"></tbody></table>
<h3>Thresholds</h3><table class="probs"><tbody id="thresholds"></tbody></table></div>
<section id="detail" hidden></section>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
  "\\"": "&quot;", "'": "&#39;"})[c]);
const fmt = (p) => p.toFixed(3);
const state = {sort: "id", order: "asc", filter: -1};

function options() {
  $("sort").innerHTML = '<option value="id">Id</option>' +
    D.classes.map((n, k) => `<option value="${k}">${k}: ${esc(n)}</option>`).join("");
  $("filter").innerHTML = '<option value="-1">any class</option>' +
    D.classes.map((n, k) => `<option value="${k}">${k}: ${esc(n)}</option>`).join("");
  $("thresholds").innerHTML = D.classes.map((n, k) =>
    `<tr><td>${k}</td><td>${esc(n)}</td><td class="num">${fmt(D.thresholds[k])}</td></tr>`).join("");
  $("order").value = state.order;
  $("skipped").innerHTML = D.skipped.length ? D.skipped.map((s) =>
    `<tr><td>${esc(s.id)}</td><td>${esc(s.reason)}</td></tr>`).join("") :
    '<tr><td colspan="2">none</td></tr>';
  $("summary").textContent = `${D.rows.length} images predicted, ${D.skipped.length} skipped. ` + D.source;
}

function shown() {
  let rows = D.rows.filter((r) => state.filter < 0 || r.predicted.includes(state.filter));
  const key = state.sort === "id" ? null : Number(state.sort);
  rows = rows.slice().sort((a, b) => {
    const c = key === null ? a.id.localeCompare(b.id) : a.probs[key] - b.probs[key];
    return state.order === "asc" ? c : -c;
  });
  return rows;
}

function render() {
  const rows = shown();
  const key = state.sort === "id" ? null : Number(state.sort);
  $("sortcol").textContent = key === null ? "max p" : `p(${D.classes[key]})`;
  $("count").textContent = `${rows.length} of ${D.rows.length} images`;
  $("rows").innerHTML = rows.map((r) => {
    const chips = r.predicted.map((k) => `<span class="chip">${esc(D.classes[k])} ${fmt(r.probs[k])}</span>`);
    const p = key === null ? Math.max(...r.probs) : r.probs[key];
    return `<tr data-id="${esc(r.id)}"><td><img loading="lazy" src="${esc(r.thumb)}" alt=""></td>` +
      `<td>${esc(r.id)}</td><td>${chips.join("")}</td><td class="num">${fmt(p)}</td></tr>`;
  }).join("");
}

function detail(id) {
  const r = D.rows.find((x) => x.id === id);
  if (!r) return;
  document.querySelectorAll("#rows tr").forEach((tr) => tr.classList.toggle("sel", tr.dataset.id === id));
  const fig = (src, cap) => `<figure><img src="${esc(src)}" alt="${esc(cap)}"><figcaption>${esc(cap)}` +
    `</figcaption></figure>`;
  const stains = Object.entries(r.stains).map(([c, src]) => fig(src, D.stain_names[c]));
  const maps = r.maps.map((m) => fig(m.src, `map: ${D.classes[m.k]} (p ${fmt(r.probs[m.k])})`));
  const order = D.classes.map((_, k) => k).sort((a, b) => r.probs[b] - r.probs[a]);
  const probs = order.map((k) => `<tr><td>${esc(D.classes[k])}</td><td class="num">${fmt(r.probs[k])}</td>` +
    `<td style="width:160px"><div class="bar${r.predicted.includes(k) ? "" : " off"}" ` +
    `style="width:${Math.round(160 * r.probs[k])}px"></div></td><td class="num">thr ${fmt(D.thresholds[k])}</td></tr>`);
  $("detail").innerHTML = `<h2>${esc(r.id)}</h2><h3>Composite and class activation maps</h3>` +
    `<div class="grid">${fig(r.composite, "composite")}${maps.join("")}</div>` +
    `<h3>Stains</h3><div class="grid">${stains.join("")}</div>` +
    `<h3>Probabilities</h3><table class="probs"><tbody>${probs.join("")}</tbody></table>`;
  $("detail").hidden = false;
  history.replaceState(null, "", "#" + encodeURIComponent(id));
}

options();
$("sort").addEventListener("change", (e) => { state.sort = e.target.value;
  state.order = state.sort === "id" ? "asc" : "desc"; $("order").value = state.order; render(); });
$("order").addEventListener("change", (e) => { state.order = e.target.value; render(); });
$("filter").addEventListener("change", (e) => { state.filter = Number(e.target.value); render(); });
document.querySelector('th[data-sort="id"]').addEventListener("click", () => { $("sort").value = "id";
  $("sort").dispatchEvent(new Event("change")); });
$("rows").addEventListener("click", (e) => { const tr = e.target.closest("tr"); if (tr) detail(tr.dataset.id); });
render();
if (location.hash.length > 1) detail(decodeURIComponent(location.hash.slice(1)));
</script></body></html>
"""


def page(title: str, data: dict) -> str:
    """The report page: `data` holds classes, thresholds, rows (id, probs, predicted, thumb,
    composite, stains, maps) and skipped samples; paths in it are relative to the page."""
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # a "</script>" in an Id stays data
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", text)
