"""Recipes: loading, the smoke shrink, the GPU launch plan, and what a re-run skips (fast tier)."""

import os
import time

import pytest

from hpa.errors import ConfigError
from hpa.recipe import Member, load_recipe, predictions_current, smoke_member, train_commands


def test_the_shipped_recipes_load_and_name_their_members():
    paper = load_recipe("paper")
    assert paper.duplicates == "drop" and paper.n_folds == 5
    names = [m.name for m in paper.members]
    assert "se_resnext50_768" in names and "se_resnext50_1024" in names  # two input sizes
    assert {m.arch for m in paper.members} >= {"se_resnext50", "resnet50", "resnet101", "inception_v4", "densenet121"}
    assert [m.name for m in load_recipe("demo").members] == ["tiny_cnn_128"]


def test_bad_recipes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such recipe .* known: demo, paper"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("members:\n  - {arch: resnet5, size: 768}\n")
    with pytest.raises(ConfigError, match="bad.yaml: member resnet5_768: unknown arch"):
        load_recipe(str(bad))
    bad.write_text("n_folds: 1\nmembers:\n  - {arch: resnet50, size: 768}\n")
    with pytest.raises(ConfigError, match="bad.yaml: n_folds: .*greater than or equal to 2"):
        load_recipe(str(bad))


def test_smoke_keeps_the_arch_and_shrinks_sizes_and_crops():
    m = smoke_member(Member(arch="se_resnext50", size=1024, set={"crop": 768, "crop_large": 1024}))
    assert m.arch == "se_resnext50" and m.size == 85 and m.set["crop"] == 64 and m.set["crop_large"] == 85
    assert m.set["epochs"] == 1 and m.set["limit_batches"] == 2
    assert smoke_member(Member(arch="resnet50", size=768)).set["crop"] == 43  # the config's 512 / 12


def test_gpu_plan():
    m = Member(arch="resnet50", size=768, set={"crop": None, "lr_groups": [0.5, 1.0]})
    one = train_commands(m, "d", "r", 3, "auto", 1, False)
    assert one[1] == "train_fold.py" and "--resume" in one
    assert "crop=null" in one and "lr_groups=[0.5, 1.0]" in one
    ddp = train_commands(m, "d", "r", 3, "auto", 4, False)
    assert ddp[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 4]
    assert train_commands(m, "d", "r", 3, "cuda", 1, True)[1] == "train_fold.py"  # parallel folds: 1 GPU each


def test_predictions_are_redone_only_when_older_than_the_runs(tmp_path):
    m = Member(arch="tiny_cnn", size=64)
    runs, preds = tmp_path / "runs", tmp_path / "preds"
    assert not predictions_current(m, runs, preds, 2)
    for f in (0, 1):
        (runs / "tiny_cnn_64" / f"f{f}").mkdir(parents=True)
        (runs / "tiny_cnn_64" / f"f{f}" / "best.pt").write_text("x")
    preds.mkdir()
    time.sleep(0.01)
    for f in (0, 1):
        for k in ("oof", "test"):
            (preds / f"tiny_cnn_64_f{f}_{k}.csv").write_text("x")
    assert predictions_current(m, runs, preds, 2)
    later = time.time() + 5
    os.utime(runs / "tiny_cnn_64" / "f1" / "best.pt", (later, later))  # fold 1 retrained since
    assert not predictions_current(m, runs, preds, 2)
