"""ablate.py on a tiny dataset with two factors: the table's arithmetic against a hand computation."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scripts import run_script

from conftest import ROOT, private_copy


@pytest.mark.slow
def test_ablation_table_arithmetic_and_reuse(tiny_demo, tmp_path):
    d = private_copy(tiny_demo, tmp_path / "data")
    if not (d / "prepared" / "64").is_dir():
        assert run_script("input_prep/prepare.py", "--data-dir", d, "--size", "64").returncode == 0
    folds = tmp_path / "folds.csv"
    assert run_script("input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", "2", "--out",
                      folds).returncode == 0
    cmd = [sys.executable, "ablate.py", "--data-dir", str(d), "--arch", "tiny_cnn", "--size", "64", "--factors",
           "oversample_max,thresholds", "--seeds", "2", "--folds", "0", "1", "--set", "epochs=1", "--set",
           "limit_batches=3", "--set", "batch_size=16", "--set", "amp=off", "--set", f"folds_csv={folds}",
           "--out-dir", str(tmp_path), "--name", "t", "--device", "cpu"]
    r = run_script(*cmd[1:])
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
    # a scored cell keeps what reuse needs (its OOF per TTA count, log and settings), not its checkpoints
    run = out / "runs" / "oversample_max=off" / "s1" / "tiny_cnn_64" / "f1"
    assert not list((out / "runs").rglob("*.pt"))
    assert {"oof_tta1.csv", "log.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
    oof = run / "oof_tta1.csv"
    mtime = oof.stat().st_mtime_ns
    # a second run (the script's subprocess smoke), in 2 worker processes, reuses every trained run and
    # scores them alike
    r = subprocess.run(cmd + ["--jobs", "2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and oof.stat().st_mtime_ns == mtime
    assert pd.read_csv(out / "results.csv").equals(res)
    # a scored cell whose OOF file is lost is trained again, and scores the same (training is deterministic)
    oof.unlink()
    r = run_script(*cmd[1:])
    assert r.returncode == 0 and oof.is_file()
    assert pd.read_csv(out / "results.csv").equals(res)


def test_duplicates_factor_builds_the_three_fold_tables(tmp_path):
    """No training: the folds of each duplicates mode, and the mode equal to the baseline's folds
    is the baseline itself (not trained twice)."""
    from hpa.config import arch_layers, build_config
    from hpa.data.labels import read_folds
    from hpa.errors import LabelError
    from hpa.pipeline.ablation import duplicates_folds, variants

    ids = [f"s{k:02d}" for k in range(16)]
    targets = ["0", "1", "0 1", "2"] * 4
    targets[5] = targets[4]  # s04 ~ s05: twins with the same labels
    targets[9] = "3"  # s08 ~ s09: twins whose labels conflict ("0" and "3")
    pd.DataFrame({"Id": ids, "Target": targets}).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "dedup").mkdir()
    pd.DataFrame({"Id": ["s04", "s05", "s08", "s09"], "group": ["g1", "g1", "g2", "g2"]}).to_csv(
        tmp_path / "dedup" / "duplicate_groups.csv", index=False)
    base = build_config(arch_layers("tiny_cnn") + [("flags", {"arch": "tiny_cnn", "size": 64,
                                                              "data_dir": str(tmp_path)})])
    with pytest.raises(LabelError, match="folds table not found"):
        duplicates_folds(base, tmp_path / "abl")
    pd.DataFrame({"Id": ids, "fold": [k % 2 for k in range(16)]}).to_csv(tmp_path / "folds.csv", index=False)
    files = duplicates_folds(base, tmp_path / "abl")
    drop, group, ignore = (read_folds(files[m]) for m in ("drop", "group", "ignore"))
    assert sorted(i for i, f in drop.items() if f < 0) == ["s05", "s08", "s09"]  # s04 kept; conflicts out
    assert group["s04"] == group["s05"] and group["s08"] == group["s09"] and min(group.values()) == 0
    assert min(ignore.values()) == 0 and set(ignore.values()) == {0, 1}
    names = [(f, v) for f, v, _ in variants(base, ["duplicates"], {"duplicates": files})]
    assert names == [("baseline", "paper config"), ("duplicates", "drop"), ("duplicates", "group"),
                     ("duplicates", "ignore")]
    same = base.model_copy(update={"folds_csv": str(files["drop"])})
    got = variants(same, ["duplicates"], {"duplicates": files})
    assert [(f, v) for f, v, _ in got] == [("baseline", "paper config"), ("duplicates", "group"),
                                          ("duplicates", "ignore")]
    assert got[1][2].folds_csv == str(files["group"])
    # a variant that spells out the builder's default (pool: acp) is the baseline, not trained again
    assert [v for _, v, _ in variants(base, ["pool"])] == ["paper config", "gap", "max"]


def test_summary_statistics_against_scipy():
    """The table's figures from a results frame written by hand: mean and t interval per variant,
    and the paired difference to the baseline's same (seed, fold) cells with scipy's paired t-test."""
    from hpa.pipeline.ablation import summarize

    cells = [(s, f) for s in (0, 1) for f in (0, 1, 2)]
    base = [0.50, 0.52, 0.47, 0.55, 0.49, 0.51]
    other = [0.53, 0.56, 0.47, 0.58, 0.50, 0.57]
    rows = [("baseline", "paper config", s, f, v) for (s, f), v in zip(cells, base)]
    rows += [("oversample_max", "off", s, f, v) for (s, f), v in zip(reversed(cells), reversed(other))]
    summary = summarize(pd.DataFrame(rows, columns=["factor", "variant", "seed", "fold", "macro_f1"]))
    b, o = summary.iloc[0], summary.iloc[1]
    assert b.mean_f1 == pytest.approx(np.mean(base)) and b.n == 6
    assert b.ci95 == pytest.approx(stats.t.ppf(0.975, 5) * np.std(base, ddof=1) / np.sqrt(6))
    diff = np.subtract(other, base)  # paired by (seed, fold), whatever the row order
    assert o["diff"] == pytest.approx(diff.mean())
    assert o.diff_ci95 == pytest.approx(stats.t.ppf(0.975, 5) * diff.std(ddof=1) / np.sqrt(6))
    assert o.p_value == pytest.approx(stats.ttest_rel(other, base).pvalue)
    assert o.significant == (abs(diff.mean()) > o.diff_ci95)
