"""ablate.py on a tiny dataset with two factors: the table's arithmetic against a hand computation."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_ablation_table_arithmetic_and_reuse(tiny_demo, tmp_path):
    d = tiny_demo
    if not (d / "prepared" / "64").is_dir():
        subprocess.run([sys.executable, "input_prep/prepare.py", "--data-dir", d, "--size", "64"], cwd=ROOT, check=True,
                       capture_output=True)
    folds = tmp_path / "folds.csv"
    subprocess.run([sys.executable, "input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", "2", "--out",
                    folds], cwd=ROOT, check=True, capture_output=True)
    cmd = [sys.executable, "ablate.py", "--data-dir", str(d), "--arch", "tiny_cnn", "--size", "64", "--factors",
           "oversample_max,thresholds", "--seeds", "2", "--n-folds", "2", "--set", "epochs=2", "--set",
           "limit_batches=3", "--set", "batch_size=16", "--set", f"folds_csv={folds}", "--out-dir", str(tmp_path),
           "--name", "t", "--device", "cpu"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "t"
    res = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    variants = set(zip(res["factor"], res["variant"]))
    assert variants == {("baseline", "paper config"), ("oversample_max", "off"), ("thresholds", "flat"),
                        ("thresholds", "exact"), ("thresholds", "auto")}  # "on" is the baseline itself
    assert (res.groupby(["factor", "variant"]).size() == 4).all()  # 2 seeds x 2 folds
    base = res[res["factor"] == "baseline"].set_index(["seed", "fold"])["macro_f1"]
    for row in summary.itertuples():
        v = res[(res["factor"] == row.factor) & (res["variant"] == row.variant)].set_index(["seed", "fold"])["macro_f1"]
        assert row.mean_f1 == pytest.approx(v.sum() / 4)
        assert row.ci95 == pytest.approx(stats.t.ppf(0.975, 3) * np.sqrt(((v - v.mean()) ** 2).sum() / 3) / 2)
        if row.factor != "baseline":
            diff = (v - base.loc[v.index]).to_numpy()
            half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
            assert row.diff == pytest.approx(diff.mean()) and row.diff_ci95 == pytest.approx(half)
            with np.errstate(invalid="ignore", divide="ignore"):  # identical cells: no spread, p is NaN
                t = diff.mean() / (diff.std(ddof=1) / 2)
            assert row.p_value == pytest.approx(2 * stats.t.sf(abs(t), 3), nan_ok=True)
            assert row.significant == (abs(diff.mean()) > half)
    table = (out / "table.md").read_text()
    assert "| oversample_max | off | 4 |" in table and (out / "plot.png").is_file()
    # a second run reuses every trained run
    best = out / "runs" / "oversample_max=off" / "s1" / "tiny_cnn_64" / "f1" / "best.pt"
    mtime = best.stat().st_mtime_ns
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and best.stat().st_mtime_ns == mtime
    assert pd.read_csv(out / "results.csv").equals(res)
