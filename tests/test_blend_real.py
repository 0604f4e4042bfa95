"""Thresholds and blending on real 2018 model outputs: 4 top-team test predictions, 258 of whose
rows have known labels (leak.csv)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import realdata as real_data
from scripts import run_script

from conftest import ROOT, SHARED, shared_path
from hpa.data.predictions import write_predictions
from hpa.prediction.metrics import macro_f1
from hpa.prediction.thresholds import shrunk_thresholds


def load_real():
    shared_path("test-predictions")
    return real_data.load_real(SHARED)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    sub_ids, ids, rows, y, preds = load_real()
    d = tmp_path_factory.mktemp("real")
    for name, p in preds.items():
        write_predictions(d / f"{name}_f0_oof.csv", ids, p[rows])
        write_predictions(d / f"{name}_f0_test.csv", sub_ids, p)
    pd.DataFrame({"Id": ids, "Target": [" ".join(map(str, np.flatnonzero(r))) for r in y]}).to_csv(
        d / "labels.csv", index=False)
    return d, sub_ids, ids, rows, y, preds


def test_flat_threshold_scores_match_the_published_figures(real):
    _, _, ids, rows, y, preds = real
    assert len(ids) == 258
    got = {k: round(macro_f1(y, p[rows] >= 0.5), 3) for k, p in preds.items()}
    assert got == {"team5inceptionv3_800": 0.659, "team10seresnext50_512": 0.580, "team5xception_512": 0.572,
                   "team4gapnet_512": 0.480}


def blend(d, *extra, oof="*_oof.csv", test="*_test.csv"):
    """blend.py in this process (its subprocess smoke is test_pipeline.py's)."""
    return run_script("blend.py", "--oof", d / oof, "--test", d / test, "--labels", d / "labels.csv",
                      "--sample-submission", shared_path("kaggle-hpa-2018", "sample_submission.csv"), *extra)


@pytest.mark.slow
def test_blend_writes_a_valid_submission(real, tmp_path):
    d, sub_ids, _, rows, y, preds = real
    r = blend(d, "--out", tmp_path / "submission.csv")
    assert r.returncode == 0, r.stderr
    sub = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    assert sub["Id"].tolist() == sub_ids and sub["Predicted"].str.len().min() > 0
    summary = json.loads((tmp_path / "blend.json").read_text())
    assert sum(summary["weights"]) == pytest.approx(1.0)
    best_single = max(macro_f1(y, p[rows] >= shrunk_thresholds(p[rows], y)) for p in preds.values())
    # greedy selection keeps its best round, which is at least the best single model on these rows
    assert summary["oof_macro_f1"] >= best_single - 1e-9
    assert (tmp_path / "report.md").read_text().count("team") >= 4 and (tmp_path / "report.png").is_file()


@pytest.mark.slow
def test_find_thresholds_methods_on_real_rows(real, tmp_path):
    d = real[0]
    scores = {}
    for method in ("paper", "exact", "shrink"):
        out = tmp_path / f"{method}.json"
        r = subprocess.run([sys.executable, "find_thresholds.py", "--oof", str(d / "team10seresnext50_512_f0_oof.csv"),
                            "--labels", str(d / "labels.csv"), "--method", method, "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        scores[method] = json.loads(out.read_text())["macro_f1"]
    assert scores["exact"] >= scores["paper"] - 1e-9  # exact is the optimum on the data it is fitted to
    assert scores["shrink"] <= scores["exact"] + 1e-9


def _rewrite(src, dst, fn):
    df = pd.read_csv(src, dtype={"Id": str})
    fn(df).to_csv(dst, index=False)


@pytest.mark.slow
def test_bad_prediction_sets_are_named(real, tmp_path):
    d = real[0]
    for f in d.glob("*.csv"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    test_file = tmp_path / "team4gapnet_512_f0_test.csv"
    _rewrite(d / test_file.name, test_file, lambda df: df.iloc[:-5])
    r = blend(tmp_path, "--out", tmp_path / "s.csv")
    assert r.returncode != 0 and "team4gapnet_512_f0_test.csv: 5 Ids missing" in r.stderr
    def extra_row(df):
        row = df.iloc[[0]].copy()
        row["Id"] = "not-in-sample-submission"
        return pd.concat([df, row])
    _rewrite(d / test_file.name, test_file, extra_row)
    r = blend(tmp_path, "--out", tmp_path / "s.csv")
    assert r.returncode != 0 and "team4gapnet_512_f0_test.csv: 1 unexpected Ids" in r.stderr
    (tmp_path / test_file.name).write_bytes((d / test_file.name).read_bytes())

    oof_file = tmp_path / "team5xception_512_f0_oof.csv"
    _rewrite(d / oof_file.name, oof_file, lambda df: df.iloc[1:])
    r = blend(tmp_path, "--out", tmp_path / "s.csv")
    assert r.returncode != 0 and "team5xception_512" in r.stderr and "1 Ids missing" in r.stderr
    assert not (tmp_path / "s.csv").exists()  # nothing half-written

    def nan_row(df):
        df.loc[3, "7"] = np.nan
        return df
    _rewrite(d / oof_file.name, oof_file, nan_row)
    r = blend(tmp_path, "--out", tmp_path / "s.csv")
    assert r.returncode != 0 and "team5xception_512_f0_oof.csv, row 5, column 7" in r.stderr
    r = blend(tmp_path, "--out", tmp_path / "s.csv", test="nomatch_*_test.csv")
    assert r.returncode != 0 and "nomatch_*_test.csv: no prediction file matches" in r.stderr
