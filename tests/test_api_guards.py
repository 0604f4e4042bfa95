"""The Python API checks what enters it (settings, tables, folds, fold numbers) in one line, own-image
prediction keeps proportions and never replaces what it read, writes name the user's path, runs
resume and predict from anywhere, and exports never delete a folder they did not make."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import hpa
from hpa.errors import HPAError

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(echo=lambda _: None)
FAST = {"epochs": 1, "batch_size": 16, "crop": 24, "crop_large": None, "workers": 0, "pretrained": "none",
        "cycle_epochs": None, "cycles": 1, "loss": "bce", "hard_k": None, "amp": "off"}



def test_api_settings_are_checked_where_they_enter(small_data, tmp_path):
    from hpa.errors import ConfigError

    preds = str(tmp_path / "none" / "*_oof.csv")
    cases = [
        (lambda: hpa.blend(preds, preds, data_dir=small_data, weights="max"), "weights='max': choose from"),
        (lambda: hpa.blend(preds, preds, data_dir=small_data, method="best"), "method='best': choose from"),
        (lambda: hpa.blend(preds, preds, data_dir=small_data, weigths="equal"), "hpa.blend\\(\\): .*weigths"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], tta=9), "tta=9"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], tta=0), "tta=0"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], amp="fp8"), "amp='fp8'"),
        (lambda: hpa.predict("tiny_cnn", 32, 0), r"folds=0: expected list\[int\]"),
        (lambda: hpa.predict("tiny_cnn", 32, []), "non-empty list"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], sizes=[0]), "sizes=0"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], batch_size=0), "batch_size=0"),
        (lambda: hpa.prepare(small_data, size=0), "size=0"),
        (lambda: hpa.make_folds(small_data, duplicates="bogus"), "duplicates='bogus'"),
        (lambda: hpa.fit_thresholds(preds, data_dir=small_data, method="best"), "method='best'"),
        (lambda: hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, epocs=2),
         "epocs"),
    ]
    for call, words in cases:
        with pytest.raises(HPAError, match=words) as e:
            call()
        assert "\n" not in str(e.value), words
        assert isinstance(e.value, ConfigError) or "epocs" in words, words


def test_fit_thresholds_takes_one_table_as_a_str_or_a_path(small_data, tmp_path):
    runs = tmp_path / "runs"
    for f in (0, 1):
        hpa.train_fold("tiny_cnn", fold=f, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    hpa.predict("tiny_cnn", 32, [0, 1], runs=runs, out_dir=tmp_path / "p", tta=1, amp="off", device="cpu")
    oof = str(tmp_path / "p" / "tiny_cnn_32_f*_oof.csv")
    a = hpa.fit_thresholds(oof, labels=str(small_data / "train.csv"), method="exact")
    b = hpa.fit_thresholds(oof, labels=small_data / "train.csv", method="exact")
    c = hpa.fit_thresholds(oof, labels=[small_data / "train.csv"], method="exact")
    assert list(a.thresholds) == list(b.thresholds) == list(c.thresholds)


@pytest.mark.parametrize("bad", [7, -3])
def test_a_fold_number_outside_the_tables_folds_is_refused(small_data, tmp_path, bad):
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    folds = pd.read_csv(data / "folds.csv")
    folds.loc[3, "fold"] = bad
    folds.to_csv(data / "folds.csv", index=False)
    with pytest.raises(HPAError, match=f"row 5: fold {bad} is outside the table's folds"):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=data, runs=tmp_path / "r", **FAST, **QUIET)


def test_own_images_keep_their_proportions_sub_folders_are_listed_and_out_may_sit_in_the_folder(small_data, tmp_path):
    import numpy as np
    import torch

    from hpa.data.images import read_sample, write_sample_png
    from hpa.prediction.ensemble import from_runs
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import DIHEDRAL, ImageSet, PredictOptions

    runs = tmp_path / "runs"
    hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    images = tmp_path / "images"
    images.mkdir()
    sid = pd.read_csv(small_data / "sample_submission.csv")["Id"][0]
    img = read_sample(small_data / "test", sid)
    wide = np.concatenate([img, img], 1)  # 32 x 64: two fields side by side
    write_sample_png(images, "wide", wide)
    (images / "more").mkdir()
    write_sample_png(images / "more", "inner", img)
    x, _, _ = ImageSet(["wide"], 32, raw_dir=images)[0]
    # padded to 64 x 64 (black above and below), then resized to 32: the cells keep their proportions
    want = np.zeros((64, 64, 4), np.uint8)
    want[16:48] = wide
    import cv2

    want = cv2.resize(want, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy() * 255, want, atol=0.51)
    ens = from_runs(runs, "tiny_cnn", 32, [0], torch.device("cpu"), PredictOptions(DIHEDRAL[:1], amp="off"))
    out = images / "preds.csv"  # --out inside the image folder: a re-run is not refused
    for _ in range(2):
        r = predict_folder(ens, images, out, opts=PredictOptions(device="cpu"), report=False, **QUIET)
    assert r.n_predicted == 1 and "more/" in r.skipped and "not searched" in r.skipped["more/"]


def test_a_write_error_names_the_users_path_not_a_temporary_file(tmp_path, monkeypatch):
    """A directory the user cannot write to (simulated: the tests run as root, who can write anywhere):
    creating the temporary file, or renaming it into place, fails with the user's path in the line."""
    import errno
    import tempfile

    from hpa.core.atomic import atomic_outputs, atomic_write_text

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".out.csv.x1y2.tmp"))

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(HPAError, match=r"out.csv: cannot be written \(Permission denied in ") as e:
            atomic_write_text(tmp_path / "out.csv", "x")
        assert ".tmp" not in str(e.value)
    real_replace = os.replace

    def replace_denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(src), str(dst))

    monkeypatch.setattr(os, "replace", replace_denied)
    with pytest.raises(HPAError, match=r"a.csv: cannot be written \(Permission denied\)") as e:
        with atomic_outputs() as tmp:
            tmp(tmp_path / "a.csv").write_text("x")
    assert ".tmp" not in str(e.value)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list(tmp_path.glob(".*.tmp*"))  # nothing left behind


def test_runs_resume_and_predict_from_anywhere_and_a_lost_best_pt_names_a_way_out(small_data, tmp_path, monkeypatch):
    from hpa.core.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    monkeypatch.chdir(small_data.parent)
    run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data.name, runs=runs, **FAST, **QUIET)
    assert load_checkpoint(run / "best.pt")["config"]["data_dir"] == str(small_data)  # saved absolute
    monkeypatch.chdir(tmp_path)  # elsewhere: the run still finds its labels
    assert hpa.predict("tiny_cnn", 32, [0], runs=runs, out_dir=tmp_path / "p", tta=1, amp="off", device="cpu")
    (run / "best.pt").unlink()
    with pytest.raises(HPAError, match="finished training .1 epochs. but its best.pt is gone; restore it, or train"):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    with pytest.raises(HPAError, match=r"cannot be read as a checkpoint: it is cut short .*\); delete it to train "
                                       r"this fold from the start") as e:
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    assert str(e.value).endswith(")") and "\n" not in str(e.value)


def test_exports_and_reports_never_delete_a_folder_they_did_not_make(tmp_path):
    import numpy as np

    from hpa.errors import BundleError
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.ensemble import Ensemble
    from hpa.prediction.folder import check_report_assets

    precious = tmp_path / "work"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    ens = Ensemble([], "equal", np.ones(0), np.full(28, 0.5))
    with pytest.raises(BundleError, match="exists and is not an hpa-toolkit bundle"):
        write_bundle(ens, precious, training_data={}, summary={})
    assert (precious / "notes.txt").read_text() == "mine"
    (precious / "report_files").mkdir()
    (precious / "report_files" / "thesis.docx").write_text("mine")
    with pytest.raises(HPAError, match="holds files that are not report images"):
        check_report_assets(precious / "report_files")


def test_own_image_output_never_replaces_the_thresholds_it_read(small_data, tmp_path):
    """predict_tta.py --images --out on the --thresholds file: refused before any work, file kept."""
    import importlib.util

    runs = tmp_path / "runs"
    hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"thresholds": [0.5] * 28}))
    before = thr.read_bytes()
    spec = importlib.util.spec_from_file_location("predict_tta", ROOT / "predict_tta.py")
    predict_tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict_tta)
    with pytest.raises(HPAError, match="thr.json: is an input .thresholds. and would be overwritten"):
        predict_tta.main(["--arch", "tiny_cnn", "--size", "32", "--runs", str(runs), "--images",
                          str(small_data / "test"), "--thresholds", str(thr), "--out", str(thr), "--device", "cpu"])
    assert thr.read_bytes() == before


def test_a_checkpoint_is_checked_against_the_run_it_is_asked_for(tiny_runs, small_data, tmp_path):
    """A file is not trusted for the folder it sits in: another fold's best.pt copied into a run
    directory is refused by every caller of load_run (OOF/test prediction and a folder's ensemble)."""
    from hpa.data import layout

    runs = Path(shutil.copytree(tiny_runs, tmp_path / "runs"))
    f0, f1 = (layout.run_file(layout.run_dir(runs, "tiny_cnn", 32, f), "best") for f in (0, 1))
    shutil.copyfile(f1, f0)
    want = r"is a checkpoint of tiny_cnn_32 fold 1, not of tiny_cnn_32 fold 0"
    with pytest.raises(HPAError, match=want):
        hpa.predict("tiny_cnn", 32, [0], runs=runs, out_dir=tmp_path / "p", tta=1, amp="off", device="cpu")
    with pytest.raises(HPAError, match=want):
        hpa.predict_images(small_data / "test", tmp_path / "x.csv", runs=hpa.Runs("tiny_cnn", 32, (0,), runs),
                           tta=1, device="cpu")
    assert not (tmp_path / "p").exists() and not (tmp_path / "x.csv").exists()


def test_api_arguments_of_the_wrong_type_are_one_line_naming_them(tmp_path):
    """Every hpa.* entry point checks its arguments against their annotations where they enter
    (hpa.api.checked), and a bundle and a class map are checked where they are used."""
    cases = [
        (lambda: hpa.predict_images(tmp_path, tmp_path / "x.csv", runs="runs"), r"runs='runs': expected hpa.Runs"),
        (lambda: hpa.export_bundle(42, tmp_path / "b"), r"source=42: expected str \| Path \| None"),
        (lambda: hpa.train_fold("tiny_cnn", fold="0", size=32, data_dir=tmp_path), r"fold='0': expected int"),
        (lambda: hpa.blend(5, "x", tmp_path), r"oof=5: expected str \| Path \| list"),
        (lambda: hpa.load_bundle(42), r"load_bundle\(42\): a bundle folder or a Hugging Face repository id"),
        (lambda: hpa.make_folds(tmp_path, n_folds=2.5), r"n_folds=2.5: expected int"),
    ]
    for call, message in cases:
        with pytest.raises(HPAError, match=message):
            call()


def test_a_class_map_request_outside_the_classes_is_refused(tiny_runs, small_data, tmp_path):
    with pytest.raises(HPAError, match="--explain 99: not a class number 0..27"):
        hpa.predict_images(small_data / "test", tmp_path / "x.csv", runs=hpa.Runs("tiny_cnn", 32, (0,), tiny_runs),
                           report=[3, 99], tta=1, device="cpu")
    assert not (tmp_path / "x.csv").exists()
