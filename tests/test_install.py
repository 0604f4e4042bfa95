"""The library stands alone: a non-editable install of the project (into a fresh directory, so
nothing is read from the checkout) trains, predicts, fits thresholds and blends through the
documented Python API, from a working directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import hpa
    from hpa.data.demo import make_demo

    assert Path(hpa.__file__).parent == Path(sys.argv[1]) / "hpa", hpa.__file__  # the installed copy
    quiet = dict(echo=lambda _: None)
    make_demo("data", n_train=40, n_test=28, size=32, seed=0, min_per_class=1)
    hpa.prepare("data", size=32, **quiet)
    hpa.make_folds("data", n_folds=2, **quiet)
    for f in (0, 1):
        hpa.train_fold("tiny_cnn", fold=f, size=32, data_dir="data", epochs=1, batch_size=16, crop=24,
                       workers=0, pretrained="none", **quiet)
    hpa.predict("tiny_cnn", size=32, folds=[0, 1], tta=1, device="cpu")
    fit = hpa.fit_thresholds("predictions/*_oof.csv", data_dir="data", method="flat")
    fit.write("thresholds.json")
    s = hpa.blend("predictions/*_oof.csv", "predictions/*_test.csv", data_dir="data", method="flat",
                  weights="equal")
    print("OK", fit.summary["n_samples"], s["oof_rows"], Path("submission.csv").is_file())
""")


def test_installed_package_runs_the_api_outside_the_checkout(tmp_path):
    site, src = tmp_path / "site", tmp_path / "src"
    # a copy of the project's files: a build inside the checkout would leave build/ there
    def ignored(directory, names):  # the checkout's own data and outputs, not the library's hpa/data package
        top = {".venv", ".git", "data", "work", "runs", "build", "ablations"} if Path(directory) == ROOT else set()
        return [n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(ROOT, src, ignore=ignored)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (site / "hpa" / "configs" / "recipes" / "paper.yaml").is_file()  # configs ship as package data
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(site)], cwd=work, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd

    folded = int((pd.read_csv(work / "data" / "folds.csv")["fold"] >= 0).sum())  # every folded sample has an OOF row
    assert r.stdout.split()[:4] == ["OK", str(folded), str(folded), "True"]
    assert all((work / f"thresholds.{e}").is_file() for e in ("json", "csv", "png"))
    assert (work / "runs" / "tiny_cnn_32" / "f1" / "best.pt").is_file()
