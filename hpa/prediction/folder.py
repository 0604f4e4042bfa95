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

DISPLAY_SIDE = 512  # the report's composites, stains and maps; thumbnails are THUMB_SIDE
THUMB_SIDE = 96


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


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, optimize=False)


def write_assets(assets: Path, images: Path, ids: list[str], classes: dict[str, list[int]],
                 maps: dict[str, np.ndarray], size: int) -> None:
    """Each sample's composite, thumbnail, stains and class-map overlays, at DISPLAY_SIDE at most."""
    import cv2

    from hpa.data.images import read_sample
    from hpa.data.resolution import pad_to_square, resize_to_working_side
    from hpa.prediction.explain import composite, overlay, stain

    for sid in ids:
        img = resize_to_working_side(pad_to_square(read_sample(images, sid)), size)
        side = min(DISPLAY_SIDE, img.shape[0])
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA) if img.shape[0] != side else img
        paths = layout.sample_assets(assets, sid)
        paths["dir"].mkdir(parents=True, exist_ok=True)
        rgb = composite(img)
        _save_png(paths["composite"], rgb)
        _save_png(paths["thumb"], cv2.resize(rgb, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA))
        for color in ("red", "green", "blue", "yellow"):
            _save_png(paths[color], stain(img, color))
        for k, cam in zip(classes[sid], maps.get(sid, [])):
            cam = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR) if cam.shape[0] != side else cam
            _save_png(layout.cam_asset(assets, sid, k), overlay(rgb, cam))


def report_data(ids: list[str], probs: np.ndarray, predicted: np.ndarray, classes: dict[str, list[int]],
                ens: Ensemble, skipped: dict[str, str], assets_name: str, images: Path) -> dict:
    """The page's data: classes named in the model's own words, its thresholds, a row per image."""
    def rel(p: Path) -> str:
        return f"{assets_name}/{p.parent.name}/{p.name}"

    rows = []
    for sid, p, pred in zip(ids, probs, predicted):
        a = layout.sample_assets(Path(assets_name), sid)
        rows.append({"id": sid, "probs": [round(float(v), 6) for v in p],
                     "predicted": [int(k) for k in np.flatnonzero(pred)], "thumb": rel(a["thumb"]),
                     "composite": rel(a["composite"]), "stains": {c: rel(a[c]) for c in ("green", "red", "blue",
                                                                                         "yellow")},
                     "maps": [{"k": int(k), "src": rel(layout.cam_asset(Path(assets_name), sid, k))}
                              for k in classes[sid]]})
    return {"classes": list(ens.classes), "thresholds": [float(t) for t in ens.thresholds], "rows": rows,
            "skipped": [{"id": k, "reason": v} for k, v in skipped.items()],
            "source": ens.source or f"images: {Path(images).absolute()}",
            "stain_names": {"green": "protein (green)", "red": "microtubules (red)", "blue": "nucleus (blue)",
                            "yellow": "ER (yellow)"}}


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
    classes `report` lists). `opts`: batch size, loader processes and device. Inputs the caller
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
    device, batch_size, workers = opts.torch_device(), opts.batch_size, opts.workers
    if not images.is_dir():
        raise HPAError(f"--images {images}: no such directory ({images.absolute()})")
    outputs = {"predictions (--out)": out}
    if report:
        outputs |= {"report": layout.folder_report(out), "report images": layout.report_assets(out)}
    from hpa.data.images import EXTENSIONS

    pictures = [p for p in images.iterdir() if p.is_file() and p.suffix[1:].lower() in EXTENSIONS]
    with reading({"image": pictures, "Id list (--ids)": ids_csv}):
        check_outputs(outputs)
        if report:
            check_report_assets(layout.report_assets(out))
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
            echo(f"class activation maps for {sum(map(len, classes.values()))} (image, class) pairs ...")
            size = max(m.size for m in ens.members)
            maps = ensemble_maps(ens, ids, classes, min(DISPLAY_SIDE, size), batch_size=batch_size, raw_dir=images)
            assets = layout.report_assets(out)
            with staged_dir(assets) as tmp:
                write_assets(tmp, images, ids, classes, maps, size)
            data = report_data(ids, probs, pred, classes, ens, skipped, assets.name, images)
            page = html_page(f"HPA predictions: {images.name}", data)
        with atomic_outputs() as tmp:  # the predictions and their page appear together
            tmp(out).write_text(csv_text(df))
            if page is not None:
                tmp(layout.folder_report(out)).write_text(page)
        return FolderResult(out, layout.folder_report(out) if report else None, len(ids), skipped)
