"""Recipes: loading, the smoke shrink, the GPU launch plan, and what a re-run skips (fast tier)."""

import os
import time

import pytest

from hpa.core.digests import file_sha256
from hpa.errors import ConfigError
from hpa.pipeline.recipe import Member, load_recipe, predictions_current, smoke_member, train_commands


def test_the_shipped_recipes_load_and_name_their_members():
    paper = load_recipe("paper")
    assert paper.duplicates == "drop" and paper.n_folds == 5
    names = [m.name for m in paper.members]
    assert "se_resnext50_768" in names and "se_resnext50_1024" in names  # two input sizes
    assert {m.arch for m in paper.members} >= {"se_resnext50", "resnet50", "resnet101", "inception_v4", "densenet121"}
    assert [m.name for m in load_recipe("demo").members] == ["tiny_cnn_128"]


def test_bad_recipes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such recipe .* known: demo, foundation, paper"):
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
    one = train_commands(m, "d", "r", 3, "cuda", 1)  # a fold of --parallel-folds: one process on one GPU
    assert one[1:3] == ["-m", "hpa.cli.train_fold"] and "--resume" in one
    assert "crop=null" in one and "lr_groups=[0.5, 1.0]" in one
    ddp = train_commands(m, "d", "r", 3, "auto", 4)
    assert ddp[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 4]
    assert ddp[6:8] == ["-m", "hpa.cli.train_fold"]


def test_member_config_is_what_train_fold_builds():
    from hpa.cli.train_fold import parse
    from hpa.pipeline.recipe import member_config

    m = Member(arch="resnet50", size=1024, set={"crop": 768, "crop_large": 1024, "model": {"head_dropout": [0.3]}})
    cli, _ = parse(["--arch", "resnet50", "--fold", "2", "--size", "1024", "--data-dir", "d",
                               "--set", "crop=768", "--set", "crop_large=1024", "--set", "model.head_dropout=[0.3]"])
    assert member_config(m, "d", 2) == cli


def test_predictions_are_redone_when_a_checkpoint_tta_or_folds_change(tmp_path):
    """Up to date means: every fold's OOF and test sidecars name today's best.pt (by content), folds
    table and test-time settings, whatever the file times say."""
    import json

    m = Member(arch="tiny_cnn", size=64)
    runs, preds = tmp_path / "runs", tmp_path / "preds"
    tta, amp, folds_sha = ("id", "hflip"), "bf16", "f" * 64
    assert not predictions_current(m, runs, preds, [0, 1], tta, amp, folds_sha)
    preds.mkdir()
    for f in (0, 1):
        (runs / "tiny_cnn_64" / f"f{f}").mkdir(parents=True)
        (runs / "tiny_cnn_64" / f"f{f}" / "best.pt").write_text(f"weights {f}")
        for k in ("oof", "test"):
            (preds / f"tiny_cnn_64_f{f}_{k}.csv").write_text("x")
            producer = {"fold": f, "checkpoint_sha256": file_sha256(runs / "tiny_cnn_64" / f"f{f}" / "best.pt"),
                        "epoch": 3, "sizes": [64], "tta": list(tta), "amp": amp}
            (preds / f"tiny_cnn_64_f{f}_{k}.json").write_text(json.dumps({"folds_sha256": folds_sha,
                                                                           "producer": producer}))
    assert predictions_current(m, runs, preds, [0, 1], tta, amp, folds_sha)
    past = time.time() - 3600  # file times do not matter: a prediction older than its run is still current
    os.utime(preds / "tiny_cnn_64_f1_oof.csv", (past, past))
    assert predictions_current(m, runs, preds, [0, 1], tta, amp, folds_sha)
    assert not predictions_current(m, runs, preds, [0, 1], ("id",), amp, folds_sha)  # another TTA
    assert not predictions_current(m, runs, preds, [0, 1], tta, "off", folds_sha)  # another precision
    assert not predictions_current(m, runs, preds, [0, 1], tta, amp, "0" * 64)  # other folds
    (runs / "tiny_cnn_64" / "f1" / "best.pt").write_text("retrained")  # same time, other content
    assert not predictions_current(m, runs, preds, [0, 1], tta, amp, folds_sha)


def test_parallel_folds_queue_jobs_across_members_one_per_gpu(tmp_path, monkeypatch):
    """The GPU pool with stand-in training processes: every (member, fold) runs once, pinned to one
    of the user's visible GPUs, never two at once on a GPU, and a failure is named at the end."""
    import json
    import sys

    from hpa.errors import HPAError
    from hpa.pipeline import recipe

    log = tmp_path / "log"
    log.mkdir()

    def fake(m, data_dir, runs, fold, device, gpus):
        assert (device, gpus) == ("cuda", 1)
        code = ("import json, os, sys, time; t = time.time(); time.sleep(0.3); "
                f"json.dump([os.environ['CUDA_VISIBLE_DEVICES'], t, time.time()], open({str(log)!r} + "
                f"'/{m.name}_{fold}', 'w')); sys.exit(3 if {fold == 2 and m.size == 96} else 0)")
        return [sys.executable, "-c", code]

    monkeypatch.setattr(recipe, "train_commands", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    members = [Member(arch="tiny_cnn", size=64), Member(arch="tiny_cnn", size=96)]
    jobs = [(m, f) for m in members for f in range(3)]
    with pytest.raises(HPAError, match="training failed for tiny_cnn_96 fold 2; run the same command again"):
        recipe.train_on_gpus(jobs, 2, tmp_path, tmp_path, "cuda", echo=lambda _: None, poll_s=0.02)
    runs = {p.name: json.loads(p.read_text()) for p in log.iterdir()}
    assert sorted(runs) == sorted(f"{m.name}_{f}" for m, f in jobs)
    assert {gpu for gpu, _, _ in runs.values()} == {"5", "7"}
    for gpu in ("5", "7"):
        spans = sorted((a, b) for g, a, b in runs.values() if g == gpu)
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))  # one job at a time per GPU


def test_the_recipe_points_the_user_at_every_output_it_made(tmp_path):
    """run_all.sh's last lines come from RecipeOutcome.files: each output that exists, by what it is."""
    from hpa.data import layout
    from hpa.pipeline.recipe import RecipeOutcome

    out = tmp_path / "work"
    made = {"submission": layout.recipe_submission(out), "per-class report": layout.recipe_report(out),
            "test images with class maps": layout.folder_report(layout.recipe_test_images(out))}
    for p in made.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    outcome = RecipeOutcome(tmp_path / "data", out, submission=made["submission"], plan=out / "plan.md")
    assert outcome.files() == made  # the plan was not written: not listed
