"""Every paper config against the settings Zhang et al. 2021 state ("Training settings for
different base models" and the sections on each backbone); quoted where a number comes from."""



import numpy as np
import pytest
import torch
import yaml

from hpa.cli.train_fold import parse
from hpa.config import TrainConfig, changed_settings, load_arch_config
from hpa.errors import ConfigError

PAPER = {
    # "SGD with a default learning rate of 0.01, default weight decay of 1e-6 and default momentum of 0.9"
    "default": dict(optimizer="sgd", momentum=0.9, weight_decay=1e-6),
    # "learning rates of [1e-2, 2e-2] ... cycle ... 4 epochs ... 3 or 4 cycles ... one buffering layer of 1024 units
    # with a 0.5 dropout ratio ... 512 x 512 crops ... batch size of 74"
    "resnet50": dict(lrs=[0.01, 0.02], cycle_epochs=4, cycles_range=(3, 4), head=[1024], dropout=[0.5], crop=512,
                     batch_size=74),
    # "the same as that of ResNet50 except ... two separate buffering layers with 4096 units, a 0.25 dropout ratio
    # and 1024 units, a 0.5 dropout ratio"
    "resnet101": dict(lrs=[0.01, 0.02], cycle_epochs=4, cycles_range=(3, 4), head=[4096, 1024], dropout=[0.25, 0.5],
                      crop=512),
    # "batch size of 48 with an input size of 512 x 512 ... one buffering layer with 1024 units ... 50% dropout"
    "inception_v4": dict(batch_size=48, crop=512, head=[1024], dropout=[0.5]),
    # "learning rates of [2e-3, 4e-3] to train for approximately 5 cycles"
    "densenet121": dict(lrs=[0.002, 0.004], cycles_range=(5, 5)),
    "densenet169": dict(lrs=[0.002, 0.004], cycles_range=(5, 5)),
    # "[1e-3, 3e-3, 5e-3] as the learning rate ... A batch size of 80"
    "se_resnext50": dict(lrs=[0.001, 0.003, 0.005], batch_size=80),
    "senet154": dict(lrs=[0.001, 0.003, 0.005], batch_size=80),
    # "input size of 768 x 768 ... SGD with a momentum of 0.9 ... initial learning rate of 0.01 ... L1 norm of 1e-7
    # and L2 norm of 1e-5 ... dropout rate in the fully connected layers is still 30% ... batch size of 128"
    "gapnet_pl": dict(lrs=[0.01, 0.01], size=768, crop=None, momentum=0.9, l1=1e-7, l2=1e-5, weight_decay=0.0,
                      batch_size=128, gapnet_dropout=0.3),
}


@pytest.mark.parametrize("arch", [a for a in PAPER if a != "default"])
def test_config_follows_the_paper(arch):
    cfg = load_arch_config(arch)
    want = {**PAPER["default"], **PAPER[arch]}
    if arch == "gapnet_pl":
        want.pop("weight_decay")
        assert cfg.weight_decay == 0.0  # "no other weight decay" than its L1/L2 terms
        assert cfg.model["dropout"] == want.pop("gapnet_dropout") and cfg.model["extra_first_stage"] > 0
    if "lrs" in want:
        lrs = want.pop("lrs")
        assert len(cfg.lr_groups) == len(lrs)
        assert [cfg.lr * m for m in cfg.lr_groups] == pytest.approx(lrs, rel=0.01)
    if "cycles_range" in want:
        lo, hi = want.pop("cycles_range")
        cycles = cfg.cycles or cfg.epochs / cfg.cycle_epochs
        assert lo <= cycles <= hi
    if "head" in want:
        assert cfg.model["head_hidden"] == want.pop("head") and cfg.model["head_dropout"] == want.pop("dropout")
    for key, value in want.items():
        assert getattr(cfg, key) == (pytest.approx(value) if isinstance(value, float) else value), key
    if cfg.crop:  # the paper's crop is 2/3 of the stored 768 side
        assert cfg.crop == 512 and cfg.size == 768


def test_the_shared_defaults_have_one_source(capsys):
    """TrainConfig's fields hold the shared defaults (no defaults file restates them); each is
    described, and train_fold.py --help shows each with its value."""
    from hpa.cli.train_fold import parse
    from hpa.config import CONFIG_DIR, TrainConfig

    assert not (CONFIG_DIR / "default.yaml").exists()
    fields = TrainConfig.model_fields
    assert all(f.description for f in fields.values())
    with pytest.raises(SystemExit):
        parse(["--help"])  # no --arch: the defaults themselves
    text = " ".join(capsys.readouterr().out.split())
    for key, f in fields.items():
        if key != "model":
            want = "required" if f.is_required() else f.default
            assert f"--{key.replace('_', '-')}" in text and f"[default: {want}]" in text, key


def test_the_allowed_values_are_those_their_users_accept():
    """Each value a config or a flag may name is one its consumer builds (and the flag offers it):
    a loss the loss factory makes, a precision autocast takes, a duplicates mode the fold writer
    knows; a value outside the set is refused by each."""
    import typing

    from hpa.api import split_folds
    from hpa.cli.train_fold import build_parser
    from hpa.config import TrainConfig
    from hpa.data.folds import DUPLICATES
    from hpa.pipeline.recipe import Recipe
    from hpa.prediction.inference import PredictOptions
    from hpa.training.losses import build_loss

    losses = typing.get_args(TrainConfig.model_fields["loss"].annotation)
    logits, y = torch.zeros(4, 28), torch.zeros(4, 28)
    for name in losses:
        assert build_loss(name, np.full(28, 10.0))(logits, y).shape == (4,)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge", np.full(28, 10.0))
    flags = {a.dest: a.choices for a in build_parser(["--arch", "tiny_cnn"])._actions}
    assert tuple(flags["loss"]) == losses and tuple(flags["amp"]) == typing.get_args(
        TrainConfig.model_fields["amp"].annotation)
    for amp in flags["amp"]:
        assert PredictOptions.make(amp=amp).amp == amp
    with pytest.raises(ConfigError, match="amp='fp8'"):
        PredictOptions.make(amp="fp8")
    assert typing.get_args(Recipe.model_fields["duplicates"].annotation) == DUPLICATES
    with pytest.raises(ConfigError, match="duplicates='merge'"):
        split_folds([], "never.csv", groups="g.csv", duplicates="merge")


def test_named_weights_set_the_crop_nobody_set_to_their_native_side():
    """`train_fold.py --arch vit_base16 --pretrained dino4cells-hpa-fov --size 224` (the manual's
    command) stopped on "crop 512 is larger than size 224": a default crop is now the weights' own side
    (224 for DINO4Cells, 448 for SubCell) at most the stored size; a crop the user sets is kept, and
    refused when it does not fit."""
    from hpa.cli.train_fold import parse

    cfg, _ = parse(["--arch", "vit_base16", "--pretrained", "dino4cells-hpa-fov", "--size", "224", "--data-dir", "d"])
    assert (cfg.crop, cfg.crop_large, cfg.model["img_size"]) == (224, None, 224)
    cfg, _ = parse(["--arch", "vit_base16", "--pretrained", "subcell-rybg-mae", "--size", "640", "--data-dir", "d"])
    assert cfg.crop == 448
    cfg, _ = parse(["--arch", "vit_base16", "--pretrained", "dino4cells-hpa-fov", "--size", "448", "--crop", "320",
                    "--data-dir", "d"])
    assert cfg.crop == 320
    with pytest.raises(ConfigError, match="crop 512 is larger than size 224"):
        parse(["--arch", "vit_base16", "--pretrained", "dino4cells-hpa-fov", "--size", "224", "--crop", "512",
               "--data-dir", "d"])
    assert parse(["--arch", "se_resnext50", "--data-dir", "d"])[0].crop == 512  # the paper's, without named weights


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
