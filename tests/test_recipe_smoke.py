"""The paper recipe end to end on a real-layout dataset built from the real samples (tests/real_layout.py):
every member of configs/recipes/paper.yaml with its real arch at 1/12 size (`--smoke`), ImageNet
weights from caches built here."""

import os
import subprocess

import pandas as pd
import pytest
import yaml
from real_layout import build_caches, build_dataset

from conftest import ROOT
from hpa.data.arrays import stored_side

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(real_samples, tmp_path_factory):
    """The paper recipe's smoke run with the local launcher."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    d = tmp_path / "hpa"
    train, planted, big = build_dataset(real_samples, d)
    where = build_caches(tmp_path / "cache")
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache / "hf"), "TORCH_HOME": str(cache / "torch"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(["bash", "run_all.sh", "--data-dir", str(d), "--recipe", "paper", "--smoke", "--n-folds", "2",
                        "--device", "cpu", "--out-dir", str(tmp_path / "work")], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    return tmp_path, d, env, r, train, planted, big, where


def test_paper_recipe_smoke_on_real_layout_data(smoke):
    tmp_path, d, env, r, train, planted, big, where = smoke
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    assert "TEST MACRO F1" not in r.stdout  # real data have no test labels: no score is made up
    sub = pd.read_csv(tmp_path / "work" / "submission.csv", dtype=str)
    assert sub["Id"].tolist() == ["test-2048", "test-512"]
    assert all(p.split() and all(0 <= int(v) < 28 for v in p.split()) for p in sub["Predicted"])
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    for m in recipe["members"]:
        small = round(m["size"] / 12)
        name = f"{m['arch']}_{small}"
        for f in (0, 1):
            assert (tmp_path / "work" / "runs" / name / f"f{f}" / "best.pt").is_file(), name
        assert (tmp_path / "work" / "predictions" / f"{name}_f1_oof.csv").is_file()
        assert where[m["arch"]] in out, f"{m['arch']}: weights not loaded from the test cache"
    # external samples were trained on, the planted twin was dropped, the 3072 px sample kept its side
    assert " HPAv18 external)" in out and " (0 HPAv18 external)" not in out
    dropped = pd.read_csv(d / "folds_dropped.csv")
    assert planted in set(dropped["Id"]) or train[1][0] in set(dropped["Id"])
    assert dropped["reason"].str.startswith("near-duplicate of").all()
    assert stored_side(d / "prepared" / "64" / "train" / f"{big}.npy") == 85  # 3072 -> 1024 scaled to the 64 run
    assert stored_side(d / "prepared" / "64" / "train" / f"{train[1][0]}.npy") == 64
    oof = pd.concat([pd.read_csv(p) for p in (tmp_path / "work" / "predictions").glob("se_resnext50_64_f*_oof.csv")])
    assert big in set(oof["Id"]) and {"10000_1_A0_1", "10001_1_A1_1"} <= set(oof["Id"])
    from hpa.core.digests import file_sha256
    from hpa.pipeline.recipe import Member, predictions_current

    for m in recipe["members"]:  # a re-run would skip every member's predictions
        assert predictions_current(Member(arch=m["arch"], size=round(m["size"] / 12)), tmp_path / "work" / "runs",
                                   tmp_path / "work" / "predictions", [0, 1], ("id",), "bf16",
                                   file_sha256(d / "folds.csv"))
