"""A synthetic HPA-like dataset in the Kaggle layout, for the demo and the tests
(`input_prep/make_demo.py` is its command line).

make_demo writes `train.csv`, `train/`, `test/`, `sample_submission.csv`, `test_labels.csv` (the test
truth, which real Kaggle data lacks), `demo_duplicates.csv` (the injected near-duplicate
pairs, ground truth for dedup) and `preview.png` (one sample per class).

Each image holds a few cells: nucleus (blue), microtubules radiating from a centrosome
(red), reticular ER denser near the nucleus (yellow), and in green one drawn pattern per
label modelled on where the protein sits (nucleoplasm fills the nucleus, nucleoli are
bright spots inside it, mitochondria are short threads in the cytoplasm, ...). Label sets
are drawn from the real label-set frequencies of the Kaggle 2018 train table
(`hpa/data/kaggle2018_label_sets.json`), so the long tail and co-occurrence are real; every class
is forced to appear `min_per_class` times per split. Per-cell expression, blur, gain and
noise vary so the task is not trivial. Output is a pure function of the arguments.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.core.atomic import atomic_write_bytes, atomic_write_csv
from hpa.core.runtime import progress as progress_bar
from hpa.data import layout
from hpa.data.images import read_sample, write_sample_png
from hpa.data.labels import CLASS_NAMES, NUM_CLASSES, format_target
from hpa.errors import ConfigError


# ---------------------------------------------------------------- geometry of one image
@dataclass
class Cell:
    """One drawn cell: its ellipse (centre, radii, angle) and its nucleus's (centre, radii)."""
    cy: float
    cx: float
    ry: float
    rx: float
    angle: float
    ny: float
    nx: float
    nry: float
    nrx: float
    mask: np.ndarray | None = None  # bool arrays set by Scene
    nuc: np.ndarray | None = None
    cyto: np.ndarray | None = None


def _ellipse_dist(yy, xx, cy, cx, ry, rx, angle):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    return np.sqrt(u * u + v * v)


class Scene:
    """Cells laid out on a jittered grid; each pixel belongs to at most one cell."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.s = size / 128.0
        g = int(rng.integers(2, 4))  # 2x2 or 3x3 grid
        step = size / g
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.cells: list[Cell] = []
        dists = []
        for i in range(g):
            for j in range(g):
                if rng.random() < 0.15 and len(self.cells) >= 2:
                    continue
                cy = (i + 0.5) * step + rng.uniform(-0.15, 0.15) * step
                cx = (j + 0.5) * step + rng.uniform(-0.15, 0.15) * step
                r = step * rng.uniform(0.45, 0.6)
                ry, rx = r * rng.uniform(0.8, 1.15), r * rng.uniform(0.8, 1.15)
                ang = rng.uniform(0, np.pi)
                nr = r * rng.uniform(0.38, 0.48)
                ny, nx = cy + rng.uniform(-0.12, 0.12) * r, cx + rng.uniform(-0.12, 0.12) * r
                cell = Cell(cy, cx, ry, rx, ang, ny, nx, nr * rng.uniform(0.85, 1.1), nr * rng.uniform(0.85, 1.1))
                self.cells.append(cell)
                dists.append(_ellipse_dist(yy, xx, cy, cx, ry, rx, ang))
        d = np.stack(dists)
        owner = d.argmin(0)
        inside = d.min(0) <= 1.0
        self.label = np.where(inside, owner + 1, 0).astype(np.int32)  # 0 = background
        kernel = np.ones((3, 3), np.uint8)
        for k, cell in enumerate(self.cells):
            cell.mask = self.label == k + 1
            nd = _ellipse_dist(yy, xx, cell.ny, cell.nx, cell.nry, cell.nrx, cell.angle)
            cell.nuc = (nd <= 1.0) & cell.mask
            cell.cyto = cell.mask & ~cell.nuc
            cell.nuc_dist = nd
            m8 = cell.mask.astype(np.uint8)
            cell.edge = (m8 - cv2.erode(m8, kernel)).astype(bool)
            n8 = cell.nuc.astype(np.uint8)
            cell.nuc_edge = (n8 - cv2.erode(n8, kernel)).astype(bool)
            # centrosome just outside the nucleus, on a random side
            a = rng.uniform(0, 2 * np.pi)
            cell.cs = (cell.ny + np.sin(a) * cell.nry * 1.25, cell.nx + np.cos(a) * cell.nrx * 1.25)
            cell.side = a
            cell.level = rng.uniform(0.45, 1.0) if rng.random() > 0.1 else rng.uniform(0.1, 0.3)
        self.yy, self.xx = yy, xx
        self.mt = self._microtubules()
        self.er = self._er()

    def pts(self, mask, n):
        """n random pixel coordinates (x, y) inside mask."""
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return []
        idx = self.rng.integers(0, len(ys), n)
        return list(zip(xs[idx].tolist(), ys[idx].tolist()))

    def _microtubules(self):
        img = np.zeros((self.size, self.size), np.float32)
        for cell in self.cells:
            layer = np.zeros_like(img)
            cell.mt_ends = []
            cy, cx = cell.cs
            for a in np.linspace(0, 2 * np.pi, int(self.rng.integers(10, 16)), endpoint=False):
                a += self.rng.uniform(-0.2, 0.2)
                L = max(cell.ry, cell.rx) * 1.3
                ey, ex = cy + np.sin(a) * L, cx + np.cos(a) * L
                # end point = last pixel of the ray still in the cell
                ts = np.linspace(0, 1, 40)
                py = np.rint(cy + (ey - cy) * ts).astype(int)
                px = np.rint(cx + (ex - cx) * ts).astype(int)
                ok = (py >= 0) & (py < self.size) & (px >= 0) & (px < self.size)
                py, px = py[ok], px[ok]
                inb = np.flatnonzero(cell.mask[py, px])
                if len(inb):
                    cell.mt_ends.append((int(px[inb[-1]]), int(py[inb[-1]])))
                cv2.line(layer, (int(cx), int(cy)), (int(ex), int(ey)), 1.0, 1, cv2.LINE_AA)
            img += layer * cell.cyto
        return img

    def _er(self):
        noise = self.rng.random((self.size, self.size)).astype(np.float32)
        net = cv2.GaussianBlur(noise, (0, 0), 1.2 * self.s)
        net = (net - net.mean()) / (net.std() + 1e-6)
        net = np.clip(1.0 - np.abs(net) * 1.5, 0, 1)  # thin ridges: a reticular network
        img = np.zeros_like(net)
        for cell in self.cells:
            near = np.clip(2.2 - cell.nuc_dist, 0.2, 1.0)
            img += net * near * cell.cyto
        return img


# ---------------------------------------------------------------- green patterns, one per class
def _dots(sc, layer, mask, n, r, v=1.0):
    for x, y in sc.pts(mask, n):
        cv2.circle(layer, (x, y), max(0, int(round(r * sc.s))), v, -1, cv2.LINE_AA)


def _segments(sc, layer, mask, n, length, thick=1):
    for x, y in sc.pts(mask, n):
        a = sc.rng.uniform(0, np.pi)
        L = length * sc.s * sc.rng.uniform(0.7, 1.3) / 2
        dx, dy = np.cos(a) * L, np.sin(a) * L
        cv2.line(layer, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), 1.0, thick, cv2.LINE_AA)


def _nucleoli_mask(sc, cell):
    m = np.zeros(cell.nuc.shape, np.float32)
    _dots(sc, m, cell.nuc & ~cell.nuc_edge, int(sc.rng.integers(1, 4)), 2.5)
    return (m > 0.5) & cell.nuc


def p_nucleoplasm(sc, cell, L):
    L += 0.7 * cell.nuc


def p_nuclear_membrane(sc, cell, L):
    L += 1.0 * cell.nuc_edge


def p_nucleoli(sc, cell, L):
    L += 1.0 * cell.nucleoli


def p_fibrillar_center(sc, cell, L):
    _dots(sc, L, cell.nucleoli, int(sc.rng.integers(4, 8)), 0.6)


def p_speckles(sc, cell, L):
    _dots(sc, L, cell.nuc & ~cell.nucleoli, int(sc.rng.integers(8, 16)), 1.3, 0.8)


def p_nuclear_bodies(sc, cell, L):
    _dots(sc, L, cell.nuc, int(sc.rng.integers(2, 5)), 0.8)


def p_er(sc, cell, L):
    L += sc.er * cell.mask


def p_golgi(sc, cell, L):
    a = cell.side
    y, x = cell.ny + np.sin(a) * cell.nry * 1.3, cell.nx + np.cos(a) * cell.nrx * 1.3
    ax = (max(1, int(cell.nrx * 0.7)), max(1, int(cell.nry * 0.35)))
    cv2.ellipse(L, (int(x), int(y)), ax, np.degrees(a) + 90, 0, 360, 1.0, -1, cv2.LINE_AA)


def p_peroxisomes(sc, cell, L):
    _dots(sc, L, cell.cyto, int(sc.rng.integers(15, 30)), 0.5, 0.8)


def p_endosomes(sc, cell, L):
    _dots(sc, L, cell.cyto, int(sc.rng.integers(8, 14)), 1.0, 0.8)


def p_lysosomes(sc, cell, L):
    _dots(sc, L, cell.cyto & (cell.nuc_dist < 1.6), int(sc.rng.integers(6, 12)), 1.3, 0.9)


def p_intermediate_filaments(sc, cell, L):
    for x, y in sc.pts(cell.cyto, int(sc.rng.integers(3, 6))):
        pts, a = [], sc.rng.uniform(0, 2 * np.pi)
        for _ in range(12):
            pts.append((x, y))
            a += sc.rng.uniform(-0.5, 0.5)
            x, y = x + np.cos(a) * 3 * sc.s, y + np.sin(a) * 3 * sc.s
        cv2.polylines(L, [np.array(pts, np.int32)], False, 0.9, 1, cv2.LINE_AA)
    L *= cell.mask | (L == 0)


def p_actin(sc, cell, L):
    a = sc.rng.uniform(0, np.pi)
    dx, dy = np.cos(a), np.sin(a)
    lay = np.zeros_like(L)
    for off in np.linspace(-1, 1, 7):
        ox, oy = cell.cx - dy * off * cell.rx, cell.cy + dx * off * cell.ry
        R = 2 * max(cell.rx, cell.ry)
        cv2.line(lay, (int(ox - dx * R), int(oy - dy * R)), (int(ox + dx * R), int(oy + dy * R)), 0.9, 1, cv2.LINE_AA)
    L += lay * cell.cyto


def p_focal_adhesions(sc, cell, L):
    for x, y in sc.pts(cell.edge, int(sc.rng.integers(6, 12))):
        a = np.arctan2(y - cell.cy, x - cell.cx)
        ex, ey = x - np.cos(a) * 3 * sc.s, y - np.sin(a) * 3 * sc.s
        cv2.line(L, (x, y), (int(ex), int(ey)), 1.0, 1, cv2.LINE_AA)


def p_microtubules(sc, cell, L):
    L += sc.mt * cell.mask


def p_microtubule_ends(sc, cell, L):
    for x, y in cell.mt_ends:
        cv2.circle(L, (x, y), max(0, int(round(0.6 * sc.s))), 1.0, -1, cv2.LINE_AA)


def p_cytokinetic_bridge(sc, cell, L):
    other = sc.cells[(sc.cells.index(cell) + 1) % len(sc.cells)]
    y0, x0, y1, x1 = cell.cy, cell.cx, other.cy, other.cx
    a, b = (x0 + (x1 - x0) * 0.35, y0 + (y1 - y0) * 0.35), (x0 + (x1 - x0) * 0.65, y0 + (y1 - y0) * 0.65)
    cv2.line(L, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1.0, max(1, int(sc.s)), cv2.LINE_AA)


def p_mitotic_spindle(sc, cell, L):
    a = sc.rng.uniform(0, np.pi)
    R = min(cell.nrx, cell.nry) * 1.1
    p1 = (cell.nx + np.cos(a) * R, cell.ny + np.sin(a) * R)
    p2 = (cell.nx - np.cos(a) * R, cell.ny - np.sin(a) * R)
    for off in np.linspace(-0.6, 0.6, 5):
        m = (cell.nx - np.sin(a) * off * R, cell.ny + np.cos(a) * off * R)
        for p in (p1, p2):
            cv2.line(L, (int(p[0]), int(p[1])), (int(m[0]), int(m[1])), 0.9, 1, cv2.LINE_AA)


def p_mtoc(sc, cell, L):
    cv2.circle(L, (int(cell.cs[1]), int(cell.cs[0])), max(1, int(round(2.2 * sc.s))), 1.0, -1, cv2.LINE_AA)


def p_centrosome(sc, cell, L):
    y, x = cell.cs
    d = 2.5 * sc.s
    for sgn in (-1, 1):
        cv2.circle(L, (int(x + sgn * d), int(y)), max(0, int(round(0.9 * sc.s))), 1.0, -1, cv2.LINE_AA)


def p_lipid_droplets(sc, cell, L):
    for x, y in sc.pts(cell.cyto, int(sc.rng.integers(2, 5))):
        cv2.circle(L, (x, y), max(1, int(round(2.2 * sc.s))), 1.0, 1, cv2.LINE_AA)


def p_plasma_membrane(sc, cell, L):
    L += 1.0 * cell.edge


def p_cell_junctions(sc, cell, L):
    others = ((sc.label > 0) & ~cell.mask).astype(np.uint8)
    touching = cv2.dilate(others, np.ones((5, 5), np.uint8)).astype(bool)
    L += 1.0 * (cell.mask & touching)


def p_mitochondria(sc, cell, L):
    _segments(sc, L, cell.cyto, int(sc.rng.integers(12, 22)), 4)


def p_aggresome(sc, cell, L):
    a = cell.side + np.pi
    y, x = cell.ny + np.sin(a) * cell.nry * 1.4, cell.nx + np.cos(a) * cell.nrx * 1.4
    cv2.circle(L, (int(x), int(y)), max(1, int(round(3.2 * sc.s))), 1.0, -1, cv2.LINE_AA)


def p_cytosol(sc, cell, L):
    L += 0.5 * cell.cyto


def p_cytoplasmic_bodies(sc, cell, L):
    _dots(sc, L, cell.cyto, int(sc.rng.integers(1, 3)), 1.8)


def p_rods_rings(sc, cell, L):
    for x, y in sc.pts(cell.cyto, int(sc.rng.integers(1, 3))):
        if sc.rng.random() < 0.5:
            cv2.circle(L, (x, y), max(1, int(round(1.8 * sc.s))), 1.0, 1, cv2.LINE_AA)
        else:
            a = sc.rng.uniform(0, np.pi)
            d = 3 * sc.s
            cv2.line(L, (int(x - np.cos(a) * d), int(y - np.sin(a) * d)),
                     (int(x + np.cos(a) * d), int(y + np.sin(a) * d)), 1.0, 1, cv2.LINE_AA)


PATTERNS = [
    p_nucleoplasm, p_nuclear_membrane, p_nucleoli, p_fibrillar_center, p_speckles, p_nuclear_bodies,
    p_er, p_golgi, p_peroxisomes, p_endosomes, p_lysosomes, p_intermediate_filaments, p_actin,
    p_focal_adhesions, p_microtubules, p_microtubule_ends, p_cytokinetic_bridge, p_mitotic_spindle,
    p_mtoc, p_centrosome, p_lipid_droplets, p_plasma_membrane, p_cell_junctions, p_mitochondria,
    p_aggresome, p_cytosol, p_cytoplasmic_bodies, p_rods_rings,
]
assert len(PATTERNS) == NUM_CLASSES
# Patterns real HPA staining shows in a subset of cells only (cell cycle dependent).
_FEW_CELLS = {16: 1, 17: 1}


def render(classes: list[int], size: int, rng: np.random.Generator) -> np.ndarray:
    """One H x W x 4 uint8 RGBY image showing the given classes."""
    return render_cells(classes, size, rng)[0]


def render_cells(classes: list[int], size: int, rng: np.random.Generator, partial: float = 0.0) -> \
        tuple[np.ndarray, np.ndarray, dict[int, set[int]]]:
    """The image `render` draws (the same random draws), its cells' label mask (0 background) and
    the classes drawn in each cell: the truth a segmentation and per-cell predictions are measured
    against. `partial` > 0: each class is drawn in each cell only with probability 1 - partial (in
    one cell at least), as real fields show a protein in some cells and not others; 0 draws no
    extra numbers, so the image is `render`'s."""
    sc = Scene(size, rng)
    for cell in sc.cells:
        cell.nucleoli = _nucleoli_mask(sc, cell)
    green = np.zeros((size, size), np.float32)
    shown: dict[int, list[int]] = {}
    for c in classes:
        n_cells = _FEW_CELLS.get(c, len(sc.cells))
        cells = list(range(n_cells))
        if partial > 0 and n_cells > 1:
            keep = [k for k in cells if rng.random() >= partial]
            cells = keep or [int(rng.integers(n_cells))]
        shown[c] = cells
        for cell in (sc.cells[k] for k in cells):
            layer = np.zeros_like(green)
            PATTERNS[c](sc, cell, layer)
            green += layer * cell.level * rng.uniform(0.6, 1.0)
    blue = np.zeros_like(green)
    tex = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 1.0)
    for cell in sc.cells:
        blue += cell.nuc * (0.55 + 0.5 * tex) * rng.uniform(0.7, 1.0)
    red = sc.mt * 0.8 + 0.12 * sum(c.cyto for c in sc.cells)
    yellow = sc.er * 0.8 + 0.08 * sum(c.mask for c in sc.cells)
    chans = []
    sigma = rng.uniform(0.4, 0.8) * sc.s
    for ch in (red, green, blue, yellow):
        ch = cv2.GaussianBlur(ch.astype(np.float32), (0, 0), sigma)
        ch = ch * rng.uniform(0.7, 1.1) + rng.normal(0, 0.03, ch.shape).astype(np.float32)
        chans.append(np.clip(ch * 200, 0, 255).astype(np.uint8))
    per_cell = {k + 1: {c for c in classes if k in shown[c]} for k in range(len(sc.cells))}
    return np.stack(chans, -1), sc.label, per_cell


# ---------------------------------------------------------------- labels and the dataset
def draw_label_sets(n: int, rng: np.random.Generator, min_per_class: int) -> list[list[int]]:
    """n label sets: `min_per_class` forced per class from sets containing it, the rest i.i.d. real."""
    table = json.loads(layout.DEMO_LABEL_SETS.read_text())["label_sets"]
    sets = [[int(x) for x in k.split()] for k in table]
    w = np.array(list(table.values()), float)
    if NUM_CLASSES * min_per_class > n:
        raise ConfigError(f"--min-per-class {min_per_class}: needs at least {NUM_CLASSES * min_per_class} "
                         f"samples per split, got {n}")
    out = []
    for c in range(NUM_CLASSES):
        idx = [i for i, s in enumerate(sets) if c in s]
        p = w[idx] / w[idx].sum()
        out += [sets[i] for i in rng.choice(idx, min_per_class, p=p)]
    out += [sets[i] for i in rng.choice(len(sets), n - len(out), p=w / w.sum())]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def near_duplicate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-acquisition-like copy: brightness change and fresh noise, same content."""
    x = img.astype(np.float32) * rng.uniform(0.9, 1.1) + rng.normal(0, 2.0, img.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def composite(img: np.ndarray) -> np.ndarray:
    """RGBY -> displayable RGB (yellow shown as red + green), as HPA displays it."""
    r, g, b, y = (img[..., k].astype(np.float32) for k in range(4))
    rgb = np.stack([r * 0.6 + y * 0.4, g + y * 0.4, b], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_preview(path: Path, images: dict[int, np.ndarray]) -> None:
    tile = 160
    rows, cols = 4, 7
    canvas = np.zeros((rows * (tile + 18), cols * tile, 3), np.uint8)
    for c in range(NUM_CLASSES):
        r, k = divmod(c, cols)
        y0 = r * (tile + 18)
        if c in images:
            rgb = cv2.resize(composite(images[c]), (tile, tile), interpolation=cv2.INTER_NEAREST)
            canvas[y0:y0 + tile, k * tile:(k + 1) * tile] = rgb
        cv2.putText(canvas, f"{c} {CLASS_NAMES[c]}"[:24], (k * tile + 2, y0 + tile + 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(path, buf.tobytes())


def make_demo(out: Path, n_train: int, n_test: int, size: int, seed: int, min_per_class: int = 3,
              duplicates: tuple[int, int] | None = None, partial: float = 0.0) -> None:
    """The demo dataset in `out`, a pure function of the arguments; `duplicates`: how many near-duplicate
    copies to inject into train and into test (default: a share of each split). Beside the images, the
    truth of their cells (hpa.data.layout.demo_cells; not of the near-duplicates); `partial` (render_cells)
    shows each class in only part of the cells."""
    out = Path(out)
    n_dup_train, n_dup_test = duplicates or (None, None)
    lab_seq, id_seq, dup_seq, img_seq = np.random.SeedSequence(seed).spawn(4)
    lab_rng, id_rng, dup_rng = (np.random.default_rng(s) for s in (lab_seq, id_seq, dup_seq))
    n_dup_train = max(2, n_train // 200) if n_dup_train is None else n_dup_train
    n_dup_test = max(2, n_test // 100) if n_dup_test is None else n_dup_test

    def new_id():
        return str(uuid.UUID(bytes=id_rng.bytes(16), version=4))

    splits = {}
    # duplicates are written into train: total train = n_train, total test = n_test
    for split, n in (("train", n_train - n_dup_train - n_dup_test), ("test", n_test)):
        sets = draw_label_sets(n, lab_rng, min_per_class)
        splits[split] = [(new_id(), s) for s in sets]
    # each image has its own stream, so the output does not depend on generation order
    seeds = iter(img_seq.spawn(n_train + n_test))
    preview: dict[int, tuple[np.ndarray, list[int]]] = {}
    bar = progress_bar(total=n_train + n_test, desc="demo images", unit="img")
    cell_rows = {"train": [], "test": []}
    for split in ("train", "test"):
        masks = layout.demo_cells(out, split)["masks"]
        masks.mkdir(parents=True, exist_ok=True)
        for sid, classes in splits[split]:
            img, labels, per_cell = render_cells(classes, size, np.random.default_rng(next(seeds)), partial)
            write_sample_png(layout.raw_dir(out, split), sid, img)
            ok, buf = cv2.imencode(".png", labels.astype(np.uint16))
            atomic_write_bytes(masks / f"{sid}.png", buf.tobytes())
            cell_rows[split] += [(sid, k, format_target(sorted(cs))) for k, cs in per_cell.items()]
            for c in classes:  # prefer single-label samples for the preview
                if c not in preview or (len(classes) < len(preview[c][1])):
                    preview[c] = (img, classes)
            bar.update()
    # near-duplicates: copies of train samples in train, and of test samples in train (leaks)
    dup_rows = []
    extra = []
    picks = [("train", i) for i in dup_rng.choice(len(splits["train"]), n_dup_train, replace=False)]
    picks += [("test", i) for i in dup_rng.choice(len(splits["test"]), n_dup_test, replace=False)]
    for split, i in picks:
        src, classes = splits[split][i]
        nid = new_id()
        write_sample_png(layout.raw_dir(out, "train"), nid,
                         near_duplicate(read_sample(layout.raw_dir(out, split), src), dup_rng))
        extra.append((nid, classes))
        dup_rows.append((src, nid))
        bar.update()
    bar.close()
    train = splits["train"] + extra
    test = splits["test"]
    # shuffle so duplicates are not all at the end, deterministically
    train = [train[i] for i in dup_rng.permutation(len(train))]
    test = [test[i] for i in dup_rng.permutation(len(test))]
    atomic_write_csv(layout.split_table(out, "train"), pd.DataFrame({"Id": [i for i, _ in train],
                                                                      "Target": [format_target(c) for _, c in train]}))
    atomic_write_csv(layout.test_labels_csv(out), pd.DataFrame({"Id": [i for i, _ in test],
                                                                 "Target": [format_target(c) for _, c in test]}))
    atomic_write_csv(layout.split_table(out, "test"), pd.DataFrame({"Id": [i for i, _ in test], "Predicted": "0"}))
    atomic_write_csv(layout.demo_file(out, "duplicates"), pd.DataFrame(dup_rows, columns=["Id_a", "Id_b"]))
    for split, rows in cell_rows.items():
        atomic_write_csv(layout.demo_cells(out, split)["table"], pd.DataFrame(rows, columns=["Id", "cell", "Target"]))
    write_preview(layout.demo_file(out, "preview"), {c: v[0] for c, v in preview.items()})
