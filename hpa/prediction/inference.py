"""Inference: a run's model rebuilt from its own saved config, dihedral test-time augmentation at
one or several sizes, OOF and test predictions per fold, and a folder of a user's own images.

Every prediction file gets a sidecar `<file>.json` that records the run, the labels and folds it
was trained on; blending uses it to refuse predictions made against other folds or labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hpa.config import TrainConfig
from hpa.core.atomic import csv_text
from hpa.core.checkpoint import load_checkpoint
from hpa.core.digests import file_sha256, ids_sha256
from hpa.core.runtime import autocast, loader_processes, progress
from hpa.data import layout
from hpa.data.arrays import read_prepared, stored_side
from hpa.data.images import STAIN_FILE, check_side, read_sample, stain_files, stain_index
from hpa.data.labels import (
    CLASS_NAMES,
    NUM_CLASSES,
    LabelError,
    read_folds,
    read_ids,
    read_label_tables,
    validate_id,
)
from hpa.data.predictions import predictions_frame
from hpa.data.provenance import check_provenance
from hpa.data.resolution import pad_to_square, resize_through, resize_to_working_side, working_side
from hpa.data.sampling import SideBatchSampler
from hpa.errors import CheckpointError, ConfigError, RunError, SampleError
from hpa.models import build_model

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


def parse_tta(v: int | str | Sequence[str], name: str = "--tta") -> tuple[str, ...]:
    """The dihedral views a TTA setting names, wherever it is typed (`--tta 4`, `tta=4`, a recipe's
    `tta: 8`, `"id,hflip"`, a list of names): a count 1..8 (the first N of DIHEDRAL) or names. An
    error names `name` as the caller spells it (a flag, or a keyword)."""
    shown = v if isinstance(v, str) and v.isprintable() and v.strip() == v and v else repr(v)
    where = f"{name} {shown}" if name.startswith("--") else f"{name}={v!r}"
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
        v = int(v.strip())  # str.strip takes more than int() does (a unit separator '\x1f')
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        if not 1 <= v <= len(DIHEDRAL):
            raise ConfigError(f"{where}: a count of dihedral transforms, 1..{len(DIHEDRAL)}")
        return DIHEDRAL[: int(v)]
    names = tuple(n.strip() for n in v.split(",") if n.strip()) if isinstance(v, str) else \
        tuple(v) if isinstance(v, Sequence) else ()
    bad = [n for n in names if n not in DIHEDRAL]
    if bad or not names:
        raise ConfigError(f"{where}: a count 1..{len(DIHEDRAL)} or names from {', '.join(DIHEDRAL)}"
                          + (f" (unknown: {', '.join(map(repr, bad))})" if bad else ""))
    return names


@dataclass(frozen=True)
class PredictOptions:
    """The test-time settings of a prediction, one validated object for predict_tta.py, hpa.predict,
    the recipe and the ablation: the dihedral views, the inference sides (None: each image at its
    stored side), images per forward pass, precision, loader processes and the device; and for a
    folder, the class set its probabilities are written in (None: the model's own; `kaggle2018`
    maps another set's classes onto the Kaggle 28, hpa.data.class_sets) and the Id,Target CSV of
    known classes its report shows beside the predicted ones."""
    tta: tuple[str, ...] = DIHEDRAL
    sizes: tuple[int, ...] | None = None
    batch_size: int = 32
    amp: str = "bf16"
    workers: int = 0
    device: str = "auto"
    classes: str | None = None
    labels: Path | None = None

    @classmethod
    def make(cls, *, tta: int | str | Sequence[str] | None = None, sizes: Sequence[int] | None = None,
             batch_size: int | None = None, amp: str | None = None, workers: int | None = None,
             device: str | None = None, classes: str | None = None,
             labels: str | Path | None = None) -> PredictOptions:
        """Validated options, None meaning the field's default above (the one place the defaults live);
        an error is one line naming the argument (`tta=9`; the command line checks its flags itself)."""
        from hpa.core.runtime import AMP_MODES
        from hpa.core.values import count
        from hpa.data.class_sets import KAGGLE2018

        d = cls()
        tta = d.tta if tta is None else tta
        batch_size = d.batch_size if batch_size is None else batch_size
        amp, workers = d.amp if amp is None else amp, d.workers if workers is None else workers
        device = d.device if device is None else device
        views = parse_tta(tta, "tta")
        if amp not in AMP_MODES:
            raise ConfigError(f"amp={amp!r}: choose from {', '.join(AMP_MODES)}")
        sides = tuple(count("sizes", s, 8) for s in sizes) if sizes else None
        if classes not in (None, KAGGLE2018):
            raise ConfigError(f"classes={classes!r}: the one class set other sets map onto is {KAGGLE2018!r}")
        return cls(views, sides, count("batch_size", batch_size, 1), amp, count("workers", workers, 0), str(device),
                   classes, Path(labels) if labels is not None else None)

    def torch_device(self) -> torch.device:
        from hpa.core.runtime import pick_device

        return pick_device(self.device)


def raw_working_side(directory: Path, sample_id: str, size: int) -> int:
    """The working side a raw sample will have, from its red channel's header."""
    from PIL import Image

    with Image.open(stain_files(directory, sample_id)["red"]) as im:
        return working_side(max(im.size), size)


def check_raw_sample(directory: Path, sample_id: str) -> str | None:
    """Why a raw sample cannot be predicted (a missing, empty or unreadable channel file, or
    channels of different sizes), from the files' headers; None when it can be read."""
    from PIL import Image

    try:
        files = stain_files(directory, sample_id)
    except SampleError as e:
        return str(e)
    sizes = {}
    for color, path in files.items():
        if not path.is_file():
            return f"{path}: channel file not found"
        if path.stat().st_size == 0:
            return f"{path}: empty file (0 bytes)"
        try:
            with Image.open(path) as im:
                sizes[color] = im.size
        except Exception as e:  # any decoder error: the file is not an image PIL can read
            return f"{path}: unreadable image ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    if len(set(sizes.values())) > 1:
        return f"{files['red']}: channels differ in size ({sizes})"
    try:
        check_side(files["red"], sizes["red"][1], sizes["red"][0])
    except SampleError as e:
        return str(e)
    return None


class ImageSet(Dataset):
    """Whole images at their stored side (prepared storage) or their working side (raw files,
    resized once by the prepare rule, or through the sides `resize` a published model's own loader
    used), times `scale` for multi-size TTA. Raw samples are checked
    (check_raw_sample) before they get here; one whose pixels still fail to decode comes back as
    zeros of its header's side with the reason, so one bad file does not stop the others."""

    def __init__(self, ids: list[str], size: int, scale: float = 1.0, store: Path | list[Path] | None = None,
                 raw_dir: Path | None = None, resize: tuple[int, ...] = ()):
        self.ids, self.size, self.scale, self.raw_dir, self.resize = ids, size, scale, raw_dir, tuple(resize)
        self.store = [Path(store)] * len(ids) if isinstance(store, str | Path) else store  # one per sample

    def sides(self) -> list[int]:
        if self.store:
            return [stored_side(layout.prepared_path(s, i)) for s, i in zip(self.store, self.ids)]
        if self.resize:
            return [self.resize[-1]] * len(self.ids)
        return [raw_working_side(self.raw_dir, i, self.size) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        sid = self.ids[i]
        if self.store:
            img = read_prepared(self.store[i], sid)
        else:
            try:
                img = pad_to_square(read_sample(self.raw_dir, sid))
                img = resize_through(img, self.resize) if self.resize else resize_to_working_side(img, self.size)
            except SampleError as e:
                side = max(8, round((self.resize[-1] if self.resize else
                                     raw_working_side(self.raw_dir, sid, self.size)) * self.scale))
                return torch.zeros(4, side, side), str(e), i
        if self.scale != 1.0:
            side = max(8, round(img.shape[0] * self.scale))
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < img.shape[0] else
                             cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0), "", i


@dataclass
class LoadedRun:
    run_dir: Path
    model: torch.nn.Module
    cfg: TrainConfig
    provenance: dict = field(default_factory=dict)
    epoch: int = 0


def require_best(run_dir: Path) -> Path:
    """A run's best.pt, or one line saying to train that fold (checked for every fold before any is loaded)."""
    best = layout.run_file(run_dir, "best")
    if not best.is_file():
        raise RunError(f"{best.absolute()} not found; train that fold first (train_fold.py)")
    return best


def load_run(run_dir: Path, device: torch.device, want: tuple[str, int, int] | None = None) -> LoadedRun:
    """A run's best model, built from the config saved in its checkpoint (never today's configs/).
    `want`: the (arch, size, fold) the caller asked for, which the checkpoint must be of: a file is
    not trusted for the folder it sits in."""
    ck = load_checkpoint(layout.run_file(run_dir, "best"), "train that fold again (train_fold.py --overwrite)",
                         mmap=True)
    try:
        cfg = TrainConfig(**ck["config"])
    except Exception as e:
        raise CheckpointError(f"{layout.run_file(run_dir, 'best')}: its saved config is not valid today "
                              f"({' '.join(str(e).split())[:200]})") from None
    if want is not None and (cfg.arch, cfg.size, cfg.fold) != tuple(want):
        raise CheckpointError(f"{layout.run_file(run_dir, 'best')}: is a checkpoint of {cfg.arch}_{cfg.size} fold "
                              f"{cfg.fold}, not of {want[0]}_{want[1]} fold {want[2]} (copied from another run?); put "
                              "the right file there or train that fold (train_fold.py)")
    model = model_for_prediction(cfg.arch, cfg.model, ck["model"], device, cfg.channels_last,
                                 layout.run_file(run_dir, "best"))
    return LoadedRun(run_dir, model, cfg, ck.get("provenance") or {}, int(ck["epoch"]))


def model_for_prediction(arch: str, settings: dict, state: dict, device: torch.device,
                         channels_last: bool, source: str | Path = "") -> torch.nn.Module:
    """A network built from its saved settings with its weights, on `device`, in eval mode, in the
    memory layout it was trained in (a run's best.pt and a bundle's safetensors both come here).
    Weights that do not fit the network this toolkit builds from those settings (another arch's under
    this name, or another version's layer names or shapes) are one line naming `source`."""
    try:
        model = build_model(arch, **settings)
    except TypeError as e:  # a setting another version of the toolkit had (or has not yet)
        raise CheckpointError(f"{source or arch}: its model settings do not build a {arch} network in this toolkit "
                              f"({' '.join(str(e).split())[:160]}): another toolkit version's file") from None
    try:
        if not isinstance(state, dict):
            raise TypeError(f"the weights are a {type(state).__name__}, not a state dict")
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:  # torch lists every key; the first says enough
        keys, state = model.state_dict(), state if isinstance(state, dict) else {}
        missing = sorted(set(keys) - set(state))
        extra = sorted(set(state) - set(keys))
        shaped = [k for k in keys if k in state and tuple(getattr(state[k], "shape", ())) != tuple(keys[k].shape)]
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(extra)} unexpected (e.g. "
                f"{extra[0]})" if extra else f"{len(shaped)} of other shapes (e.g. {shaped[0]})" if shaped else
                " ".join(str(e).split())[:160])  # one line, whatever torch printed
        raise CheckpointError(f"{source or arch}: its weights do not fit the {arch} network this toolkit builds from "
                              f"its settings ({what}): another arch's or another toolkit version's file") from None
    model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def view_sum(models: Sequence[torch.nn.Module], x: torch.Tensor, tta: Sequence[str], amp: str,
             device: torch.device) -> torch.Tensor:
    """The sum of sigmoid probabilities (B x classes) over models and dihedral views of a batch, each
    pass at the precision `amp`: what prediction averages (folder images, stores, cell crops)."""
    acc = 0
    for model in models:
        for name in tta:
            with autocast(device, amp):
                acc = acc + torch.sigmoid(model(dihedral(x, name)).float())
    return acc


@torch.no_grad()
def predict(models: Sequence[torch.nn.Module], ids: list[str], size: int, opts: PredictOptions, desc: str,
            **source) -> tuple[np.ndarray, dict[str, str]]:
    """Mean sigmoid probability over models x sizes x TTA transforms (N x the models' classes), and the samples
    that could not be read, with the reason (raw images only; their rows are zeros). `size` is the
    runs' base size; `opts.sizes` (default: [size]) are inference sides for images stored at `size`,
    other stored sides being scaled alike, so a 1024 px sample of a 768 run is seen whole at 1024.
    Batches hold images of one side."""
    sizes, tta, amp, batch_size, workers = list(opts.sizes or [size]), opts.tta, opts.amp, opts.batch_size, opts.workers
    device = opts.torch_device()
    total = None  # N x the width of the models' output (28, or a published model's class set)
    failed: dict[str, str] = {}
    sides = None
    for s in sizes:
        ds = ImageSet(ids, size, s / size, **source)
        sides = sides if sides is not None else ds.sides()
        sampler = SideBatchSampler(sides, batch_size, shuffle=False, drop_last=False)
        dl = DataLoader(ds, batch_sampler=sampler, **loader_processes(workers, ds))
        for x, errors, index in progress(dl, desc=f"{desc} @{s}", leave=False):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            acc = view_sum(models, x, tta, amp, device)
            total = np.zeros((len(ids), acc.shape[1])) if total is None else total
            total[index.numpy()] += acc.cpu().numpy()
            failed.update({ids[int(k)]: e for k, e in zip(index, errors) if e})
    if total is None:  # no images
        total = np.zeros((len(ids), NUM_CLASSES))
    return total / (len(sizes) * len(models) * len(tta)), failed


def find_image_ids(directory: Path) -> tuple[list[str], dict[str, str]]:
    """Sample Ids of every sample with a red stain file in `directory` (stain suffix and extension
    in any case, hpa.data.images.stain_files), and what was skipped: names that are not a safe Id,
    sub-folders holding images (listed, not searched)."""
    if not Path(directory).is_dir():
        raise ConfigError(f"--images {directory}: no such directory")
    ids, skipped = set(), {}
    for p in sorted(Path(directory).iterdir()):
        if p.is_dir() and not p.name.startswith(".") and any(STAIN_FILE.match(q.name) for q in p.iterdir()):
            skipped[f"{p.name}/"] = f"{p}: a sub-folder of images, not searched; predict it with --images {p}"
    for (sid, color), names in stain_index(Path(directory), fresh=True).items():
        if color != "red":
            continue
        try:
            ids.add(validate_id(sid))
        except LabelError as e:
            skipped[names[0]] = str(e)
    return sorted(ids), skipped


@dataclass
class PredictionSet:
    """Prediction files of one stage (hpa.data.predictions' contract) with their sidecars, written
    together by `write_all`."""
    files: dict[Path, str] = field(default_factory=dict)  # path -> text

    def add(self, path: Path, ids: list[str], probs: np.ndarray, sidecar: dict | None = None) -> None:
        self.files[Path(path)] = csv_text(predictions_frame(path, ids, probs))
        if sidecar is not None:
            self.files[layout.sidecar_path(path)] = json.dumps(sidecar, indent=1)

    def write_all(self) -> list[Path]:
        from hpa.core.atomic import atomic_outputs

        with atomic_outputs() as tmp:
            for path, text in self.files.items():
                tmp(path).write_text(text)
        return [p for p in self.files if layout.is_prediction(p)]


def producer(run: LoadedRun, fold: int, sizes: Sequence[int], tta: Sequence[str], amp: str) -> dict:
    """What makes a fold's predictions what they are: the checkpoint (by content and epoch) and the
    test-time settings. OOF and test files of one model must share it; a file whose producer
    differs from today's runs and settings is stale."""
    ck = layout.run_file(run.run_dir, "best")
    return {"fold": fold, "checkpoint_sha256": file_sha256(ck), "epoch": run.epoch, "sizes": list(sizes),
            "tta": list(tta), "amp": amp}


def predict_folds(runs: Path, arch: str, size: int, folds: Sequence[int], out_dir: Path, opts: PredictOptions, *,
                  data_dir: Path | None = None) -> PredictionSet:
    """OOF and test predictions of each fold's run, after checking that the labels and folds are
    those the run was trained on. Nothing is written: the caller writes the set once it is complete.
    Each file's sidecar records its provenance by content: the labels and folds, the Ids the folds
    cover, and what produced it (`producer`)."""
    run_dirs = [layout.run_dir(runs, arch, size, f) for f in folds]
    for r in run_dirs:
        require_best(r)
    out = PredictionSet()
    device = opts.torch_device()
    sizes, tta, amp = opts.sizes, opts.tta, opts.amp
    common = dict(size=size, opts=opts)
    for fold, run_dir in zip(folds, run_dirs):
        run = load_run(run_dir, device, (arch, size, fold))
        root = Path(data_dir) if data_dir is not None else Path(run.cfg.data_dir)
        folds_csv = layout.folds_csv(root, run.cfg.folds_csv if data_dir is None else None)
        check_provenance(run_dir, run.provenance, root, folds_csv)
        fold_of = read_folds(folds_csv)
        val_ids = [validate_id(i) for i, f in fold_of.items() if f == fold]
        tables = read_label_tables([root / n for n in run.provenance["labels"]])
        store_of = dict(zip(tables["Id"], layout.stores_of(root, run.cfg.size, tables["table"])))
        folded = sorted(i for i, f in fold_of.items() if f >= 0)
        sidecar = {"arch": arch, "size": size, "labels": run.provenance["labels"],
                   "folds_sha256": run.provenance["folds_sha256"], "folded_ids_sha256": ids_sha256(folded),
                   "n_folded": len(folded), "producer": producer(run, fold, sizes or [size], tta, amp)}
        probs, _ = predict([run.model], val_ids, desc=f"f{fold} oof", store=[store_of[i] for i in val_ids], **common)
        if not np.isfinite(probs).all():
            raise RunError(f"{run_dir}: the model predicts NaN or infinite probabilities (the run diverged); retrain "
                           "it with a lower --lr or --grad-clip")
        out.add(layout.prediction_path(out_dir, arch, size, fold, "oof"), val_ids, probs,
                {**sidecar, "kind": "oof"})
        test_csv = layout.split_table(root, "test")
        if test_csv.is_file():
            test_ids = read_ids(test_csv)
            probs, _ = predict([run.model], test_ids, desc=f"f{fold} test",
                               store=layout.prepared_dir(root, run.cfg.size, "test"), **common)
            out.add(layout.prediction_path(out_dir, arch, size, fold, "test"), test_ids, probs,
                    {**sidecar, "kind": "test", "test_ids_sha256": ids_sha256(test_ids)})
    return out


def predicted_names(pred: np.ndarray, names: Sequence[str] = CLASS_NAMES) -> list[str]:
    return ["; ".join(names[k] for k in np.flatnonzero(p)) for p in pred]
