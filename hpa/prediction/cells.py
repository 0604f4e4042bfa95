"""Cells of a field, with no weights and no network: nuclei from the blue stain, each cell grown from
its nucleus over the microtubule and ER stains by a seeded watershed, as CellProfiler's
IdentifyPrimaryObjects / IdentifySecondaryObjects (propagation) do it, with scikit-image.

1. The field is segmented at a working side of about 512 px (a 2048 px HPA field at a quarter of
   its side; nuclei are then 25-50 px across) and the labels are resized back (nearest) to the
   field's own size.
2. Nuclei: the blue stain smoothed (Gaussian, 2 px), thresholded by Otsu's method, holes filled,
   specks smaller than 1/8 of the median nucleus removed; touching nuclei are split by a watershed
   of the distance to the background seeded at its local maxima.
3. Cells: the mean of the red and yellow stains, smoothed, thresholded at half its Otsu level (the
   cytoplasm is dimmer and more uneven than the nuclei), holes filled; a watershed of its negative from the
   nuclei within that foreground (and the nuclei) gives every pixel to the nucleus it is most
   brightly connected to.

A field with no nucleus (a blue stain with no foreground above the noise) has no cells.
"""

from __future__ import annotations

import numpy as np

WORKING_SIDE = 512


def _otsu(x: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(x)) if x.max() > x.min() else float(x.max())


def segment_cells(img: np.ndarray) -> np.ndarray:
    """The label mask (H x W int32; 0 background, cells 1..n) of an H x W x 4 r g b y uint8 field."""
    import cv2
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    h, w = img.shape[:2]
    scale = min(1.0, WORKING_SIDE / max(h, w))
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else img
    f = small.astype(np.float32) / 255.0
    blue = cv2.GaussianBlur(f[..., 2], (0, 0), 2.0)
    if blue.max() - np.median(blue) < 0.05:  # nothing above the background
        return np.zeros((h, w), np.int32)
    nuclei = ndi.binary_fill_holes(blue > _otsu(blue))
    lab, n = ndi.label(nuclei)
    if n == 0:
        return np.zeros((h, w), np.int32)
    areas = np.bincount(lab.ravel())[1:]
    nuclei = remove_small_objects(nuclei, max_size=max(4, int(np.median(areas) / 4)))
    lab, n = ndi.label(nuclei)
    areas = np.bincount(lab.ravel())[1:]
    typical = float(np.median(areas)) if n else 1.0
    radius = max(2, int(np.sqrt(typical / np.pi)))
    dist = ndi.distance_transform_edt(nuclei)
    markers = np.zeros(dist.shape, np.int32)
    big = np.isin(lab, np.flatnonzero(areas > 1.6 * typical) + 1)
    peaks = peak_local_max(dist, min_distance=radius, labels=np.where(big, lab, 0), exclude_border=False)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    single = (~big) & (lab > 0)  # a nucleus of common size is its own seed, whole
    markers[single] = lab[single] + len(peaks)
    nuclei_lab = watershed(-dist, markers, mask=nuclei)
    cyto = cv2.GaussianBlur((f[..., 0] + f[..., 3]) / 2, (0, 0), 2.0)
    fg = ndi.binary_fill_holes((cyto > 0.5 * _otsu(cyto)) | (nuclei_lab > 0))
    cells = watershed(-cyto, nuclei_lab, mask=fg).astype(np.int32)
    if scale < 1:
        cells = cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(cells)[0].astype(np.int32)


# ---- every cell predicted by class-map assignment -----------------------------------------------------
MAP_FLOOR = 0.05  # a class below this image probability is not mapped: its cells take the image's probability


def cell_scores(labels: np.ndarray, probs: np.ndarray, maps: dict[int, np.ndarray]) -> np.ndarray:
    """Per-cell probabilities (cells x classes) from the image's, shared by its class maps (the
    rule-based step of the 2021 winners): for a mapped class k, a cell gets p_k times the mean of
    k's map inside it over the largest such mean among the cells, so the cell with the most evidence
    keeps the image's probability and a cell without any gets 0; an unmapped class's cells all
    take p_k. `labels` and each map share one grid."""
    from scipy import ndimage as ndi

    n = int(labels.max())
    out = np.tile(np.asarray(probs, float), (n, 1))
    if n == 0:
        return out
    index = np.arange(1, n + 1)
    for k, m in maps.items():
        with np.errstate(invalid="ignore", divide="ignore"):  # a cell too small for the map's grid has no mean
            mean = np.nan_to_num(np.asarray(ndi.mean(m, labels=labels, index=index), float))
        top = mean.max()
        out[:, k] = probs[k] * mean / top if top > 0 else probs[k]
    return out


def cell_crops(img: np.ndarray, labels: np.ndarray) -> list[np.ndarray | None]:
    """Each cell as an image of its own: its bounding box, black outside the cell, padded to a square
    (None for a number no cell has)."""
    from scipy import ndimage as ndi

    from hpa.data.resolution import pad_to_square

    crops: list[np.ndarray | None] = []
    for k, box in enumerate(ndi.find_objects(labels, max_label=int(labels.max()))):
        if box is None:
            crops.append(None)
            continue
        crop = img[box].copy()
        crop[labels[box] != k + 1] = 0
        crops.append(pad_to_square(crop))
    return crops


def crop_scores(ens, crops: list[np.ndarray | None], opts) -> np.ndarray:
    """Per-cell probabilities from the ensemble run on each cell's crop (cell_crops) resized to each
    member's side, averaged over its folds and views and blended as the ensemble blends images."""
    import cv2
    import torch

    from hpa.prediction.inference import view_sum

    device = opts.torch_device()
    keep = [c for c in crops if c is not None]
    per_member = []
    for m in ens.members:
        if not keep:
            per_member.append(np.zeros((0, len(ens.classes))))
            continue
        sized = [cv2.resize(c, (m.size, m.size), interpolation=cv2.INTER_AREA if c.shape[0] > m.size else
                            cv2.INTER_LINEAR) for c in keep]
        x_all = torch.from_numpy(np.stack(sized).transpose(0, 3, 1, 2).copy()).float().div_(255.0)
        out = []
        with torch.no_grad():
            for start in range(0, len(x_all), opts.batch_size):
                x = x_all[start:start + opts.batch_size].to(device)
                acc = view_sum(m.models, x, m.tta, m.amp, device)
                out.append((acc / (len(m.models) * len(m.tta))).cpu().numpy())
        per_member.append(np.concatenate(out))
    blended = ens.combine(per_member) if keep else np.zeros((0, len(ens.classes)))
    full = np.zeros((len(crops), len(ens.classes)))
    full[[k for k, c in enumerate(crops) if c is not None]] = blended
    return full


def square_labels(labels: np.ndarray, side: int) -> np.ndarray:
    """A field's label mask on the grid its class maps are drawn on: padded to a square as the image
    is (hpa.data.resolution.pad_to_square), resized to `side` (nearest)."""
    import cv2

    from hpa.data.resolution import pad_to_square

    sq = pad_to_square(labels)
    return cv2.resize(sq, (side, side), interpolation=cv2.INTER_NEAREST) if sq.shape[0] != side else sq


def cell_rows(sample_id: str, labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    """cells.csv rows of one field: Id, cell, its bounding box (y0, x0, y1, x1, end exclusive), area,
    centroid, and a probability per class (columns 0..C-1)."""
    from scipy import ndimage as ndi

    n = int(labels.max())
    boxes = ndi.find_objects(labels, max_label=n)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    centres = ndi.center_of_mass(np.ones_like(labels), labels, np.arange(1, n + 1)) if n else []
    rows = []
    for k in range(n):
        if boxes[k] is None:
            continue
        ys, xs = boxes[k]
        rows.append({"Id": sample_id, "cell": k + 1, "y0": ys.start, "x0": xs.start, "y1": ys.stop, "x1": xs.stop,
                     "area": int(areas[k]), "cy": round(float(centres[k][0]), 1), "cx": round(float(centres[k][1]), 1),
                     **{str(c): round(float(v), 6) for c, v in enumerate(scores[k])}})
    return rows


def submission_row(sample_id: str, labels: np.ndarray, scores_2021: np.ndarray) -> dict:
    """The 2021 competition's row of one field: ID, ImageWidth, ImageHeight and PredictionString
    (`class confidence mask` for every cell and every class with a confidence)."""
    from hpa.prediction.cell_scoring import encode_mask

    parts = []
    for k in range(int(labels.max())):
        mask = labels == k + 1
        if not mask.any():
            continue
        rle = encode_mask(mask)
        parts += [f"{c} {scores_2021[k, c]:.6f} {rle}" for c in range(scores_2021.shape[1])
                  if np.isfinite(scores_2021[k, c])]
    return {"ID": sample_id, "ImageWidth": labels.shape[1], "ImageHeight": labels.shape[0],
            "PredictionString": " ".join(parts)}


SEGMENTERS = ("watershed", "hpa")
IMAGE_METHODS = ("maps", "crops")


def methods() -> tuple[str, ...]:
    from hpa.prediction.cell_models import CELL_MODELS

    return (*IMAGE_METHODS, *CELL_MODELS)


def segmenter(name: str, masks=None, *, device="cpu", echo=print):
    """A function (sample Id, H x W x 4 field) -> its label mask: the user's masks (`masks`, a
    folder of `<Id>.png|tif`), or the named segmenter: `watershed` (segment_cells, no weights) or
    `hpa` (the HPA's U-Nets, hpa.prediction.hpa_cellseg)."""
    from hpa.errors import HPAError

    if masks is not None:
        check_masks_dir(masks)
        return lambda sid, img: read_user_mask(masks, sid, img.shape[:2], echo)
    if name == "hpa":
        from hpa.prediction.hpa_cellseg import HPASegmenter

        seg = HPASegmenter.published(device, echo)
        return lambda sid, img: seg(img)
    if name != "watershed":
        raise HPAError(f"--segmenter {name}: one of {', '.join(SEGMENTERS)}")
    return lambda sid, img: segment_cells(img)


def check_masks_dir(masks) -> None:
    from pathlib import Path

    from hpa.errors import HPAError

    if Path(masks).is_file():
        raise HPAError(f"--masks {masks}: a file; give the folder that holds one <Id>.png or .tif per image")
    if not Path(masks).is_dir():
        raise HPAError(f"--masks {masks}: no such directory")


def read_user_mask(masks, sample_id: str, shape: tuple[int, int] | None = None, echo=None) -> np.ndarray:
    """A user's mask of a sample (hpa.data.layout.user_masks) read by read_labels, its cells renumbered
    1..n in the order of their labels; one line if there is none, two, more cells than a 16-bit
    mask holds, or (with `shape`) another size. `echo` hears of a mask whose one label covers several
    separate regions (a foreground mask rather than cells)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import relabel_sequential

    from hpa.data import layout
    from hpa.errors import HPAError

    found = layout.user_masks(masks, sample_id)
    if not found:
        raise HPAError(f"--masks {masks}: no mask for {sample_id} (expected {sample_id}.png, .tif or .tiff)")
    if len(found) > 1:
        raise HPAError(f"--masks {masks}: {len(found)} masks for {sample_id} ({', '.join(p.name for p in found)}); "
                       "keep one")
    m = relabel_sequential(read_labels(found[0], shape))[0]
    if m.max() > np.iinfo(np.uint16).max:
        raise HPAError(f"{found[0]}: {m.max()} cells; the cell masks this writes are 16-bit (65535 cells at most)")
    if echo and m.max() == 1 and (regions := ndi.label(m > 0)[1]) > 1:
        echo(f"{found[0]}: one label covers {regions} separate regions, taken as one cell; a mask of cells gives "
             "each cell its own number")
    return m


def check_cell_inputs(images, predictions, ids: list[str] | None, *, method: str = "maps", segment: str = "watershed",
                      masks=None, echo=print) -> None:
    """What the cell stage needs, checked before any model runs (and, from predict_tta.py, before the
    image stage): the method and segmenter, outputs that would not replace the predictions, a report
    this toolkit wrote (if any), the user's masks of `ids` (format, count, the image's size) and the
    published weights the choice needs (downloaded now, or one line offline)."""
    from pathlib import Path

    from PIL import Image

    from hpa.core.atomic import check_outputs, reading
    from hpa.data import layout
    from hpa.data.images import stain_files
    from hpa.errors import HPAError, WeightsError
    from hpa.models.hpa_weights import fetch
    from hpa.prediction.cell_models import CELL_MODELS
    from hpa.prediction.hpa_cellseg import CELL_WEIGHTS, NUCLEI_WEIGHTS
    from hpa.prediction.html_report import page_data

    if method not in methods():
        raise HPAError(f"--cells {method}: one of {', '.join(methods())}")
    if masks is None and segment not in SEGMENTERS:
        raise HPAError(f"--segmenter {segment}: one of {', '.join(SEGMENTERS)}")
    with reading({"predictions": predictions, "masks": masks}):
        check_outputs(layout.cell_outputs(Path(predictions)))
    report = layout.folder_report(Path(predictions))
    if report.is_file():
        page_data(report)
    if masks is not None:
        check_masks_dir(masks)
        for sid in ids or []:
            try:
                w, h = Image.open(stain_files(Path(images), sid)["red"]).size
            except Exception:  # an unreadable sample is the image stage's to report and skip
                continue
            read_user_mask(masks, sid, (h, w))
    names = ([CELL_MODELS[method].weights] if method in CELL_MODELS else []) + \
        ([NUCLEI_WEIGHTS, CELL_WEIGHTS] if masks is None and segment == "hpa" else [])
    missing = []
    for name in names:
        try:
            fetch(name, echo)
        except WeightsError as e:
            missing.append(str(e))
    if missing:
        raise WeightsError("; and ".join(missing))


def predict_cells(ens, images, predictions, *, method: str = "maps", segment: str = "watershed", masks=None,
                  opts=None, echo=print) -> dict:
    """Every cell of the fields a folder prediction wrote (`predictions`, predict_folder's CSV)
    segmented (`segment`, or the user's `masks`; see `segmenter`) and predicted by `method`: `maps`,
    class-map assignment (cell_scores, maps of the classes at or above MAP_FLOOR from the same
    ensemble), `crops`, the ensemble on each cell's crop (cell_crops, crop_scores), or a published
    cell model by name (hpa.prediction.cell_models, in its own classes); writes, beside
    `predictions`, a 16-bit label mask per field, cells.csv, and the 2021 competition's submission
    (classes mapped onto its 19, hpa.data.class_sets.to_hpa2021). Returns what was written
    (hpa.data.layout.cell_outputs) and the fields without a cell."""
    from pathlib import Path

    import cv2
    import pandas as pd

    from hpa.core.atomic import atomic_outputs, csv_text, reading, staged_dir
    from hpa.data import layout
    from hpa.data.class_sets import SETS, class_set, to_hpa2021
    from hpa.data.images import read_sample
    from hpa.data.predictions import read_predictions
    from hpa.errors import HPAError
    from hpa.prediction.cell_models import CELL_MODELS, cell_model_scores, load_cell_model
    from hpa.prediction.ensemble import ensemble_maps
    from hpa.prediction.folder import DISPLAY_SIDE
    from hpa.prediction.inference import PredictOptions

    opts = opts or PredictOptions()
    images, predictions = Path(images), Path(predictions)
    outs = layout.cell_outputs(predictions)
    cell_model = CELL_MODELS.get(method)
    own = cell_model.classes if cell_model else class_set(ens.classes, "the ensemble")
    n_classes = len(SETS[own])
    with reading({"predictions": predictions, "masks": masks}):
        ids, probs = read_predictions(predictions, len(ens.classes))
        check_cell_inputs(images, predictions, ids, method=method, segment=segment, masks=masks, echo=echo)
        segment_field = segmenter(segment, masks, device=opts.torch_device(), echo=echo)
        model = load_cell_model(method, echo) if cell_model else None
        side = min(DISPLAY_SIDE, max(m.size for m in ens.members))
        mapped = {sid: [k for k in range(probs.shape[1]) if probs[i, k] >= MAP_FLOOR] if method == "maps" else []
                  for i, sid in enumerate(ids)}
        if method == "maps":
            echo(f"class maps of {sum(map(len, mapped.values()))} (image, class) pairs for the cells ...")
        maps = ensemble_maps(ens, ids, mapped, side, batch_size=opts.batch_size, raw_dir=images) \
            if method == "maps" else {}
        rows, subs, empty = [], [], []
        with staged_dir(outs["masks"]) as tmp:
            for i, sid in enumerate(ids):
                img = read_sample(images, sid)
                labels = segment_field(sid, img)
                if labels.max() == 0:
                    empty.append(sid)
                    echo(f"{sid}: no cells (no nucleus found)" if masks is None else f"{sid}: its mask has no cells")
                if labels.max() > np.iinfo(np.uint16).max:
                    raise HPAError(f"{sid}: {labels.max()} cells; a 16-bit label mask holds 65535 at most")
                cv2.imwrite(str(layout.cell_mask(tmp, sid)), labels.astype(np.uint16))
                if method == "maps":
                    scores = cell_scores(square_labels(labels, side), probs[i], dict(zip(mapped[sid], maps[sid])))
                elif method == "crops":
                    scores = crop_scores(ens, cell_crops(img, labels), opts)
                else:
                    scores = cell_model_scores(model, cell_model, img, labels, n_classes, opts.batch_size)
                rows += cell_rows(sid, labels, scores)
                subs.append(submission_row(sid, labels, to_hpa2021(scores, own)))
        columns = ["Id", "cell", "y0", "x0", "y1", "x1", "area", "cy", "cx"] + [str(k) for k in range(n_classes)]
        table = pd.DataFrame(rows, columns=columns)
        from hpa.prediction.cell_report import with_cells

        report = layout.folder_report(predictions)
        page = with_cells(report, table, outs["masks"], ids, SETS[own], echo)  # written with the table, at once
        with atomic_outputs() as tmp:
            tmp(outs["table"]).write_text(csv_text(table))
            tmp(outs["submission"]).write_text(csv_text(pd.DataFrame(subs, columns=["ID", "ImageWidth", "ImageHeight",
                                                                                     "PredictionString"])))
            if page is not None:
                tmp(report).write_text(page)
    echo(f"wrote {len(rows)} cells of {len(ids)} fields ({own} classes) to {outs['table']} and the 2021 submission "
         f"{outs['submission']}" + (f"; the report {report} shows them" if page is not None else ""))
    return {**outs, "empty": empty}


def read_labels(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A label mask (predict_cells' 16-bit PNGs, the demo's truth, a user's `--masks`) as int32
    labels: one integer per pixel, 0 background, 1..n cells (a PNG or TIFF of 8, 16 or 32 bits, or a
    grey image stored as RGB). Anything else, or a size other than `shape` (H, W), is one line."""
    from pathlib import Path

    import cv2

    from hpa.errors import HPAError

    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: no label mask there (expected <Id>.png, .tif or .tiff)")
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise HPAError(f"{path}: not a readable image")
    if m.ndim == 3:
        if not all(np.array_equal(m[..., 0], m[..., c]) for c in range(1, m.shape[2])):
            raise HPAError(f"{path}: a colour image, not a label mask (one integer per pixel: 0 background, "
                           "1..n cells)")
        m = m[..., 0]
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)) or not np.array_equal(m, np.round(m)):
            raise HPAError(f"{path}: holds fractional values, not integer cell labels")
    if m.min() < 0:
        raise HPAError(f"{path}: holds negative labels; 0 is background and cells are 1..n")
    if shape is not None and m.shape != tuple(shape):
        raise HPAError(f"{path}: {m.shape[1]}x{m.shape[0]} px, the field is {shape[1]}x{shape[0]}")
    return m.astype(np.int32)


def evaluate_cells(predictions, truth: dict) -> tuple[float, np.ndarray]:
    """The 2021 metric (hpa.prediction.cell_scoring.cell_map on its 19 classes) of the cells
    predict_cells wrote beside `predictions` (a model of the Kaggle 2018 classes), against a truth of
    label masks and per-cell Kaggle 2018 classes in the demo's layout (hpa.data.layout.demo_cells)."""
    from pathlib import Path

    import pandas as pd

    from hpa.data import layout
    from hpa.data.class_sets import HPA2021, KAGGLE2018_TO_HPA2021, from_kaggle2018
    from hpa.prediction.cell_scoring import ScoredCell, cell_map

    outs = layout.cell_outputs(Path(predictions))
    cells = pd.read_csv(outs["table"], dtype={"Id": str})
    want = pd.read_csv(truth["table"], dtype={"Id": str, "Target": str}, keep_default_na=False)
    ids = sorted(set(cells["Id"]) & set(want["Id"]))

    pred_masks = {i: read_labels(layout.cell_mask(outs["masks"], i)) for i in ids}
    true_masks = {i: read_labels(layout.cell_mask(truth["masks"], i)) for i in ids}
    truth21: dict[str, dict[int, set[int]]] = {i: {} for i in ids}
    for row in want[want["Id"].isin(ids)].itertuples():
        truth21[row.Id][int(row.cell)] = {KAGGLE2018_TO_HPA2021[int(k)] for k in row.Target.split()
                                          if int(k) in KAGGLE2018_TO_HPA2021}
    cells = cells[cells["Id"].isin(ids)]
    scores = from_kaggle2018(cells[[str(k) for k in range(28)]].to_numpy(float))
    scored = [ScoredCell(sid, int(cell), c, float(s[c])) for sid, cell, s in zip(cells["Id"], cells["cell"], scores)
              for c in range(len(HPA2021)) if np.isfinite(s[c])]
    return cell_map(pred_masks, scored, true_masks, truth21, len(HPA2021))


def segmentation_quality(predictions, truth: dict) -> tuple[float, float]:
    """(share of the true cells a segmented cell overlaps at IoU >= 0.6, mean best IoU of the true
    cells) of the masks written beside `predictions` against the demo's (hpa.data.layout.demo_cells)."""
    from pathlib import Path

    import pandas as pd

    from hpa.data import layout
    from hpa.prediction.cell_scoring import IOU, _ious

    masks = layout.cell_outputs(Path(predictions))["masks"]
    matched = total = 0
    best: list[float] = []
    for sid in sorted(set(pd.read_csv(truth["table"], dtype={"Id": str})["Id"])):
        mine, path = layout.cell_mask(masks, sid), layout.cell_mask(truth["masks"], sid)
        if not mine.is_file():
            continue
        m, _, true_cells = _ious(read_labels(mine), read_labels(path))
        total += len(true_cells)
        if m.size:
            matched += int((m >= IOU).any(0).sum())
            best += list(m.max(0))
        else:
            best += [0.0] * len(true_cells)
    return (matched / total if total else float("nan")), (float(np.mean(best)) if best else float("nan"))
