"""The library's plumbing in-process (fast tier): config layers, the CLI wrapper, atomic outputs
and their modes, Ids, run-directory guards."""

import os
import stat

import pytest
import torch
import yaml

from hpa import cli
from hpa.cli.train_fold import parse
from hpa.config import TrainConfig, changed_settings
from hpa.core.atomic import atomic_outputs, atomic_write_text
from hpa.data.labels import validate_id
from hpa.errors import ConfigError, HPAError, LabelError, RunError
from hpa.prediction.inference import find_image_ids
from hpa.training.rundir import guard_run_dir


def test_validate_id_holds_exactly():
    assert validate_id("10580_1610_C1_1") == "10580_1610_C1_1"
    for bad in ("abc\n", "abc\r", "a b", "../x", "a/b", "", "_lead", "a..b", "ab\n\n"):
        with pytest.raises(LabelError):
            validate_id(bad)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_outputs() as tmp:
            tmp(tmp_path / "b.txt").write_text("y")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_atomic_outputs_are_all_or_nothing(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_outputs() as tmp:
            tmp(tmp_path / "a.csv").write_text("new")
            tmp(tmp_path / "b.csv").write_text("new")
            raise RuntimeError("the third output failed")
    assert (tmp_path / "a.csv").read_text() == "old" and not (tmp_path / "b.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]  # no temp files left


def test_config_layers_merge_in_order(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"lr": 0.5, "batch_size": 7, "epochs": 9, "model": {"width": 4}}))
    cfg, opts = parse(["--arch", "tiny_cnn", "--config", str(extra), "--set", "lr=0.25", "--set",
                                  "model.head_dropout=[0.1]", "--epochs", "3", "--lr-groups", "0.5", "1"])
    assert cfg.lr == 0.25  # --set over --config
    assert cfg.epochs == 3  # a flag over --config
    assert cfg.batch_size == 7  # --config over configs/tiny_cnn.yaml (32)
    assert cfg.optimizer == "adamw"  # configs/tiny_cnn.yaml over the default (sgd)
    assert cfg.momentum == 0.9  # TrainConfig's default
    assert cfg.model == {"width": 4, "stem_stride": 2, "input_norm": True, "head_hidden": [128], "head_dropout": [0.1]}
    assert cfg.lr_groups == [0.5, 1.0] and opts.runs.name == "runs"
    cfg2, _ = parse(["--arch", "tiny_cnn", "--amp", "off", "--hard-k", "8", "--crop", "null"])
    assert cfg2.amp == "off" and cfg2.hard_k == 8 and isinstance(cfg2.hard_k, int) and cfg2.crop is None


def test_a_saved_config_rebuilds_the_same_run(tmp_path):
    cfg, _ = parse(["--arch", "resnet18", "--size", "96", "--crop", "64", "--set", "model.head_hidden=[64]",
                               "--set",
                               "model.head_dropout=[0.2]"])
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(cfg.model_dump()))
    again, _ = parse(["--arch", "resnet18", "--config", str(saved)])
    assert again == cfg


def test_config_errors_name_the_layer(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lerning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown setting 'lerning_rate'"):
        parse(["--arch", "tiny_cnn", "--config", str(bad)])
    bad.write_text("batch_size: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: setting 'batch_size': .*integer"):
        parse(["--arch", "tiny_cnn", "--config", str(bad)])
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse(["--arch", "tiny_cnn", "--config", str(bad)])
    with pytest.raises(ConfigError, match=r"--set: model setting 'depth' does not exist for arch 'resnet18'"):
        parse(["--arch", "resnet18", "--set", "model.depth=3"])
    with pytest.raises(ConfigError, match=r"^crop 512 is larger than size 64: .* \(crop from defaults, size from "
                       r"--size\)$"):
        parse(["--arch", "resnet18", "--size", "64"])
    with pytest.raises(ConfigError, match=r"--lr: setting 'lr': .*greater than 0"):
        parse(["--arch", "tiny_cnn", "--lr", "0"])


def test_changed_settings_ignore_only_what_does_not_change_the_result():
    cfg = TrainConfig(arch="tiny_cnn", data_dir="d")
    old = cfg.model_dump()
    assert changed_settings(old, cfg.model_copy(update={"workers": 7, "data_dir": "/moved/d"})) == []
    assert changed_settings(old, cfg.model_copy(update={"lr": 1.0})) == ["lr 0.01 -> 1.0"]
    with_finder = cfg.model_copy(update={"find_lr": "use"})
    assert changed_settings({**with_finder.model_dump(), "lr": 0.003}, with_finder) == []


def test_guard_refuses_to_replace_a_run(tmp_path):
    cfg = TrainConfig(arch="tiny_cnn", data_dir="d", epochs=2)
    assert guard_run_dir(tmp_path, cfg, resume=False, overwrite=False) is None  # empty: start
    torch.save({"model": {}, "config": cfg.model_dump(), "epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(RunError, match=r"partly trained run \(epoch 1 of 2\); --resume continues it"):
        guard_run_dir(tmp_path, cfg, resume=False, overwrite=False)
    assert guard_run_dir(tmp_path, cfg, resume=False, overwrite=True) is None
    assert guard_run_dir(tmp_path, cfg, resume=True, overwrite=False)["epoch"] == 1
    with pytest.raises(RunError, match=r"--resume with changed settings \(batch_size 32 -> 4\)"):
        guard_run_dir(tmp_path, cfg.model_copy(update={"batch_size": 4}), resume=True, overwrite=False)


def test_cli_wrapper_one_line_and_exit_1(capsys):
    def boom(_):
        raise HPAError("data/x.csv, row 3: bad")

    with pytest.raises(SystemExit) as e:
        cli.run(boom)
    assert e.value.code == 1 and capsys.readouterr().err == "error: data/x.csv, row 3: bad\n"
    worker = LabelError("Caught LabelError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\nhpa.labels.LabelError: f.csv, row 2: invalid sample Id\n")
    assert cli.one_line(worker) == "f.csv, row 2: invalid sample Id"
    missing = FileNotFoundError(2, "No such file or directory", "a.csv")
    assert cli.one_line(missing) == "a.csv: no such file or directory"

    def signalled(_):
        from hpa.errors import Stopped

        raise Stopped("[x f0] stopped by SIGTERM at epoch 2, step 5: last.pt saved there")

    with pytest.raises(SystemExit) as e:  # a requested stop is not an error, but still ends non-zero
        cli.run(signalled)
    assert e.value.code == 1 and capsys.readouterr().err.startswith("stopped: [x f0] stopped by SIGTERM")


def test_own_image_ids_in_either_case(tmp_path):
    for name in ("a_red.png", "B_red.PNG", "c_red.TIF", "d_red.jpeg", "g_red.Png", "e_green.png", "bad id_red.png",
                 "f_red.txt"):
        (tmp_path / name).write_bytes(b"")
    ids, skipped = find_image_ids(tmp_path)
    assert ids == ["B", "a", "c", "d"] and list(skipped) == ["bad id_red.png"]
