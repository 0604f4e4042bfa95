"""An ensemble as prediction sees it: members (an arch at a size, one model per fold, its TTA and
test-time sizes), the blend's weights and space, and per-class thresholds. It is built from a
recipe output (its blend.json and the runs behind the blended files), from runs of one arch
(`predict_tta.py --images`), or from a bundle (hpa.prediction.bundle), and predicts and explains any images
the way the blend combined the members' test predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpa.data import layout
from hpa.data.labels import CLASS_NAMES, NUM_CLASSES
from hpa.errors import RunError
from hpa.prediction.inference import PredictOptions


@dataclass
class Member:
    """One arch at one size: a model per fold, averaged over folds, TTA views and `sizes`."""
    name: str  # <arch>_<size>
    size: int
    models: list[nn.Module]
    tta: tuple[str, ...]
    sizes: list[int]
    amp: str
    folds: list[int] = field(default_factory=list)
    configs: list = field(default_factory=list)  # each fold's TrainConfig
    provenances: list[dict] = field(default_factory=list)  # each fold's training data (its checkpoint's)
    resize: tuple[int, ...] = ()  # a published model's own resizing of raw images (else the working-side rule)


@dataclass
class Ensemble:
    members: list[Member]
    weighting: str  # a WEIGHTINGS name of hpa.prediction.blending: equal, logit, greedy, bagged
    weights: np.ndarray  # one per member
    thresholds: np.ndarray  # one per class
    source: str = ""  # where it came from, as a report names it
    classes: tuple[str, ...] = CLASS_NAMES  # the class set the members predict, in their order

    def combine(self, member_probs: list[np.ndarray]) -> np.ndarray:
        from hpa.prediction.blending import Blend

        return Blend(self.weighting, "", np.asarray(self.weights), self.thresholds).combine(member_probs)


def _member_from_runs(runs: Path, arch: str, size: int, folds: Sequence[int], device: torch.device,
                      opts: PredictOptions, checkpoints: dict[int, str] | None = None) -> Member:
    from hpa.core.digests import file_sha256
    from hpa.prediction.inference import load_run, require_best

    models, configs, provenances = [], [], []
    for f in folds:
        run_dir = layout.run_dir(runs, arch, size, f)
        best = require_best(run_dir)
        if checkpoints and file_sha256(best) != checkpoints[f]:
            raise RunError(f"{best}: is not the checkpoint the blend's predictions were made with (retrained "
                           "since); predict and blend again (run_all.sh does both)")
        run = load_run(run_dir, device, (arch, size, f))
        models.append(run.model)
        configs.append(run.cfg)
        provenances.append(run.provenance)
    return Member(f"{arch}_{size}", size, models, tuple(opts.tta), list(opts.sizes or [size]), opts.amp, list(folds),
                  configs, provenances)


def from_runs(runs: Path, arch: str, size: int, folds: Sequence[int], device: torch.device, opts: PredictOptions,
              thresholds: np.ndarray | None = None) -> Ensemble:
    """The folds of one arch as a one-member ensemble with the TTA, sizes and precision of `opts`
    (thresholds 0.5 unless given)."""
    m = _member_from_runs(runs, arch, size, folds, device, opts)
    thr = np.full(NUM_CLASSES, 0.5) if thresholds is None else np.asarray(thresholds, float)
    return Ensemble([m], "equal", np.ones(1), thr, f"runs: {Path(runs).absolute()} ({arch}_{size}, folds "
                    f"{' '.join(map(str, folds))})")


def from_recipe(out_dir: Path, device: torch.device) -> Ensemble:
    """The ensemble a recipe's blend made: blend.json's members, weights and thresholds, each
    member's folds, TTA, sizes and precision from the sidecars of the test files the blend read,
    and the runs whose checkpoints (by content) produced them."""
    from hpa.prediction.blending import read_blend_summary, read_sidecars

    out_dir = Path(out_dir)
    blend_json = layout.blend_summary(out_dir)
    summary = read_blend_summary(blend_json)
    members = []
    for name in summary["models"]:
        files = [blend_json.parent / p for p in summary["test_files"][name]]
        sides = read_sidecars(files)
        lost = [f for f in files if f not in sides]
        if lost:  # a fold without its record would be dropped or guessed: refused instead
            raise RunError(f"{layout.sidecar_path(lost[0])}: the record of a file the blend read ({name}) is "
                           "missing; predict that fold again (predict_tta.py) and blend again")
        made = [s["producer"] for s in sides.values()]
        if any("frozen" in p for p in made):
            raise RunError(f"{blend_json}: member {name} is a head on frozen embeddings, which an image ensemble "
                           "cannot run yet; blend without it (blend.py) to predict or export images")
        arch, size = sides[files[0]]["arch"], int(sides[files[0]]["size"])
        opts = PredictOptions(tuple(made[0]["tta"]), made[0]["sizes"] and tuple(made[0]["sizes"]), amp=made[0]["amp"])
        members.append(_member_from_runs(layout.recipe_runs(out_dir), arch, size, [p["fold"] for p in made], device,
                                         opts, {p["fold"]: p["checkpoint_sha256"] for p in made}))
    return Ensemble(members, summary["weighting"], np.asarray(summary["weights"], float),
                    np.asarray(summary["thresholds"], float), f"recipe output {out_dir}")


def predict_ensemble(ens: Ensemble, ids: list[str], *, device: torch.device, batch_size: int, workers: int = 0,
                     **source) -> tuple[np.ndarray, dict[str, str]]:
    """Blended probabilities (N x 28) of the samples, and those that could not be read (with the
    reason). `source`: `raw_dir=` a folder of images, or `store=` a prepared store."""
    from hpa.prediction.inference import predict

    per_member, failed = [], {}
    for m in ens.members:
        opts = PredictOptions(tuple(m.tta), m.sizes and tuple(m.sizes), batch_size, m.amp, workers, str(device))
        p, bad = predict(m.models, ids, m.size, opts, m.name, resize=m.resize, **source)
        per_member.append(p)
        failed.update(bad)
    return ens.combine(per_member), failed


def ensemble_maps(ens: Ensemble, ids: list[str], classes: dict[str, list[int]], side: int, *, batch_size: int,
                  raw_dir: Path) -> dict[str, np.ndarray]:
    """Grad-CAM maps per sample (len(classes[id]) x side x side, each in [0, 1]), averaged over each
    member's folds and TTA views (hpa.prediction.explain.tta_cam), then over the members with the blend's
    weights, each member's map resized to `side` from the side that member sees the image at (its
    base size: multi-size TTA passes are not repeated for maps)."""
    import cv2

    from hpa.data.sampling import SideBatchSampler
    from hpa.prediction.explain import normalise, tta_cam
    from hpa.prediction.inference import ImageSet

    w = np.asarray(ens.weights, float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
    out = {i: np.zeros((len(classes[i]), side, side), np.float32) for i in ids}
    for m, wm in zip(ens.members, w):
        ds = ImageSet(ids, m.size, raw_dir=raw_dir, resize=m.resize)
        # batches of one side, as prediction forms them (a 3072 px source is seen larger)
        for batch in SideBatchSampler(ds.sides(), batch_size, shuffle=False, drop_last=False):
            x = torch.stack([ds[i][0] for i in batch])
            gids = [ids[i] for i in batch]
            for k in sorted({k for i in gids for k in classes[i]}):
                rows = [r for r, i in enumerate(gids) if k in classes[i]]
                cams = tta_cam(m.models, x[rows], [k], m.tta)[:, 0].numpy()
                for r, cam in zip(rows, cams):
                    sid = gids[r]
                    # each member's map on its own scale first: Grad-CAM magnitudes of different
                    # archs are not comparable, their blend weights are
                    out[sid][classes[sid].index(k)] += wm * normalise(
                        cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR))
    return {i: normalise(v) for i, v in out.items()}
