"""Predict with test-time augmentation: OOF and test probabilities per fold, or a folder of images.

    python predict_tta.py --arch se_resnext50 --size 768 --folds 0 1 2 3 4 --sizes 768 1024 --tta 8
    python predict_tta.py --arch tiny_cnn --size 128 --images my_images/ --out my_predictions.csv

For each fold, the run's best.pt predicts the fold's validation Ids (the OOF file) and the Ids of
sample_submission.csv (the test file): predictions/<arch>_<size>_f<fold>_{oof,test}.csv.
TTA: the probabilities (after the sigmoid) are averaged over the --tta dihedral transforms
(in this order: id, hflip, vflip, rot180, rot90, rot270, transpose, antitranspose) and over every
--sizes value, the prepared image being resized to each size.
With --images, every sample found in the folder (any format hpa.io reads; or the Ids of --ids)
is predicted by all the given folds' models, and a CSV of probabilities, the predicted class
names (per-class thresholds from --thresholds, else 0.5) is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hpa.checkpoint import load_checkpoint  # noqa: E402
from hpa.dataset import load_prepared, prepared_dir  # noqa: E402
from hpa.io import EXTENSIONS, atomic_write_csv, read_sample  # noqa: E402
from hpa.labels import CLASS_NAMES, LabelError, read_ids, validate_id  # noqa: E402
from hpa.predictions import prediction_path, write_predictions  # noqa: E402
from hpa.runtime import AMP_MODES, autocast, pick_device  # noqa: E402
from hpa.thresholds import apply_thresholds  # noqa: E402
from models import build_model, list_archs  # noqa: E402

DIHEDRAL = ("id", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose", "antitranspose")


def dihedral(x: torch.Tensor, name: str) -> torch.Tensor:
    """One of the 8 symmetries of the square on a N x C x H x W batch."""
    return {
        "id": lambda t: t,
        "hflip": lambda t: t.flip(3),
        "vflip": lambda t: t.flip(2),
        "rot180": lambda t: t.flip(2, 3),
        "rot90": lambda t: t.rot90(1, (2, 3)),
        "rot270": lambda t: t.rot90(3, (2, 3)),
        "transpose": lambda t: t.transpose(2, 3),
        "antitranspose": lambda t: t.transpose(2, 3).flip(2, 3),
    }[name](x)


class ImageSet(Dataset):
    """Whole images resized to `size`, from prepared storage or from raw files."""

    def __init__(self, ids: list[str], size: int, store: Path | None = None, raw_dir: Path | None = None):
        self.ids, self.size, self.store, self.raw_dir = ids, size, store, raw_dir

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        sid = self.ids[i]
        img = load_prepared(self.store, sid) if self.store else read_sample(self.raw_dir, sid)
        if img.shape[:2] != (self.size, self.size):
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def load_run_model(run_dir: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    ck = load_checkpoint(run_dir / "best.pt")
    cfg = ck["config"]
    model = build_model(cfg["arch"], **cfg.get("model", {}))
    model.load_state_dict(ck["model"])
    model.to(device).eval()
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model, cfg


@torch.no_grad()
def predict(models: list[torch.nn.Module], ids: list[str], sizes: list[int], tta: tuple[str, ...], batch_size: int,
            device: torch.device, amp: str, workers: int, desc: str, **source) -> np.ndarray:
    """Mean sigmoid probability over models x sizes x TTA transforms, N x 28."""
    total = np.zeros((len(ids), len(CLASS_NAMES)))
    for size in sizes:
        dl = DataLoader(ImageSet(ids, size, **source), batch_size=batch_size, num_workers=workers)
        row = 0
        for x in tqdm(dl, desc=f"{desc} @{size}", leave=False, dynamic_ncols=True):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            acc = torch.zeros(len(x), len(CLASS_NAMES), device=device)
            for model in models:
                for name in tta:
                    with autocast(device, amp):
                        acc += torch.sigmoid(model(dihedral(x, name)).float())
            total[row:row + len(x)] += acc.cpu().numpy()
            row += len(x)
    return total / (len(sizes) * len(models) * len(tta))


def parse_tta(v: str) -> tuple[str, ...]:
    if v.isdigit():
        if not 1 <= int(v) <= len(DIHEDRAL):
            raise argparse.ArgumentTypeError(f"--tta {v}: a count must be 1..8")
        return DIHEDRAL[: int(v)]
    names = tuple(n.strip() for n in v.split(",") if n.strip())
    bad = [n for n in names if n not in DIHEDRAL]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--tta {v}: unknown transform(s) {bad}; choose from {', '.join(DIHEDRAL)}")
    return names


def find_image_ids(directory: Path) -> list[str]:
    ids = set()
    for ext in EXTENSIONS:
        for p in directory.glob(f"*_red.{ext}"):
            ids.add(p.name[: -len(f"_red.{ext}")])
    return sorted(ids)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=list_archs())
    ap.add_argument("--size", type=int, required=True, help="the training size (names the run)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0], help="folds whose runs to use")
    ap.add_argument("--sizes", type=int, nargs="+", help="inference sizes (default: --size)")
    ap.add_argument("--tta", type=parse_tta, default=DIHEDRAL,
                    help="dihedral transforms to average: a count 1..8 (the first N of the order above) or "
                         "names, e.g. id,hflip,vflip (default: all 8)")
    ap.add_argument("--data-dir", type=Path, help="dataset directory (default: the run's)")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--out-dir", type=Path, default=Path("predictions"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--amp", choices=AMP_MODES, default="bf16")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=Path, help="predict every sample in this folder instead")
    ap.add_argument("--ids", type=Path, help="with --images: a CSV whose Id column lists the samples")
    ap.add_argument("--thresholds", type=Path, help="with --images: thresholds JSON from find_thresholds.py")
    ap.add_argument("--out", type=Path, help="with --images: output CSV")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    sizes = a.sizes or [a.size]
    run_dirs = [a.runs / f"{a.arch}_{a.size}" / f"f{f}" for f in a.folds]
    for r in run_dirs:
        if not (r / "best.pt").is_file():
            sys.exit(f"error: {r / 'best.pt'} not found; train that fold first (train_fold.py)")
    common = dict(sizes=sizes, tta=a.tta, batch_size=a.batch_size, device=device, amp=a.amp, workers=a.workers)

    if a.images:
        try:
            ids = read_ids(a.ids) if a.ids else [validate_id(i) for i in find_image_ids(a.images)]
        except LabelError as e:
            sys.exit(f"error: {e}")
        if not ids:
            sys.exit(f"error: {a.images}: no <Id>_red.<ext> image files found")
        models = [load_run_model(r, device)[0] for r in run_dirs]
        probs = predict(models, ids, desc="images", raw_dir=a.images, **common)
        thr = np.array(json.loads(a.thresholds.read_text())["thresholds"]) if a.thresholds else np.full(28, 0.5)
        pred = apply_thresholds(probs, thr)
        df = pd.DataFrame(probs, columns=[str(k) for k in range(28)])
        df.insert(0, "Id", ids)
        df["predicted"] = ["; ".join(CLASS_NAMES[k] for k in np.flatnonzero(p)) for p in pred]
        out = a.out or Path("image_predictions.csv")
        atomic_write_csv(out, df)
        print(f"wrote {len(ids)} predictions to {out}")
        return

    for fold, run_dir in zip(a.folds, run_dirs):
        model, cfg = load_run_model(run_dir, device)
        data_dir = a.data_dir or Path(cfg["data_dir"])
        folds = pd.read_csv(cfg.get("folds_csv") or data_dir / "folds.csv", dtype={"Id": str})
        val_ids = [validate_id(i) for i in folds.loc[folds["fold"] == fold, "Id"]]
        probs = predict([model], val_ids, desc=f"f{fold} oof", store=prepared_dir(data_dir, cfg["size"], "train"),
                        **common)
        out = prediction_path(a.out_dir, a.arch, a.size, fold, "oof")
        write_predictions(out, val_ids, probs)
        print(f"wrote {out}")
        test_csv = data_dir / "sample_submission.csv"
        if test_csv.is_file():
            test_ids = read_ids(test_csv)
            probs = predict([model], test_ids, desc=f"f{fold} test",
                            store=prepared_dir(data_dir, cfg["size"], "test"), **common)
            out = prediction_path(a.out_dir, a.arch, a.size, fold, "test")
            write_predictions(out, test_ids, probs)
            print(f"wrote {out}")


if __name__ == "__main__":
    main()
