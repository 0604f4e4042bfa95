"""The engine end to end, in-process and fast: the Python API prepares a tiny dataset, makes folds,
trains tiny_cnn on two folds, predicts with TTA and blends. A broken train step, prediction or blend
fails here, in the fast tier. Expected values come from independent computations (a hand-written
forward pass over the dihedral group, scikit-learn's F1, hashlib), never from the code under test."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

import hpa
from hpa.config import TrainConfig
from hpa.core.checkpoint import load_checkpoint
from hpa.data import layout
from hpa.data.arrays import read_prepared
from hpa.models import build_model


@pytest.fixture(scope="module")
def trained(small_data, tiny_runs, tmp_path_factory):
    root, data = tmp_path_factory.mktemp("api"), small_data
    runs = [layout.run_dir(tiny_runs, "tiny_cnn", 32, f) for f in (0, 1)]
    files = hpa.predict("tiny_cnn", size=32, folds=[0, 1], runs=tiny_runs, out_dir=root / "preds", tta=2,
                        amp="off", device="cpu")
    return root, data, runs, files


def test_training_steps_change_the_weights_and_record_every_step(trained):
    root, data, runs, _ = trained
    ck = load_checkpoint(runs[0] / "last.pt")
    cfg = TrainConfig(**ck["config"])
    torch.manual_seed(cfg.seed)  # the same initial weights as the run (seed_everything before build_model)
    init = build_model("tiny_cnn", **cfg.model).state_dict()
    moved = [k for k, v in ck["model"].items() if v.dtype.is_floating_point and not torch.equal(v, init[k])]
    assert len(moved) >= len([v for v in init.values() if v.dtype.is_floating_point]) // 2
    # one LR entry per optimizer step: 2 epochs of ceil(training samples / 16) side-bucketed batches
    log = pd.read_csv(runs[0] / "log.csv")
    assert list(log["epoch"]) == [1, 2] and np.isfinite(log["train_loss"]).all()
    n_train = ck["provenance"]["n_train"]
    assert len(ck["lr_steps"]) >= 2 * -(-n_train // 16) - 2  # oversampling can only add samples
    assert int(ck["optimizer"]["state"][0]["step"]) == len(ck["lr_steps"])


def test_predictions_are_the_mean_over_the_dihedral_transforms_of_the_best_model(trained):
    root, data, runs, files = trained
    assert sorted(p.name for p in files) == [f"tiny_cnn_32_f{f}_{k}.csv" for f in (0, 1) for k in ("oof", "test")]
    ck = load_checkpoint(runs[1] / "best.pt")
    cfg = TrainConfig(**ck["config"])
    model = build_model("tiny_cnn", **cfg.model)
    model.load_state_dict(ck["model"])
    model.eval()
    test = pd.read_csv(root / "preds" / "tiny_cnn_32_f1_test.csv")
    ids = test["Id"].tolist()[:4]
    x = torch.stack([torch.from_numpy(read_prepared(layout.prepared_dir(data, 32, "test"), i))
                     .permute(2, 0, 1).float() / 255 for i in ids])
    with torch.no_grad():  # TTA 2 = identity and horizontal flip, written out by hand
        want = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(3)))).numpy() / 2
    np.testing.assert_allclose(test.iloc[:4, 1:].to_numpy(), want, atol=1e-5)
    side = json.loads((root / "preds" / "tiny_cnn_32_f1_test.json").read_text())
    assert side["producer"]["checkpoint_sha256"] == hashlib.sha256((runs[1] / "best.pt").read_bytes()).hexdigest()
    assert side["producer"]["tta"] == ["id", "hflip"]
    oof_ids = set(pd.read_csv(root / "preds" / "tiny_cnn_32_f1_oof.csv")["Id"])
    folds = pd.read_csv(data / "folds.csv")
    assert oof_ids == set(folds.loc[folds["fold"] == 1, "Id"])


def test_blend_scores_agree_with_scikit_learn(trained, tmp_path):
    root, data, _, _ = trained
    out = tmp_path / "sub" / "submission.csv"
    s = hpa.blend(str(root / "preds" / "*_oof.csv"), str(root / "preds" / "*_test.csv"), data_dir=data, out=out,
                  method="exact", weights="equal")
    oof = pd.concat([pd.read_csv(root / "preds" / f"tiny_cnn_32_f{f}_oof.csv") for f in (0, 1)])
    labels = pd.read_csv(data / "train.csv").set_index("Id").loc[oof["Id"], "Target"]
    y = np.zeros((len(oof), 28), int)
    for r, t in enumerate(labels):
        y[r, [int(c) for c in str(t).split()]] = 1
    pred = oof.iloc[:, 1:].to_numpy() >= np.array(s["thresholds"])
    assert s["oof_macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-9)
    sub = pd.read_csv(out, keep_default_na=False)
    assert sub["Id"].tolist() == pd.read_csv(data / "sample_submission.csv")["Id"].tolist()
    assert {p.name for p in out.parent.iterdir()} == {"submission.csv", "report.md", "report.png", "blend.json"}


def test_thresholds_api_matches_the_blend_of_one_model(trained):
    root, data, _, _ = trained
    fit = hpa.fit_thresholds(str(root / "preds" / "tiny_cnn_32_f*_oof.csv"), data_dir=data, method="exact")
    assert fit.thresholds.shape == (28,) and len(fit.table) == 28
    assert fit.summary["n_samples"] == sum(len(pd.read_csv(root / "preds" / f"tiny_cnn_32_f{f}_oof.csv"))
                                           for f in (0, 1))


def test_best_pt_holds_the_best_epoch_and_an_improving_last_epoch_shares_its_file(small_data, tiny_runs, tmp_path):
    from conftest import TINY_RUN_SETTINGS
    from hpa.core.atomic import atomic_hard_link
    from hpa.core.checkpoint import save_checkpoint

    one_epoch = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path / "runs",
                               echo=lambda _: None, **{**TINY_RUN_SETTINGS, "epochs": 1})  # epoch 1 always improves
    for run in [one_epoch] + [layout.run_dir(tiny_runs, "tiny_cnn", 32, f) for f in (0, 1)]:
        log = pd.read_csv(run / "log.csv")
        best_epoch = int(log.loc[log["val_macro_f1"].idxmax(), "epoch"])  # the first of equal scores
        best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
        assert best["epoch"] == best_epoch and last["epoch"] == len(log)
        same_file = (run / "best.pt").stat().st_ino == (run / "last.pt").stat().st_ino
        assert same_file == (best_epoch == len(log)), run
    tmp_path = tmp_path / "links"
    tmp_path.mkdir()
    # the link is a second name: a later atomic write of last.pt leaves best.pt as it was
    save_checkpoint(tmp_path / "best.pt", {"model": {"w": torch.ones(2)}, "config": {}, "epoch": 1})
    assert atomic_hard_link(tmp_path / "best.pt", tmp_path / "last.pt")
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(2)}, "config": {}, "epoch": 2})
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
