"""No command or API call writes over one of its own inputs: one guard (hpa.core.atomic.reading,
checked by every atomic writer) fed by each call's declared inputs. Each case below is an instance
of that class; each input is hashed before and after."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hpa
from hpa.core.atomic import atomic_write_text, reading, staged_dir
from hpa.errors import HPAError


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def labels_table(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    rows = [f"s{i:03d},{' '.join(map(str, sorted(rng.choice(28, 2, replace=False))))}" for i in range(n)]
    path.write_text("Id,Target\n" + "\n".join(rows) + "\n")
    return path


def oof_file(path: Path, labels: Path) -> Path:
    ids = pd.read_csv(labels)["Id"]
    probs = np.random.default_rng(1).random((len(ids), 28))
    pd.concat([ids, pd.DataFrame(probs, columns=[str(k) for k in range(28)])], axis=1).to_csv(path, index=False)
    return path


def test_make_folds_never_replaces_its_label_table(tmp_path):
    from hpa.cli import make_folds

    lab = labels_table(tmp_path / "lab.csv")
    before = digest(lab)
    with pytest.raises(HPAError, match=r"lab.csv: is an input \(labels\)"):
        make_folds.main(["--labels", str(lab), "--n-folds", "2", "--out", str(lab)])
    assert digest(lab) == before
    out = make_folds.main(["--labels", str(lab), "--n-folds", "2", "--out", str(tmp_path / "folds.csv")])
    assert out is None and (tmp_path / "folds.csv").is_file()


def test_a_threshold_fit_from_a_notebook_never_replaces_the_files_it_was_fitted_on(tmp_path):
    lab = labels_table(tmp_path / "lab.csv")
    oof = oof_file(tmp_path / "m_64_f0_oof.csv", lab)
    fit = hpa.fit_thresholds(str(oof), labels=lab, method="flat", allow_missing=True)
    before = {p: digest(p) for p in (lab, oof)}
    for target in (oof, lab):
        with pytest.raises(HPAError, match="is an input"):
            fit.write(target)
    link = tmp_path / "link.json"
    link.symlink_to(oof)  # the same file under another name
    with pytest.raises(HPAError, match="is an input"):
        fit.write(link)
    assert {p: digest(p) for p in before} == before
    assert fit.write(tmp_path / "t.json")[0].is_file()


def test_blend_never_replaces_a_label_table_or_a_prediction(tmp_path):
    from hpa.cli import blend

    lab = labels_table(tmp_path / "lab.csv")
    oof = oof_file(tmp_path / "m_64_f0_oof.csv", lab)
    test = oof_file(tmp_path / "m_64_f0_test.csv", lab)
    sub = tmp_path / "sub.csv"
    sub.write_text("Id,Predicted\n" + "\n".join(f"{i}," for i in pd.read_csv(lab)["Id"]) + "\n")
    before = {p: digest(p) for p in (lab, oof, test, sub)}
    for target in (lab, oof, test, sub):
        with pytest.raises(HPAError, match="is an input"):
            blend.main(["--oof", str(oof), "--test", str(test), "--labels", str(lab), "--sample-submission", str(sub),
                        "--allow-missing-oof", "--weights", "equal", "--method", "flat", "--out", str(target)])
    assert {p: digest(p) for p in before} == before


def test_the_guard_covers_every_writer_and_folder_inputs(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a_red.png").write_bytes(b"x")
    with reading({"bundle": bundle, "image": [images / "a_red.png"]}):
        for target in (bundle / "config.json", bundle / "preds.csv", images / "a_red.png"):
            with pytest.raises(HPAError, match="would be overwritten"):
                atomic_write_text(target, "y")
        for folder in (bundle, tmp_path, images):  # replacing a folder that holds an input
            with pytest.raises(HPAError, match="would be overwritten"):
                with staged_dir(folder):
                    pass
        atomic_write_text(images / "preds.csv", "allowed")  # a new output beside the images is fine
    assert (bundle / "config.json").read_text() == "{}" and (images / "a_red.png").read_bytes() == b"x"
    atomic_write_text(bundle / "config.json", "{}")  # outside the call, nothing is declared
