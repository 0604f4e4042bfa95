"""The frozen-encoder path: embeddings (resumable, checked against the encoder run by hand), the
logistic regression against scikit-learn, the head on separable embeddings, the prediction-file
contract the blend checks, and the foundation recipe end to end under --smoke."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.core.digests import file_sha256
from hpa.data import layout
from hpa.data.arrays import read_prepared
from hpa.data.labels import read_folds, read_ids
from hpa.errors import ConfigError, RunError
from hpa.prediction import embeddings as emb
from hpa.prediction.blending import check_oof_provenance
from hpa.prediction.inference import PredictOptions, dihedral
from hpa.prediction.metrics import macro_f1
from hpa.training.frozen import FrozenSettings, fit_logreg, predict_head, run_frozen, train_head

CPU = torch.device("cpu")
QUIET = lambda _: None  # noqa: E731
ON_CPU = PredictOptions(device="cpu")


@pytest.fixture
def data(small_data, tmp_path):
    """A private copy of the session's small dataset (embeddings are written into a dataset)."""
    return shutil.copytree(small_data, tmp_path / "data")


def test_logistic_regression_is_scikit_learns():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    y = (x @ rng.normal(size=(12, 3)) + rng.normal(size=(300, 3)) > 0.5).astype(float)
    lin = fit_logreg(x, y, 0.7, CPU, max_iter=1000, dtype=torch.float64)
    for k in range(3):
        ref = LogisticRegression(C=0.7, tol=1e-10, max_iter=10_000).fit(x, y[:, k])
        assert np.abs(ref.coef_[0] - lin.weight[k].detach().numpy()).max() < 1e-4
        assert abs(ref.intercept_[0] - lin.bias[k].item()) < 1e-4


def test_head_and_logreg_learn_separable_embeddings():
    """Class k is present where feature k is high: both classifiers must find it (held-out F1 > 0.9)."""
    rng = np.random.default_rng(1)
    n, views, width = 1200, 2, 40
    y = (rng.random((n, 28)) < 0.15).astype(np.float32)
    x = rng.normal(size=(n, views, width)).astype(np.float32) * 0.3
    x[:, :, :28] += 2.0 * y[:, None, :]
    tr, te = slice(0, 900), slice(900, None)
    st = FrozenSettings(epochs=40, batch_size=64, head_hidden=[64], head_dropout=[0.1])
    head = train_head(x[tr].astype(np.float16), y[tr], st, CPU, seed=0)
    assert macro_f1(y[te], predict_head(head, x[te].astype(np.float16), CPU) > 0.5) > 0.9
    lin = fit_logreg(x[tr].mean(1), y[tr], 1.0, CPU)
    with torch.no_grad():
        p = torch.sigmoid(lin(torch.from_numpy(x[te].mean(1)))).numpy()
    assert macro_f1(y[te], p > 0.5) > 0.9


def direct_features(data, ids, split, size, views):
    """The encoder run by hand on each prepared image: what the store must hold."""
    from hpa.models import build_model

    torch.manual_seed(0)
    model = build_model("vit_tiny16", pretrained="none").eval()
    rows = []
    with torch.no_grad():
        for i in ids:
            img = read_prepared(layout.prepared_dir(data, size, split), i)
            x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255
            rows.append(torch.stack([model.features(dihedral(x, v))[0] for v in views]).numpy())
    return np.stack(rows)


def test_embedding_resumes_after_an_interrupt_and_matches_the_encoder(data, monkeypatch):
    monkeypatch.setattr(emb, "CHUNK", 16)
    calls, crashed = [], []
    real = emb.embed_batch

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3 and not crashed:  # the second chunk's first batch: the first chunk is saved
            crashed.append(1)
            raise RuntimeError("killed")  # a crash or a stop part-way
        return real(*a, **k)

    monkeypatch.setattr(emb, "embed_batch", flaky)
    enc = emb.Encoder("vit_tiny16", "none", 32, ("id", "rot90"))
    with pytest.raises(RuntimeError, match="killed"):
        emb.embed_dataset(data, enc, batch_size=8, device=CPU, echo=QUIET)
    store = layout.embeddings_dir(data, enc.key, 32)
    files = layout.embedding_files(store, "train")
    assert sorted(p.name for p in files["parts"].iterdir()) == ["00000.npy", "images.json"]  # a chunk and its owner
    assert not files["array"].exists()
    calls.clear()
    emb.embed_dataset(data, enc, batch_size=8, device=CPU, echo=QUIET)
    n_train, n_test = len(read_ids(data / "train.csv")), len(read_ids(data / "sample_submission.csv"))
    assert len(calls) == -(-(n_train - 16) // 8) + -(-n_test // 8)  # only what was not saved, plus test
    assert not files["parts"].exists()
    for split, n in (("train", n_train), ("test", n_test)):
        ids, arr = emb.read_embeddings(store, split)
        table = "train.csv" if split == "train" else "sample_submission.csv"
        assert ids == read_ids(data / table) and arr.shape == (n, 2, 3 * 192) and arr.dtype == np.float16
        ref = direct_features(data, ids, split, 32, enc.views)
        assert np.allclose(arr, ref, atol=2e-2, rtol=1e-2)
    prov = json.loads(layout.embedding_provenance(store).read_text())
    assert prov["views"] == ["id", "rot90"] and prov["splits"]["train"]["n"] == n_train
    with pytest.raises(RunError, match="other views") as e:
        emb.embed_dataset(data, emb.Encoder("vit_tiny16", "none", 32, ("id",)), device=CPU, echo=QUIET)
    assert "\n" not in str(e.value)


def test_frozen_predictions_keep_the_contract_the_blend_checks(data, tmp_path):
    enc = emb.Encoder("vit_tiny16", "none", 32, ("id", "hflip"))
    st = FrozenSettings(epochs=3, batch_size=8, head_hidden=[16], head_dropout=[0.0])
    preds = tmp_path / "preds"
    written = run_frozen(data, enc, "head", st, [0, 1], preds, opts=ON_CPU, echo=QUIET)
    assert sorted(p.name for p in written) == [f"vit_tiny16-random-head_32_f{f}_{k}.csv" for f in (0, 1)
                                               for k in ("oof", "test")]
    fold_of = read_folds(data / "folds.csv")
    oof = [pd.read_csv(preds / f"vit_tiny16-random-head_32_f{f}_oof.csv") for f in (0, 1)]
    for f, df in enumerate(oof):
        assert list(df.columns) == ["Id", *map(str, range(28))]
        assert sorted(df["Id"]) == sorted(i for i, k in fold_of.items() if k == f)
        assert ((df.iloc[:, 1:] >= 0) & (df.iloc[:, 1:] <= 1)).all().all()
    side = json.loads((preds / "vit_tiny16-random-head_32_f0_oof.json").read_text())
    assert side["folds_sha256"] == file_sha256(data / "folds.csv") and side["kind"] == "oof"
    oofs, tests = sorted(preds.glob("*_oof.csv")), sorted(preds.glob("*_test.csv"))
    check_oof_provenance(oofs, [data / "train.csv"], False, tests, data / "folds.csv")  # the blend's own check
    assert run_frozen(data, enc, "head", st, [0, 1], preds, opts=ON_CPU, echo=QUIET) == []  # up to date
    changed = run_frozen(data, enc, "head", st.model_copy(update={"epochs": 4}), [0, 1], preds, opts=ON_CPU,
                         echo=QUIET)
    assert len(changed) == 4


def test_a_frozen_members_unknown_setting_is_one_line(tmp_path):
    from hpa.pipeline.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("members:\n  - {arch: vit_tiny16, size: 32, frozen: head, set: {epoch: 3}}\n")
    with pytest.raises(ConfigError, match=r"vit_tiny16_32 \(frozen: head\): setting epoch: Extra inputs") as e:
        load_recipe(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_foundation_recipe_smoke_end_to_end(data, tmp_path):
    """`--recipe foundation --smoke`: tiny random ViTs frozen (a head and a logistic regression on one
    set of embeddings, a head on another) and the CNN fine-tuned, blended into a submission."""
    from hpa.pipeline.recipe import Recipe, load_recipe, run_recipe

    shutil.rmtree(data / "prepared")
    (data / "folds.csv").unlink()
    recipe = Recipe(**{**load_recipe("foundation").model_dump(), "n_folds": 2})
    out = tmp_path / "work"
    sub = run_recipe(recipe, data, out, device="cpu", smoke=True, echo=QUIET)
    df = pd.read_csv(sub)
    assert list(df["Id"]) == read_ids(data / "sample_submission.csv")
    blend = json.loads(layout.blend_summary(out).read_text())
    assert sorted(blend["models"]) == ["se_resnext50_64", "vit_tiny16-random-head_32", "vit_tiny16-random-head_48",
                                       "vit_tiny16-random-logreg_32"]
    assert len(list((data / "embeddings").iterdir())) == 2  # the head and the regression share one store


def test_embed_script_errors_are_one_line(capsys):
    import embed

    for argv, msg in ((["--size", "32", "--arch", "vit_tiny16"], "give either --data-dir"),
                      (["--size", "32", "--data-dir", "x"], "--arch: required unless --pretrained names HPA"),
                      (["--size", "32", "--images", "x", "--arch", "vit_tiny16"], "--images: needs --out")):
        with pytest.raises(SystemExit) as e:
            from hpa.cli import run

            run(embed.main, argv)
        assert e.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err, err


@pytest.mark.slow
def test_embed_script_smoke(data):
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "embed.py", "--data-dir", str(data), "--arch", "vit_tiny16", "--size", "32",
                        "--tta", "1", "--workers", "0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]
    store = layout.embeddings_dir(data, "vit_tiny16-random", 32)
    assert f"embeddings: {store}" in r.stdout and layout.embedding_files(store, "test")["array"].is_file()


def test_slurm_submits_one_prediction_job_per_frozen_member_and_no_training_array(data, tmp_path, monkeypatch,
                                                                                  capsys):
    """A frozen member has no training array: its prediction job embeds and trains every fold's head."""
    from conftest import fake_slurm
    from hpa.cli import run_all as rec

    calls = fake_slurm(tmp_path, monkeypatch, "debug*|2|20000|(null)", "")
    rec.main(["--recipe", "foundation", "--smoke", "--data-dir", str(data), "--out-dir", str(tmp_path / "w"),
              "--launcher", "slurm", "--cpus-per-job", "2"])
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  41  ")]
    assert len(calls.read_text().splitlines()) == len(names) == 7  # data, a training array, 4 predictions, blend
    assert [n.split("-", 2)[2] for n in names if "-train-" in n] == ["train-se_resnext50_64"]
    assert sorted(n.split("-", 3)[3] for n in names if "-predict-" in n) == [
        "se_resnext50_64", "vit_tiny16-random-head_32", "vit_tiny16-random-head_48", "vit_tiny16-random-logreg_32"]


def test_an_embedding_store_never_mixes_image_lists_or_keeps_stale_pixels(small_data, tmp_path, monkeypatch):
    """A run killed after its first chunk and re-run on another folder into the same --out-dir embedded
    only the rest, keeping the first folder's chunk under the new Ids; a sample re-written with other
    pixels was 'up to date'. Both are made again now, and say so."""
    monkeypatch.setattr(emb, "CHUNK", 4)
    ids = read_ids(small_data / "sample_submission.csv")[:8]
    folders = {}
    for name, chosen in (("a", ids[:6]), ("b", ids[2:8])):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for sid in chosen:
            for f in (small_data / "test").glob(f"{sid}_*"):
                shutil.copy(f, folders[name] / f.name)
    enc = emb.Encoder("vit_tiny16", "none", 32, ("id",))
    real, calls = emb.embed_batch, []

    def killed_after_one_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(emb, "embed_batch", killed_after_one_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        emb.embed_folder(folders["a"], tmp_path / "out", enc, batch_size=4, device=CPU, echo=QUIET)
    monkeypatch.setattr(emb, "embed_batch", real)
    lines = []
    store = emb.embed_folder(folders["b"], tmp_path / "out", enc, batch_size=4, device=CPU, echo=lines.append)
    clean = emb.embed_folder(folders["b"], tmp_path / "clean", enc, batch_size=4, device=CPU, echo=QUIET)
    np.testing.assert_array_equal(np.load(store), np.load(clean))  # nothing of folder a in it

    sid = ids[5]  # new pixels for one sample of b: the store is stale and made again, with a note
    red = folders["b"] / f"{sid}_red.png"
    import cv2

    cv2.imwrite(str(red), 255 - cv2.imread(str(red), cv2.IMREAD_GRAYSCALE))
    os.utime(red, ns=(red.stat().st_atime_ns, red.stat().st_mtime_ns + 10**9))
    lines.clear()
    again = emb.embed_folder(folders["b"], tmp_path / "out", enc, batch_size=4, device=CPU, echo=lines.append)
    assert any("made from other images" in line for line in lines)
    assert not np.array_equal(np.load(again), np.load(clean))


def test_a_store_of_another_toolkit_version_is_embedded_again_and_a_broken_one_is_one_line(small_data, tmp_path,
                                                                                            monkeypatch):
    """A store is a cache of what an encoder makes of the images: written by another toolkit version
    (or store format), whose reading or resizing may differ, its splits are embedded again with a note,
    and a chunk an interrupted run of that version left is not reused; other encoder settings are one
    line naming both; a provenance.json cut short or replaced is one line naming it."""
    monkeypatch.setattr(emb, "CHUNK", 4)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for sid in read_ids(small_data / "sample_submission.csv")[:6]:
        for f in (small_data / "test").glob(f"{sid}_*"):
            shutil.copy(f, folder / f.name)
    enc = emb.Encoder("tiny_cnn", "none", 32, ("id",))
    first = emb.embed_folder(folder, tmp_path / "out", enc, batch_size=4, device=CPU, echo=QUIET)
    want = np.load(first)
    store = first.parent
    prov_path = layout.embedding_provenance(store)
    for key, value in (("toolkit", "0.0.1"), ("format", 0)):
        prov = json.loads(prov_path.read_text())
        prov[key] = value
        prov_path.write_text(json.dumps(prov))
        # what an interrupted run of that version left: a chunk of zeros, claimed for today's images
        parts = layout.embedding_files(store, "images")["parts"]
        parts.mkdir()
        np.save(layout.embedding_part(parts, 0), np.zeros_like(want[:4]))
        owner = json.loads(json.dumps(prov["splits"]["images"]))
        layout.embedding_parts_owner(parts).write_text(json.dumps({**owner, "toolkit": prov["toolkit"],
                                                                   "format": prov["format"]}))
        lines = []
        again = emb.embed_folder(folder, tmp_path / "out", enc, batch_size=4, device=CPU, echo=lines.append)
        assert any(f"was embedded by {key} {value!r}" in ln and "embedded again" in ln for ln in lines), lines
        np.testing.assert_array_equal(np.load(again), want)  # no chunk of the other version kept
        assert json.loads(prov_path.read_text())[key] == emb._identity(enc, *emb.build_encoder(enc, CPU))[key]
    lines.clear()
    emb.embed_folder(folder, tmp_path / "out", enc, batch_size=4, device=CPU, echo=lines.append)
    assert any("up to date" in ln for ln in lines)  # the same version's store is used as it is
    with pytest.raises(RunError, match=r"other views \(\['id'\] vs \['id', 'hflip'\]\)"):
        emb.embed_folder(folder, tmp_path / "out", emb.Encoder("tiny_cnn", "none", 32, ("id", "hflip")),
                         batch_size=4, device=CPU, echo=QUIET)
    for broken in ("{", "[1]", "/"):
        prov_path.unlink() if prov_path.is_file() else prov_path.rmdir()
        prov_path.mkdir() if broken == "/" else prov_path.write_text(broken)
        with pytest.raises(RunError, match=f"{prov_path}: (unreadable|not an embedding store)"):
            emb.embed_folder(folder, tmp_path / "out", enc, batch_size=4, device=CPU, echo=QUIET)
