"""A folder of a user's own images predicted by an ensemble (runs of one arch, a recipe output or
a bundle): probabilities and predicted class names per image, and report.html beside them with
the stain composites and a class activation map for every predicted class (and any asked for).

Every sample's four files are checked (present, not empty, readable, equal sizes) before a model
sees them; those that fail are listed with the reason (and `strict` stops at the first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpa.data import layout
from hpa.errors import HPAError
from hpa.prediction.ensemble import Ensemble, ensemble_maps, predict_ensemble
from hpa.prediction.inference import PredictOptions

DISPLAY_SIDE = 512  # the largest side a field is shown at (its own side when smaller)
MAP_SIDE = 64  # a class map's grid in the page: a stride-32 network's feature grid on a 2048 px input
JPEG_QUALITY = 80  # a 7.5th of PNG's bytes on the demo's fields, the stains' fine structure kept
SPRITE_STAINS = ("green", "red", "blue", "yellow")  # after the composite, in the report's pictures
STAIN_NAMES = {"composite": "composite", "green": "protein (green)", "red": "microtubules (red)",
               "blue": "nucleus (blue)", "yellow": "ER (yellow)"}


@dataclass
class FolderResult:
    predictions: Path
    report: Path | None
    n_predicted: int
    skipped: dict[str, str] = field(default_factory=dict)


def folder_ids(images: Path, ids_csv: Path | None, strict: bool) -> tuple[list[str], dict[str, str]]:
    """The samples to predict (every `<Id>_red.<ext>`, or the Ids of `ids_csv`) and those that
    cannot be read, with the reason."""
    from hpa.data.labels import read_ids
    from hpa.prediction.inference import check_raw_sample, find_image_ids

    ids, skipped = (read_ids(ids_csv), {}) if ids_csv else find_image_ids(images)
    if not ids:
        raise HPAError(f"--images {images}: no <Id>_red.<png|tif|tiff|jpg|jpeg> files with a valid Id found")
    for sid in ids:
        why = check_raw_sample(images, sid)
        if why:
            skipped[sid] = why
    if skipped and strict:
        name, why = next(iter(skipped.items()))
        raise HPAError(f"--strict: {why if name in why else f'{name}: {why}'} ({len(skipped)} sample(s) could not be "
                       "read)")
    return [i for i in ids if i not in skipped], skipped


def _write_picture(path: Path, rgb: np.ndarray) -> None:
    """An RGB picture in the format its name says (hpa.data.layout.report_sprite's)."""
    import cv2

    # colour kept at every pixel (4:4:4): which stain a fine structure is in is what a biologist reads
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]), [
        cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not ok:
        raise HPAError(f"{path}: a {rgb.shape[1]} x {rgb.shape[0]} picture could not be encoded")
    path.write_bytes(buf.tobytes())


def display_image(images: Path, sample_id: str) -> np.ndarray:
    """A field as the report shows it: padded to a square as the models see it, at its own side up
    to DISPLAY_SIDE (H x W x 4 uint8)."""
    import cv2

    from hpa.data.images import read_sample
    from hpa.data.resolution import pad_to_square

    img = pad_to_square(read_sample(images, sample_id))
    side = min(DISPLAY_SIDE, img.shape[0])
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA) if img.shape[0] != side else img


def sprite(img: np.ndarray) -> np.ndarray:
    """The field's picture in the report: the composite, then each of SPRITE_STAINS in grey (the
    page colours the protein's maps over it), side by side (H x 5H x 3 uint8)."""
    from hpa.data.labels import COLORS
    from hpa.prediction.explain import composite

    greys = [np.repeat(img[..., COLORS.index(c), None], 3, -1) for c in SPRITE_STAINS]
    return np.concatenate([composite(img), *greys], 1)


def write_sprites(assets: Path, images: Path, ids: list[str]) -> dict[str, int]:
    """Each field's picture (sprite) as `assets/<Id>.jpg`; returns each field's tile side."""
    sides = {}
    for sid in ids:
        img = display_image(images, sid)
        _write_picture(layout.report_sprite(assets, sid), sprite(img))
        sides[sid] = img.shape[0]
    return sides


def map_png(cam: np.ndarray) -> str:
    """A class map in [0, 1] as the page receives it: an 8-bit grey PNG (255 = the map's maximum),
    base64; smooth maps compress about sixfold."""
    import base64

    import cv2

    ok, buf = cv2.imencode(".png", np.round(np.clip(cam, 0, 1) * 255).astype(np.uint8),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise HPAError(f"a {cam.shape[1]} x {cam.shape[0]} class map could not be encoded as PNG")
    return base64.b64encode(buf.tobytes()).decode()


def colormap_table(name: str = "inferno") -> list[str]:
    """A perceptual colour map (matplotlib's) as the page's 256 CSS colours, low to high."""
    from matplotlib import colormaps

    rgb = np.round(colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(int)
    return ["#" + "".join(f"{v:02x}" for v in c) for c in rgb]


def read_truth(labels: Path | None, n_classes: int) -> dict[str, list[int]]:
    """The known classes per Id from an `Id,Target` CSV (hpa.data.labels.read_labels), for a model of
    the Kaggle 2018 classes; none without `labels`."""
    from hpa.data.labels import NUM_CLASSES, read_labels

    if labels is None:
        return {}
    if n_classes != NUM_CLASSES:
        raise HPAError(f"--labels {labels}: Target holds Kaggle 2018 class numbers and the model predicts "
                       f"{n_classes} classes of its own")
    df = read_labels(Path(labels))
    return {sid: np.flatnonzero(y).tolist() for sid, y in zip(df["Id"], df.attrs["y"])}


def image_row(sample_id: str, probs: np.ndarray, predicted: np.ndarray, maps: dict[int, np.ndarray], side: int,
              picture: str, truth: list[int] | None) -> dict:
    """One image in the page's data: its probabilities and predicted classes, its picture (a path
    relative to the page) and side, its class maps by class (MAP_SIDE grids as PNG; `empty` where
    Grad-CAM located no evidence), and its known classes where `truth` is given."""
    row = {"id": sample_id, "probs": [round(float(v), 6) for v in probs],
           "predicted": [int(k) for k in np.flatnonzero(predicted)], "sprite": picture, "side": side,
           "maps": [{"k": int(k), "empty": True} if m.max() <= 0 else
                    {"k": int(k), "side": m.shape[0], "png": map_png(m)} for k, m in maps.items()]}
    if truth is not None:
        row["truth"] = truth
    return row


def report_data(rows: list[dict], ens: Ensemble, skipped: dict[str, str], title: str, source: str) -> dict:
    """The page's data: classes named in the model's own words, its thresholds, the images' rows
    (image_row), the samples skipped with the reason, and how the page draws (the pictures' tiles,
    the stains' names, the maps' colour map)."""
    return {"title": title, "classes": list(ens.classes), "thresholds": [float(t) for t in ens.thresholds],
            "rows": rows, "skipped": [{"id": k, "reason": v} for k, v in skipped.items()], "source": source,
            "tiles": ["composite", *SPRITE_STAINS], "stain_names": STAIN_NAMES, "colormap": colormap_table(),
            "labelled": any("truth" in r for r in rows), "cells": False}


def check_report_assets(assets: Path) -> None:
    """The report's image folder is replaced whole on every run: refuse one that holds anything else."""
    if assets.exists() and not assets.is_dir():
        raise HPAError(f"{assets}: exists and is not a folder of report images; move it, or write the predictions "
                       "elsewhere (--out)")
    foreign = next((p for p in assets.rglob("*") if p.is_file() and not layout.is_report_image(p)), None) \
        if assets.is_dir() else None
    if foreign:
        raise HPAError(f"{assets}: holds files that are not report images (e.g. {foreign}); move it, or write the "
                       "predictions elsewhere (--out)")


def predict_folder(ens: Ensemble, images: Path, out: Path, *, ids_csv: Path | None = None, strict: bool = False,
                   report: bool | Sequence[int] = True, opts: PredictOptions | None = None,
                   echo: Callable[[str], None] = print) -> FolderResult:
    """Predict every sample of `images` with the ensemble; write `out` (Id, a column per class of the
    model's set, or of the Kaggle 28 with `opts.classes`, then the predicted names) and,
    with `report`, report.html and its images beside it (maps of the predicted classes, and of the
    classes `report` lists; `opts.labels`, an Id,Target CSV, puts the known classes beside the
    predicted ones). `opts`: batch size, loader processes and device. Inputs the caller
    declared (hpa.core.atomic.reading) and the pictures are never replaced. Returns what was written
    and what was skipped."""
    from hpa.core.atomic import atomic_outputs, check_outputs, csv_text, reading, staged_dir
    from hpa.data.class_sets import class_set, to_kaggle2018
    from hpa.data.labels import CLASS_NAMES
    from hpa.data.predictions import NAMES_COLUMN, predictions_frame
    from hpa.prediction.inference import predicted_names
    from hpa.prediction.thresholds import apply_thresholds

    images, out = Path(images), Path(out)
    explain = [] if isinstance(report, bool) else list(report)
    n = len(ens.classes)
    bad = [k for k in explain if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n]
    if bad:
        raise HPAError(f"--explain {bad[0]}: not a class number 0..{n - 1} of the model's classes")
    report = report is not False
    opts = opts or PredictOptions()
    device, batch_size, workers, labels = opts.torch_device(), opts.batch_size, opts.workers, opts.labels
    if not images.is_dir():
        raise HPAError(f"--images {images}: no such directory ({images.absolute()})")
    outputs = {"predictions (--out)": out}
    if report:
        outputs |= {"report": layout.folder_report(out), "report images": layout.report_assets(out)}
    from hpa.data.images import EXTENSIONS

    pictures = [p for p in images.iterdir() if p.is_file() and p.suffix[1:].lower() in EXTENSIONS]
    if labels is not None and not report:
        raise HPAError(f"--labels {labels}: the known classes are shown in the report; without one they are not used")
    with reading({"image": pictures, "Id list (--ids)": ids_csv, "labels (--labels)": labels}):
        check_outputs(outputs)
        if report:
            check_report_assets(layout.report_assets(out))
            if layout.folder_report(out).is_file():  # a page of the user's own is not replaced
                from hpa.prediction.html_report import page_data

                page_data(layout.folder_report(out))
        truth = read_truth(labels, n)
        ids, skipped = folder_ids(images, ids_csv, strict)
        probs, failed = predict_ensemble(ens, ids, device=device, batch_size=batch_size, workers=workers,
                                         raw_dir=images) if ids else (np.zeros((0, n)), {})
        if failed and strict:
            raise HPAError(f"--strict: {next(iter(failed.values()))}")
        skipped.update(failed)
        for name, why in skipped.items():
            echo(f"skipped {name}: {why}")
        ok = [k for k, i in enumerate(ids) if i not in failed]
        if not ok:
            raise HPAError(f"--images {images}: {len(skipped)} sample(s) could not be read, none predicted")
        ids, probs = [ids[k] for k in ok], probs[ok]
        pred = apply_thresholds(probs, ens.thresholds)  # decided in the model's own classes
        written = probs
        own = class_set(ens.classes, "the ensemble")
        if opts.classes and opts.classes != own:
            written, empty = to_kaggle2018(probs, own)
            echo(f"--classes {opts.classes}: {own} mapped onto the Kaggle 28; no counterpart, left empty: "
                 + ", ".join(f"{k} {CLASS_NAMES[k]}" for k in empty))
        df = predictions_frame(out, ids, written, written.shape[1])
        df[NAMES_COLUMN] = predicted_names(pred, ens.classes)
        page = None
        if report:
            from hpa.prediction.html_report import page as html_page

            extra = [int(k) for k in explain]
            classes = {sid: sorted(set(np.flatnonzero(p).tolist()) | set(extra)) for sid, p in zip(ids, pred)}
            if labels is not None:
                unmatched = len(set(truth) - set(ids))
                echo(f"--labels {labels}: known classes of {sum(i in truth for i in ids)} of the {len(ids)} images"
                     + (f"; {unmatched} of its Ids name no predicted image" if unmatched else ""))
            echo(f"class activation maps for {sum(map(len, classes.values()))} (image, class) pairs ...")
            side = min(MAP_SIDE, max(m.size for m in ens.members))
            maps = ensemble_maps(ens, ids, classes, side, batch_size=batch_size, raw_dir=images)
            assets = layout.report_assets(out)
            with staged_dir(assets) as tmp:
                sides = write_sprites(tmp, images, ids)
            rows = [image_row(sid, p, d, dict(zip(classes[sid], maps[sid])), sides[sid],
                              f"{assets.name}/{layout.report_sprite(Path(), sid).name}", truth.get(sid))
                    for sid, p, d in zip(ids, probs, pred)]
            data = report_data(rows, ens, skipped, f"HPA predictions: {images.name}",
                               ens.source or f"images: {images.absolute()}")
            page = html_page(data)
        with atomic_outputs() as tmp:  # the predictions and their page appear together
            tmp(out).write_text(csv_text(df))
            if page is not None:
                tmp(layout.folder_report(out)).write_text(page)
        return FolderResult(out, layout.folder_report(out) if report else None, len(ids), skipped)
