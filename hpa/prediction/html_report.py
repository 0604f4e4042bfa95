"""report.html: one static page for a folder's predictions that opens from disk (no server, no
network): a table of the images, sortable by any class probability and filterable by predicted
class (and, where labels are known, by errors), a detail view per image, the thresholds used, and
the samples skipped with the reason.

The detail view shows the field at its own resolution (up to 512 px), each stain, and each class
map drawn by the page over the grey protein stain in a perceptual colour map with its scale; where
cells were predicted, each cell outlined in the colour of its top class, and a click on a cell (or
a row of the sortable, filterable cells table) shows its crop, its probabilities against the
thresholds and the class maps inside it.

The page's data is one JSON block (the maps are small grey PNGs in it, coloured by the page; the
cells' outlines polygons); its only other files are one JPEG per field in `report_files/` (the composite and the
four stains side by side), so a report of hundreds of images can be mailed.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from hpa.errors import HPAError

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:12px 20px;background:#1d2b3a;color:#fff}header h1{font-size:18px;margin:0}
header p{margin:4px 0 0;color:#c8d3de}
.controls{padding:8px 0;display:flex;gap:14px;align-items:center;flex-wrap:wrap}
#top{padding:0 20px;background:#fff;border-bottom:1px solid #ddd}
main{display:flex;gap:20px;padding:16px 20px;align-items:flex-start}
table{border-collapse:collapse;background:#fff}th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;
vertical-align:middle}th{background:#f0f3f6}
.pick tr{cursor:pointer}.pick tr:hover{background:#eef5ff}.pick tr.sel{background:#dbeaff}
td img{width:72px;height:72px;object-fit:cover;object-position:0 0;display:block;background:#000}
.chip{display:inline-block;margin:1px 4px 1px 0;padding:1px 6px;border-radius:9px;background:#e3ecf7;
font-size:12px;white-space:nowrap}.chip.hit{background:#d5f0d5}.chip.fp{background:#fde2c8}
.chip.miss{background:#fff;border:1px dashed #b44}.num{font-variant-numeric:tabular-nums;text-align:right}
#detail{flex:1;min-width:560px;background:#fff;border:1px solid #ddd;padding:12px}
#detail[hidden]{display:none}.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:260px}
#field{width:512px;max-width:100%;background:#000;display:block;cursor:crosshair}
.map{width:240px;height:240px;background:#000;display:block}
.empty{width:240px;height:240px;display:flex;align-items:center;justify-content:center;text-align:center;
background:repeating-linear-gradient(45deg,#eee 0 8px,#f8f8f8 8px 16px);color:#555;padding:0 12px;
box-sizing:border-box}
.stain{width:200px;height:200px;background-size:500% 100%;position:relative}
.stain::after{content:"";position:absolute;inset:0;background:var(--c);mix-blend-mode:multiply}
.scale{display:flex;align-items:center;gap:8px;font-size:12px;color:#444;margin:6px 0}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #0004;vertical-align:-2px;margin-right:3px}
.bar{position:relative;width:160px;height:10px;background:#eee}.bar i{display:block;height:100%;background:#bbb}
.bar i.on{background:#4a8fe7}.bar b{position:absolute;top:-2px;bottom:-2px;width:2px;background:#c22}
.probs td{padding:1px 6px;font-size:12px}.skipped td{color:#8a1c1c}
#cellview{border-top:1px solid #ddd;margin-top:12px;padding-top:4px}
</style></head><body>
<header><h1>__TITLE__</h1><p id="summary"></p></header>
<div id="top"><div class="controls">
<label>Sort by <select id="sort"></select></label>
<label>Order <select id="order"><option value="desc">highest first</option>
<option value="asc">lowest first</option></select></label>
<label>Show images predicted as <select id="filter"></select></label>
<label id="errlabel" hidden><input type="checkbox" id="errors"> only images with a wrong or missed class</label>
<span id="count"></span>
</div></div>
<main>
<div><table class="pick"><thead><tr><th>Image</th><th>Id</th><th>Predicted (probability)</th>
<th id="truthcol" hidden>Known classes</th><th id="sortcol" class="num">p</th></tr></thead>
<tbody id="rows"></tbody></table>
<section id="cells" hidden><h3>Cells</h3><div class="controls">
<label>Sort by <select id="csort"></select></label>
<label>Order <select id="corder"><option value="desc">highest first</option>
<option value="asc">lowest first</option></select></label>
<label>Top class <select id="cfilter"></select></label><span id="ccount"></span></div>
<table class="pick"><thead><tr><th>Id</th><th class="num">cell</th><th class="num">area (px)</th><th>top class</th>
<th class="num">p</th></tr></thead><tbody id="cellrows"></tbody></table></section>
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
const VIEW = 512;  // the field's canvas, in canvas pixels, whatever the field's own side
const MAP_OPACITY = 0.75;  // at a map's maximum; the square root lifts weak evidence into sight
const STAIN_CSS = {green: "#0f0", red: "#f00", blue: "#00f", yellow: "#ff0"};
const state = {sort: "id", order: "asc", filter: -1, errors: false,
  csort: "p", corder: "desc", cfilter: -1, row: null, cell: null};
const top1 = (probs) => probs.reduce((b, p, k) => (p > probs[b] ? k : b), 0);
const classOptions = (first, names = D.classes) => first +
  names.map((n, k) => `<option value="${k}">${k}: ${esc(n)}</option>`).join("");
// the cells' classes: the image model's, or a cell model's own set (then its thresholds are 0.5)
const CC = D.cell_classes || D.classes, CT = D.cell_thresholds || D.thresholds, SAME = !D.cell_classes;
const cells = D.rows.flatMap((r) => (r.cells || []).map((c) => ({...c, row: r, top: top1(c.probs)})));
const pictures = {};  // a field's JPEG, loaded once
// outline colours: distinct ones for the cells' top classes, the most common first
const PALETTE = ["#00e5ff", "#ffd600", "#ff4081", "#76ff03", "#ff9100", "#d500f9", "#ffffff", "#2979ff", "#f44336",
  "#1de9b6"];
const tops = Object.entries(cells.reduce((n, c) => ({...n, [c.top]: (n[c.top] || 0) + 1}), {}))
  .sort((a, b) => b[1] - a[1]).map(([k]) => Number(k));
const classColour = (k) => PALETTE[tops.indexOf(k)] || `hsl(${(k * 137.508) % 360},85%,55%)`;

function picture(r, then) {
  let img = pictures[r.id];
  if (!img) { img = pictures[r.id] = new Image(); img.src = r.sprite; }
  if (img.complete && img.naturalWidth) then(img); else img.addEventListener("load", () => then(img), {once: true});
}

function tile(ctx, img, r, name, sx, sy, sw, sh, w, h) {  // a region of one tile of the field's picture
  const i = D.tiles.indexOf(name);
  ctx.drawImage(img, i * r.side + sx, sy, sw, sh, 0, 0, w, h);
}

function coloured(m, then) {  // a class map in the colour map, more opaque where higher: the protein shows through
  if (m.canvas) { then(m.canvas); return; }
  const img = new Image();
  img.addEventListener("load", () => {
    const c = document.createElement("canvas"), ctx = c.getContext("2d");
    c.width = c.height = m.side;
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, m.side, m.side);
    for (let i = 0; i < px.data.length; i += 4) {
      const v = px.data[i], hex = D.colormap[v];
      for (let j = 0; j < 3; j++) px.data[i + j] = parseInt(hex.substr(1 + 2 * j, 2), 16);
      px.data[i + 3] = Math.round(255 * MAP_OPACITY * Math.sqrt(v / 255));
    }
    ctx.putImageData(px, 0, 0);
    m.canvas = c;
    then(c);
  }, {once: true});
  img.src = "data:image/png;base64," + m.png;
}

function path(c, scale) {  // a cell's outline (one or more rings) as a path in canvas pixels
  const p = new Path2D();
  for (const ring of c.rings) {
    for (let i = 0; i < ring.length; i += 2) p[i ? "lineTo" : "moveTo"](ring[i] * scale, ring[i + 1] * scale);
    p.closePath();
  }
  return p;
}

// draw over the grey protein a map's region (sx, sy, sw, sh in field pixels), inside `clip` if given
function drawMap(canvas, r, m, box, clip) {
  const ctx = canvas.getContext("2d");
  const [sx, sy, sw, sh] = box;
  picture(r, (img) => coloured(m, (map) => {
    tile(ctx, img, r, "green", sx, sy, sw, sh, canvas.width, canvas.height);
    const f = m.side / r.side, scale = canvas.width / sw;
    ctx.save();
    if (clip) { ctx.setTransform(scale, 0, 0, scale, -sx * scale, -sy * scale); ctx.clip(path(clip, 1));
      ctx.setTransform(1, 0, 0, 1, 0, 0); }
    ctx.drawImage(map, sx * f, sy * f, sw * f, sh * f, 0, 0, canvas.width, canvas.height);
    ctx.restore();
    if (clip) { ctx.setTransform(scale, 0, 0, scale, -sx * scale, -sy * scale); ctx.lineWidth = 1.5 / scale;
      ctx.strokeStyle = "#fff"; ctx.stroke(path(clip, 1)); ctx.setTransform(1, 0, 0, 1, 0, 0); }
  }));
}

function colourScale() {
  return `<div class="scale"><span>0</span><span style="display:inline-block;width:200px;height:12px;` +
    `background:linear-gradient(to right,${D.colormap.filter((_, i) => i % 16 === 0 || i === 255).join(",")})">` +
    `</span><span>1</span><span>Grad-CAM evidence for the class, relative: 1 is the strongest in that map, ` +
    `0 none; the grey underneath is the protein stain. Maps are not comparable in absolute terms.</span></div>`;
}

function options() {
  $("sort").innerHTML = classOptions('<option value="id">Id</option>');
  $("filter").innerHTML = classOptions('<option value="-1">any class</option>');
  $("csort").innerHTML = classOptions('<option value="p">top class p</option><option value="area">area</option>' +
    '<option value="id">Id, cell</option>', CC);
  $("cfilter").innerHTML = classOptions('<option value="-1">any class</option>', CC);
  $("thresholds").innerHTML = D.classes.map((n, k) =>
    `<tr><td>${k}</td><td>${esc(n)}</td><td class="num">${fmt(D.thresholds[k])}</td></tr>`).join("");
  $("order").value = state.order;
  $("skipped").innerHTML = D.skipped.length ? D.skipped.map((s) =>
    `<tr><td>${esc(s.id)}</td><td>${esc(s.reason)}</td></tr>`).join("") :
    '<tr><td colspan="2">none</td></tr>';
  $("errlabel").hidden = $("truthcol").hidden = !D.labelled;
  $("cells").hidden = !cells.length;
  $("summary").textContent = `${D.rows.length} images predicted, ${D.skipped.length} skipped` +
    (cells.length ? `, ${cells.length} cells` : "") + ". " + D.source;
}

const wrong = (r) => r.truth && (r.predicted.some((k) => !r.truth.includes(k)) ||
  r.truth.some((k) => !r.predicted.includes(k)));

function chips(r) {  // predicted classes, marked against the known ones where there are some
  const kind = (k) => (!r.truth ? "" : r.truth.includes(k) ? " hit" : " fp");
  const title = (k) => (!r.truth ? "" : r.truth.includes(k) ? "predicted and known" : "predicted, not known");
  return r.predicted.map((k) => `<span class="chip${kind(k)}" title="${title(k)}">` +
    `${esc(D.classes[k])} ${fmt(r.probs[k])}</span>`).join("");
}

function truthChips(r) {
  if (!r.truth) return "unknown";
  return r.truth.map((k) => (r.predicted.includes(k) ? `<span class="chip hit" title="known and predicted">` :
    `<span class="chip miss" title="known, missed">`) + `${esc(D.classes[k])}</span>`).join("");
}

function sorted(list, key, order, cmp) {
  const out = list.slice().sort(cmp(key));
  return order === "asc" ? out : out.reverse();
}

function render() {
  const key = state.sort === "id" ? null : Number(state.sort);
  const rows = sorted(D.rows.filter((r) => (state.filter < 0 || r.predicted.includes(state.filter)) &&
    (!state.errors || wrong(r))), key, state.order,
  (k) => (a, b) => (k === null ? a.id.localeCompare(b.id) : a.probs[k] - b.probs[k]));
  $("sortcol").textContent = key === null ? "max p" : `p(${D.classes[key]})`;
  $("count").textContent = `${rows.length} of ${D.rows.length} images`;
  $("rows").innerHTML = rows.map((r) => {
    const p = key === null ? Math.max(...r.probs) : r.probs[key];
    return `<tr data-id="${esc(r.id)}"${r === state.row ? ' class="sel"' : ""}><td><img loading="lazy" ` +
      `src="${esc(r.sprite)}" alt=""></td><td>${esc(r.id)}</td><td>${chips(r)}</td>` +
      (D.labelled ? `<td>${truthChips(r)}</td>` : "") + `<td class="num">${fmt(p)}</td></tr>`;
  }).join("");
}

const CELL_ROWS = 500;  // the cells table shows this many at most: sort or filter to reach the others

function renderCells() {
  const key = state.csort;
  const shown = sorted(cells.filter((c) => state.cfilter < 0 || c.top === state.cfilter), key, state.corder,
    (k) => (a, b) => (k === "id" ? a.row.id.localeCompare(b.row.id) || a.cell - b.cell : k === "area" ?
      a.area - b.area : k === "p" ? a.probs[a.top] - b.probs[b.top] : a.probs[k] - b.probs[k]));
  $("ccount").textContent = `${shown.length} of ${cells.length} cells` +
    (shown.length > CELL_ROWS ? ` (the first ${CELL_ROWS} listed)` : "");
  $("cellrows").innerHTML = shown.slice(0, CELL_ROWS).map((c) => {
    const k = /^[0-9]+$/.test(key) ? Number(key) : c.top;
    return `<tr data-id="${esc(c.row.id)}" data-cell="${c.cell}"${c === state.cell ? ' class="sel"' : ""}>` +
      `<td>${esc(c.row.id)}</td><td class="num">${c.cell}</td><td class="num">${c.area}</td><td><span class="swatch" ` +
      `style="background:${classColour(c.top)}"></span>${esc(CC[c.top])}</td>` +
      `<td class="num" title="p(${esc(CC[k])})">${fmt(c.probs[k])}</td></tr>`;
  }).join("");
}

function probTable(probs, marked, truth, names = D.classes, thr = D.thresholds) {  // bars against each threshold
  const order = names.map((_, k) => k).sort((a, b) => probs[b] - probs[a]);
  return `<table class="probs"><tbody>${order.map((k) => `<tr><td>${esc(names[k])}</td>` +
    `<td class="num">${fmt(probs[k])}</td><td><div class="bar"><i class="${marked.includes(k) ? "on" : ""}" ` +
    `style="width:${(100 * probs[k]).toFixed(1)}%"></i><b style="left:${(100 * thr[k]).toFixed(1)}%" ` +
    `title="threshold ${fmt(thr[k])}"></b></div></td>` +
    (truth ? `<td>${truth.includes(k) ? "known" : ""}</td>` : "") + "</tr>").join("")}</tbody></table>`;
}

function drawField(r) {
  const canvas = $("field"), ctx = canvas.getContext("2d"), scale = VIEW / r.side;
  picture(r, (img) => {
    tile(ctx, img, r, "composite", 0, 0, r.side, r.side, VIEW, VIEW);
    ctx.lineWidth = 1.5;
    for (const c of r.cells || []) {
      ctx.strokeStyle = classColour(top1(c.probs));
      ctx.lineWidth = state.cell && state.cell.cell === c.cell && state.cell.row === r ? 4 : 1.5;
      ctx.stroke(path(c, scale));
    }
  });
}

function detail(id, cellNo) {
  const r = D.rows.find((x) => x.id === id);
  if (!r) return;
  state.row = r;
  state.cell = cellNo === undefined ? null : cells.find((c) => c.row === r && c.cell === cellNo) || null;
  document.querySelectorAll("#rows tr").forEach((tr) => tr.classList.toggle("sel", tr.dataset.id === id));
  document.querySelectorAll("#cellrows tr").forEach((tr) => tr.classList.toggle("sel",
    tr.dataset.id === id && Number(tr.dataset.cell) === cellNo));
  const tops = [...new Set((r.cells || []).map((c) => top1(c.probs)))].sort((a, b) => a - b);
  const legend = !r.cells ? "" : !r.cells.length ? "<p>No cells in this field (no nucleus found, or an empty " +
    "mask).</p>" : `<p>${r.cells.length} cell${r.cells.length === 1 ? "" : "s"}, outlined in the colour of ` +
    "their top class (click one): " + tops.map((k) => `<span class="swatch" style="background:${classColour(k)}">` +
      `</span>${esc(CC[k])}`).join(" ") + "</p>";
  const maps = r.maps.map((m, i) => `<figure>${m.empty ? '<div class="empty">no evidence located: Grad-CAM ' +
    "finds no region of the image that raises this class</div>" : `<canvas class="map" data-map="${i}" ` +
    'width="240" height="240"></canvas>'}<figcaption>${esc(D.classes[m.k])} (p ${fmt(r.probs[m.k])}` +
    `${r.predicted.includes(m.k) ? ", predicted" : ""})</figcaption></figure>`);
  const stains = D.tiles.slice(1).map((c) => `<figure><div class="stain" role="img" aria-label="${esc(c)}" ` +
    `style="background-image:url('${esc(r.sprite)}');background-position:${25 * D.tiles.indexOf(c)}% 0;` +
    `--c:${STAIN_CSS[c]}"></div><figcaption>${esc(D.stain_names[c])}</figcaption></figure>`);
  $("detail").innerHTML = `<h2>${esc(r.id)}</h2><p>Predicted: ${chips(r) || "none"}` +
    (D.labelled ? `<br>Known: ${truthChips(r)}<br><small>green: predicted and known; orange: predicted, not ` +
      "known; dashed: known, missed</small>" : "") + `</p>${legend}` +
    `<canvas id="field" width="${VIEW}" height="${VIEW}"></canvas><figcaption>composite, ${r.side} px` +
    `</figcaption><div id="cellview"></div>` +
    `<h3>Class maps over the protein stain</h3>${colourScale()}<div class="grid">${maps.join("")}</div>` +
    `<h3>Stains</h3><div class="grid">${stains.join("")}</div>` +
    `<h3>Probabilities</h3>${probTable(r.probs, r.predicted, r.truth)}`;
  drawField(r);
  $("detail").querySelectorAll("canvas.map").forEach((c) =>
    drawMap(c, r, r.maps[Number(c.dataset.map)], [0, 0, r.side, r.side]));
  $("field").addEventListener("click", (e) => {
    const s = r.side / e.target.clientWidth, hit = document.createElement("canvas").getContext("2d");
    const c = (r.cells || []).find((x) => hit.isPointInPath(path(x, 1), e.offsetX * s, e.offsetY * s));
    detail(r.id, c ? c.cell : undefined);
  });
  if (state.cell) showCell(r, state.cell);
  $("detail").hidden = false;
  history.replaceState(null, "", "#" + encodeURIComponent(id) + (state.cell ? "/" + state.cell.cell : ""));
}

function showCell(r, c) {  // its crop (with a margin), the class maps inside it, its probabilities
  const over = CC.map((_, k) => k).filter((k) => c.probs[k] >= CT[k]);
  const probs = `<p>Cell probabilities${SAME ? "" : ` (the cell model's ${CC.length} classes)`}; the bar is blue ` +
    `where the cell's probability reaches the class's threshold (red tick).</p>${probTable(c.probs, over,
      undefined, CC, CT)}`;
  const head = `<h3>Cell ${c.cell} of ${esc(r.id)}: ${esc(CC[c.top])} (p ${fmt(c.probs[c.top])}), ` +
    `${c.area} px</h3>`;
  if (!c.rings.length) {  // too small to be drawn at the side the field is shown at
    $("cellview").innerHTML = head + "<p>Too small to outline at this side.</p>" + probs;
    return;
  }
  const xs = c.rings.flatMap((g) => g.filter((_, i) => i % 2 === 0));
  const ys = c.rings.flatMap((g) => g.filter((_, i) => i % 2));
  const x0 = Math.min(...xs), y0 = Math.min(...ys), size = Math.max(Math.max(...xs) - x0, Math.max(...ys) - y0, 4);
  const pad = size * 0.15, box = [x0 - pad, y0 - pad, size + 2 * pad, size + 2 * pad];
  const maps = r.maps.map((m, i) => `<figure>${m.empty ? '<div class="empty" style="width:160px;height:160px">' +
    "no evidence located</div>" : `<canvas class="map" style="width:160px;height:160px" data-cellmap="${i}" ` +
    `width="160" height="160"></canvas>`}<figcaption>${esc(D.classes[m.k])}` +
    `${SAME ? ` (cell p ${fmt(c.probs[m.k])})` : ""}` +
    "</figcaption></figure>");
  $("cellview").innerHTML = head + colourScale() + '<div class="grid"><figure><canvas id="crop" width="160" ' +
    `height="160" style="background:#000"></canvas><figcaption>the cell (composite)</figcaption></figure>` +
    `${maps.join("")}</div>${probs}`;
  const crop = $("crop"), scale = crop.width / box[2];
  picture(r, (img) => {
    const ctx = crop.getContext("2d");
    tile(ctx, img, r, "composite", ...box, crop.width, crop.height);
    ctx.setTransform(scale, 0, 0, scale, -box[0] * scale, -box[1] * scale);
    ctx.lineWidth = 2 / scale;
    ctx.strokeStyle = classColour(c.top);
    ctx.stroke(path(c, 1));
  });
  $("cellview").querySelectorAll("canvas[data-cellmap]").forEach((cv) =>
    drawMap(cv, r, r.maps[Number(cv.dataset.cellmap)], box, c));
}

options();
$("sort").addEventListener("change", (e) => { state.sort = e.target.value;
  state.order = state.sort === "id" ? "asc" : "desc"; $("order").value = state.order; render(); });
$("order").addEventListener("change", (e) => { state.order = e.target.value; render(); });
$("filter").addEventListener("change", (e) => { state.filter = Number(e.target.value); render(); });
$("errors").addEventListener("change", (e) => { state.errors = e.target.checked; render(); });
$("csort").addEventListener("change", (e) => { state.csort = e.target.value;
  state.corder = state.csort === "id" ? "asc" : "desc"; $("corder").value = state.corder; renderCells(); });
$("corder").addEventListener("change", (e) => { state.corder = e.target.value; renderCells(); });
$("cfilter").addEventListener("change", (e) => { state.cfilter = Number(e.target.value); renderCells(); });
$("rows").addEventListener("click", (e) => { const tr = e.target.closest("tr"); if (tr) detail(tr.dataset.id); });
$("cellrows").addEventListener("click", (e) => { const tr = e.target.closest("tr");
  if (tr) detail(tr.dataset.id, Number(tr.dataset.cell)); });
render();
if (cells.length) { $("csort").value = state.csort; $("corder").value = state.corder; renderCells(); }
if (location.hash.length > 1) {
  const [id, cell] = decodeURIComponent(location.hash.slice(1)).split("/");
  detail(id, cell ? Number(cell) : undefined);
}
</script></body></html>
"""


def page(data: dict) -> str:
    """The report page of `data` (hpa.prediction.folder.report_data, with cells from
    hpa.prediction.cell_report): its title, classes, thresholds, rows and skipped samples; paths in
    it are relative to the page."""
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # a "</script>" in an Id stays data
    return PAGE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", text)


def page_data(report: Path) -> dict:
    """The data of a report page this toolkit wrote (to add to it, e.g. the cells)."""
    try:
        text = Path(report).read_text(encoding="utf-8")
        return json.loads(text.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0])
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        raise HPAError(f"{report}: not a report page this toolkit wrote; move it, or predict the folder again") \
            from None
