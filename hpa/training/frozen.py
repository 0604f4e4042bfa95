"""Classifiers on frozen-encoder embeddings (hpa.prediction.embeddings), per fold, in seconds: the paper's
buffering head (FC -> ReLU -> BatchNorm -> Dropout -> 28, the same head a fine-tuned network has,
on the same features), or a logistic regression baseline (one L2-regularised logistic regression
per class, scikit-learn's objective, solved with L-BFGS on all classes at once). Each writes OOF
and test prediction files with the same names and sidecars as a trained member's, so thresholds,
blending and reports take them unchanged.

The head trains on one random dihedral view of each sample per epoch (the views are its
augmentation) and predicts the mean probability over the views (its TTA); the logistic
regression sees each sample's mean embedding over the views.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from hpa.config import LOSSES
from hpa.core.digests import file_sha256, ids_sha256
from hpa.data import layout
from hpa.data.labels import NUM_CLASSES, labels_matrix, read_folds, read_label_tables
from hpa.errors import ConfigError, RunError
from hpa.models.heads import buffering_head
from hpa.prediction.embeddings import Encoder, embed_dataset, read_embeddings, read_provenance
from hpa.prediction.inference import PredictOptions
from hpa.training.losses import build_loss

KINDS = ("head", "logreg")


class FrozenSettings(BaseModel):
    """A frozen member's settings (its `set` in a recipe)."""

    model_config = ConfigDict(extra="forbid")
    pretrained: str = Field("none", description="encoder weights: named HPA weights, imagenet, none or a file")
    accept_licence: bool = False
    amp: Literal["off", "bf16"] = Field("off", description="precision of the embedding pass")
    tta: int = Field(8, ge=1, le=8, description="dihedral views embedded per image")
    seed: int = 0
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(256, ge=2)
    head_hidden: list[int] = Field(default_factory=lambda: [1024])
    head_dropout: list[float] = Field(default_factory=lambda: [0.5])
    loss: Literal[LOSSES] = "bce"
    C: float = Field(1.0, gt=0, description="logistic regression: inverse L2 strength, as scikit-learn's C")


def frozen_settings(values: dict, where: str) -> FrozenSettings:
    try:
        return FrozenSettings(**values)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{where}: setting {'.'.join(map(str, err['loc']))}: {err['msg']} "
                          f"(frozen members take: {', '.join(FrozenSettings.model_fields)})") from None


class Standardize(nn.Module):
    """Features to zero mean, unit variance with the training fold's statistics."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def feature_stats(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over samples and views of an (N, V, D) array, in float64 by chunks."""
    s, s2, n = 0.0, 0.0, 0
    for k in range(0, len(x), 4096):
        c = np.asarray(x[k:k + 4096], dtype=np.float64).reshape(-1, x.shape[-1])
        s, s2, n = s + c.sum(0), s2 + (c * c).sum(0), n + len(c)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0)) + 1e-6
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def train_head(x: np.ndarray, y: np.ndarray, st: FrozenSettings, device: torch.device, seed: int) -> nn.Module:
    """The paper's head on (N, V, D) embeddings: AdamW, cosine LR, one random view per sample per epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = nn.Sequential(Standardize(*feature_stats(x)),
                         buffering_head(x.shape[-1], st.head_hidden, st.head_dropout, NUM_CLASSES)).to(device)
    loss_fn = build_loss(st.loss, y.sum(0) + 1).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=st.lr, weight_decay=st.weight_decay)
    steps = st.epochs * max(1, len(x) // st.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt = torch.from_numpy(np.asarray(x))  # float16 in memory: 105k x 8 x 2304 is 3.9 GB
    yt = torch.from_numpy(y.astype(np.float32))
    head.train()
    for _ in range(st.epochs):
        order = rng.permutation(len(x))
        for k in range(0, len(order) - st.batch_size + 1, st.batch_size):  # full batches (BatchNorm)
            idx = torch.from_numpy(order[k:k + st.batch_size])
            views = torch.from_numpy(rng.integers(0, x.shape[1], len(idx)))
            xb = xt[idx, views].float().to(device)
            loss = loss_fn(head(xb), yt[idx].to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def predict_head(head: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Mean sigmoid over the views (N x 28)."""
    out = np.zeros((len(x), NUM_CLASSES))
    for k in range(0, len(x), 4096):
        c = torch.from_numpy(np.asarray(x[k:k + 4096], dtype=np.float32)).to(device)
        out[k:k + len(c)] = torch.sigmoid(head(c.flatten(0, 1))).view(len(c), c.shape[1], -1).mean(1).cpu().numpy()
    return out


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, device: torch.device, max_iter: int = 200,
               dtype: torch.dtype = torch.float32) -> nn.Linear:
    """One logistic regression per class on (N, D) features: minimises C x sum of log-losses +
    |w|^2 / 2 per class (scikit-learn's objective; the intercept is not penalised). The classes are
    independent, so one L-BFGS run over all of them solves each one's problem."""
    xt = torch.as_tensor(x, dtype=dtype, device=device)
    yt = torch.as_tensor(y, dtype=dtype, device=device)
    lin = nn.Linear(x.shape[1], y.shape[1], dtype=dtype).to(device)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = c * nn.functional.binary_cross_entropy_with_logits(lin(xt), yt, reduction="sum") \
            + 0.5 * (lin.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.float()


def view_mean(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(x[k:k + 4096], dtype=np.float32).mean(1) for k in range(0, len(x), 4096)])


class Labelled:
    """The labelled samples' embeddings in label-table order, their targets and folds."""

    def __init__(self, data_dir: Path, store: Path):
        tables = layout.label_tables(data_dir)
        labels = read_label_tables(tables)
        self.tables, self.ids, self.y = tables, labels["Id"].tolist(), labels_matrix(labels)
        splits = [read_embeddings(store, s) for s in layout.LABELLED_SPLITS[:len(tables)]]
        where = {i: (k, r) for k, (ids, _) in enumerate(splits) for r, i in enumerate(ids)}
        missing = [i for i in self.ids if i not in where]
        if missing:
            raise RunError(f"{store}: {len(missing)} labelled samples are not embedded, e.g. {missing[0]!r}; embed "
                           "again")
        # one copy in memory, in label-table order, read split by split from the memory-mapped arrays
        self.x = np.empty((len(self.ids), *splits[0][1].shape[1:]), np.float16)
        for k, (_, arr) in enumerate(splits):
            pos = [p for p, i in enumerate(self.ids) if where[i][0] == k]
            self.x[pos] = arr[[where[self.ids[p]][1] for p in pos]]
        self.folds_csv = layout.folds_csv(data_dir)
        fold_of = read_folds(self.folds_csv)
        self.fold = np.array([fold_of.get(i, -1) for i in self.ids])


def member_tag(enc: Encoder, kind: str) -> str:
    """The `<arch>` part of a frozen member's prediction files."""
    return f"{enc.key}-{kind}"


def producer(enc: Encoder, store: Path, kind: str, st: FrozenSettings, fold: int, prov: dict | None = None) -> dict:
    """What makes a fold's predictions what they are (the sidecar's `producer`); `prov`: the store's
    provenance when the caller has read it already."""
    prov = prov or read_provenance(store)
    head = st.model_dump(include={"seed", "epochs", "lr", "weight_decay", "batch_size", "head_hidden",
                                  "head_dropout", "loss"} if kind == "head" else {"C"})
    return {"fold": fold, "encoder": enc.key, "encoder_sha256": prov["encoder_sha256"], "frozen": kind,
            "settings": head, "sizes": [enc.size], "tta": list(enc.views), "amp": enc.amp}


def run_frozen(data_dir: Path, enc: Encoder, kind: str, st: FrozenSettings, folds: list[int], preds: Path, *,
               opts: PredictOptions | None = None, echo=print) -> list[Path]:
    """Embed (once, resumably, with the batch size, loader processes and device of `opts`), then train
    `kind` on every fold; writes OOF and test files."""
    from hpa.data.labels import read_ids
    from hpa.prediction.inference import PredictionSet

    opts = opts or PredictOptions()
    device = opts.torch_device()
    if kind not in KINDS:
        raise ConfigError(f"frozen: {kind!r}; choose from {', '.join(KINDS)}")
    store = embed_dataset(data_dir, enc, batch_size=opts.batch_size, device=device, workers=opts.workers, echo=echo)
    tag = member_tag(enc, kind)
    if frozen_current(data_dir, enc, store, kind, st, folds, preds):
        echo(f"== predictions of {tag}_{enc.size} are up to date")
        return []
    lab = Labelled(data_dir, store)
    test_ids, test_x = read_embeddings(store, "test")
    if test_ids != read_ids(layout.split_table(data_dir, "test")):
        raise RunError(f"{store}: its test embeddings are of other Ids than {layout.split_table(data_dir, 'test')}")
    folded = sorted(i for i, f in zip(lab.ids, lab.fold) if f >= 0)
    common = {"arch": tag, "size": enc.size, "labels": {p.name: file_sha256(p) for p in lab.tables},
              "folds_sha256": file_sha256(lab.folds_csv), "folded_ids_sha256": ids_sha256(folded),
              "n_folded": len(folded)}
    out = PredictionSet()
    test_mean, mean_x = (view_mean(test_x), view_mean(lab.x)) if kind == "logreg" else (None, None)
    for f in folds:
        t0 = time.perf_counter()
        train, val = (lab.fold >= 0) & (lab.fold != f), lab.fold == f
        if kind == "head":
            head = train_head(lab.x[train], lab.y[train], st, device, st.seed + f)
            p_val, p_test = predict_head(head, lab.x[val], device), predict_head(head, test_x, device)
        else:
            mu, sd = mean_x[train].mean(0), mean_x[train].std(0) + 1e-6
            lin = fit_logreg((mean_x[train] - mu) / sd, lab.y[train], st.C, device)
            with torch.no_grad():
                p_val, p_test = (torch.sigmoid(lin(torch.from_numpy((a - mu) / sd).float().to(device))).cpu().numpy()
                                 for a in (mean_x[val], test_mean))
        if not (np.isfinite(p_val).all() and np.isfinite(p_test).all()):
            raise RunError(f"{tag} fold {f}: non-finite predictions; lower lr")
        side = {**common, "producer": producer(enc, store, kind, st, f)}
        val_ids = [i for i, v in zip(lab.ids, val) if v]
        out.add(layout.prediction_path(preds, tag, enc.size, f, "oof"), val_ids, p_val, {**side, "kind": "oof"})
        out.add(layout.prediction_path(preds, tag, enc.size, f, "test"), test_ids, p_test,
                {**side, "kind": "test", "test_ids_sha256": ids_sha256(test_ids)})
        echo(f"{tag} fold {f}: {kind} trained on {int(train.sum())} samples in {time.perf_counter() - t0:.1f} s")
    return out.write_all()


def frozen_current(data_dir: Path, enc: Encoder, store: Path, kind: str, st: FrozenSettings, folds: list[int],
                   preds: Path) -> bool:
    """Every fold's files exist and their sidecars name today's embeddings, settings and folds."""
    from hpa.prediction.blending import read_sidecars

    folds_csv = layout.folds_csv(data_dir)
    if not folds_csv.is_file():
        return False
    sha = file_sha256(folds_csv)
    tag = member_tag(enc, kind)
    prov = read_provenance(store)
    for f in folds:
        files = [layout.prediction_path(preds, tag, enc.size, f, k) for k in ("oof", "test")]
        sides = read_sidecars([p for p in files if p.is_file()])
        want = producer(enc, store, kind, st, f, prov)
        if len(sides) < 2 or any(s.get("folds_sha256") != sha or s.get("producer") != want for s in sides.values()):
            return False
    return True


def time_frozen(enc: Encoder, kind: str, st: FrozenSettings, n_train: int, device: torch.device,
                batches: int = 3) -> tuple[float, int, float]:
    """(images/s of the embedding pass under one view, feature width, seconds to train one fold's
    classifier on `n_train` samples), measured on random input: a few encoder batches, a few head
    steps (scaled to the epochs), or a logistic regression on a 2,048-sample subset (scaled linearly)."""
    from hpa.prediction.embeddings import build_encoder, embed_batch

    model, _ = build_encoder(Encoder(enc.arch, "none", enc.size, ("id",), enc.amp), device)  # timing only
    x = torch.rand(8, 4, enc.size, enc.size, device=device)
    width = embed_batch(model, x[:2], ("id",), enc.amp).shape[-1]  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        embed_batch(model, x, ("id",), enc.amp)
    ips = batches * len(x) / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    if kind == "head":
        n = 8 * st.batch_size
        xs = rng.normal(size=(n, 1, width)).astype(np.float16)
        ys = (rng.random((n, NUM_CLASSES)) > 0.9).astype(np.float32)
        t0 = time.perf_counter()
        train_head(xs, ys, st.model_copy(update={"epochs": 1}), device, 0)
        head_s = (time.perf_counter() - t0) / 8 * st.epochs * n_train / st.batch_size
    else:
        n = 2048
        xs = rng.normal(size=(n, width)).astype(np.float32)
        ys = (rng.random((n, NUM_CLASSES)) > 0.9).astype(np.float32)
        t0 = time.perf_counter()
        fit_logreg(xs, ys, st.C, device)
        head_s = (time.perf_counter() - t0) * n_train / n
    return ips, width, head_s
