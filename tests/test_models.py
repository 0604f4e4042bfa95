import logging

import numpy as np
import pytest
import torch
from scripts import run_script
from torch import nn

from hpa import models
from hpa.config import load_arch_config
from hpa.errors import ConfigError, WeightsError
from hpa.models.gapnet import GapNetPL
from hpa.models.heads import AdaptiveConcatPool2d

ARCHS = models.list_archs()


def paper_model(arch: str) -> nn.Module:
    """`arch` with the model settings of its paper config."""
    return models.build_model(arch, **load_arch_config(arch).model)


def test_registry_lists_the_paper_archs():
    for a in ("resnet50", "resnet101", "inception_v4", "densenet121", "densenet169", "se_resnext50", "senet154",
              "gapnet_pl", "tiny_cnn"):
        assert a in ARCHS


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown arch 'resnet5'; valid archs: .*resnet50.*se_resnext50"):
        models.build_model("resnet5")
    with pytest.raises(ConfigError, match="unknown arch 'resnet5'; valid archs: .*resnet50"):
        load_arch_config("resnet5")


def test_train_fold_takes_arch_choices_from_the_registry():
    r = run_script("train_fold.py", "--arch", "nope", "--fold", "0")
    assert r.returncode == 1 and "invalid choice: 'nope'" in r.stderr and "se_resnext50" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


LARGE = {"vit_large16", "senet154"}  # seconds to build: the slow tier's; their code paths are also the base models'


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in LARGE else a for a in ARCHS])
def test_every_arch_takes_4_channels_and_any_size_and_its_head_matches_its_config(arch):
    """One build per arch (the large ones take seconds): 4 input channels, two input shapes, and the
    head's widths and dropouts as its paper config says, its input width computed from the encoder."""
    torch.manual_seed(0)
    m = paper_model(arch).eval()
    first = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
    assert first.in_channels == 4
    with torch.no_grad():
        for shape in ((2, 4, 64, 64), (2, 4, 96, 128)):
            out = m(torch.rand(*shape))
            assert out.shape == (2, 28) and torch.isfinite(out).all()
    if arch == "gapnet_pl":  # its head is GapNet-PL's own (tested below)
        return
    cfg = load_arch_config(arch).model
    linears = [x for x in m.head if isinstance(x, nn.Linear)]
    drops = [x.p for x in m.head if isinstance(x, nn.Dropout)]
    assert [lin.out_features for lin in linears] == cfg["head_hidden"] + [28]
    assert drops == cfg["head_dropout"]
    with torch.no_grad():
        if hasattr(m, "tokens_to_grid"):  # a ViT: its token grid pooled, plus the class token
            _, grid = m.tokens_to_grid(m.encoder.forward_features(torch.rand(2, 4, 96, 96)), (96, 96))
            assert linears[0].in_features == grid.shape[1] * (m.pool.feat_mult + 1)
            return
        feats = m.encoder(torch.rand(2, 4, 96, 96))
    assert linears[0].in_features == feats.shape[1] * m.pool.feat_mult


def test_acp_shape_and_channel_order():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    x[1, 2, 0, 0] = 1000.0
    out = AdaptiveConcatPool2d()(x)
    assert out.shape == (2, 6)
    assert torch.allclose(out[:, :3], x.mean((2, 3)))  # average first
    assert torch.allclose(out[:, 3:], x.amax((2, 3)))  # then max
    assert out[1, 5] == 1000.0
    assert AdaptiveConcatPool2d.feat_mult == 2


def test_paper_head_sizes():
    r50 = paper_model("resnet50")
    assert [x.out_features for x in r50.head if isinstance(x, nn.Linear)] == [1024, 28]
    assert r50.head[0].in_features == 4096
    r101 = paper_model("resnet101")
    assert [(x.in_features, x.out_features) for x in r101.head if isinstance(x, nn.Linear)] == \
        [(4096, 4096), (4096, 1024), (1024, 28)]
    assert [x.p for x in r101.head if isinstance(x, nn.Dropout)] == [0.25, 0.5]
    assert paper_model("inception_v4").head[0].in_features == 3072


def test_overrides_win_over_config():
    m = models.build_model("tiny_cnn", head_hidden=[32, 16], head_dropout=[0.1, 0.3], pool="avg")
    assert [x.out_features for x in m.head if isinstance(x, nn.Linear)] == [32, 16, 28]
    assert m.head[0].in_features == 128  # avg pooling: feat_mult 1


@pytest.mark.parametrize("arch", ["resnet18", "tiny_cnn", "gapnet_pl"])
def test_layer_groups_partition_the_parameters(arch):
    m = models.build_model(arch)
    every = {id(p) for p in m.parameters()}
    for n in (2, 3):
        groups = m.layer_groups(n)
        ids = [id(p) for g in groups for p in g]
        assert len(groups) == n and len(ids) == len(set(ids)) and set(ids) == every
        assert {id(p) for p in groups[-1]} == {id(p) for p in m.head.parameters()}


def _group_modules(m: nn.Module, depth: int) -> list[set[str]]:
    """Per layer group, the encoder modules (name cut to `depth` parts) whose parameters it holds."""
    name_of = {id(p): n for n, p in m.encoder.named_parameters()}
    return [{".".join(name_of[id(p)].split(".")[:depth]) for p in g if id(p) in name_of} for g in m.layer_groups(3)]


DENSE_EARLY = {"features.conv0", "features.norm0", "features.denseblock1", "features.transition1",
               "features.denseblock2"}
STAGE_GROUPS = {  # arch: (depth of a stage's module name, early group, late group); the split is at a stage boundary
    "resnet50": (1, {"conv1", "bn1", "layer1", "layer2"}, {"layer3", "layer4"}),
    "resnet101": (1, {"conv1", "bn1", "layer1", "layer2"}, {"layer3", "layer4"}),
    "se_resnext50": (1, {"layer0", "layer1", "layer2"}, {"layer3", "layer4"}),
    "densenet121": (2, DENSE_EARLY, {"features.transition2", "features.denseblock3", "features.transition3",
                                     "features.denseblock4", "features.norm5"}),
    "inception_v4": (2, {f"features.{k}" for k in range(10)}, {f"features.{k}" for k in range(10, 22)}),
    "tiny_cnn": (1, {str(k) for k in range(15)}, {str(k) for k in range(15, 27)}),
}


@pytest.mark.parametrize("arch", sorted(STAGE_GROUPS))
def test_three_layer_groups_split_the_encoder_at_a_stage_boundary(arch):
    depth, early, late = STAGE_GROUPS[arch]
    m = paper_model(arch)
    got_early, got_late, _ = _group_modules(m, depth)
    param_modules = lambda names: {n for n in names if any(True for _ in dict(m.encoder.named_modules())[n]  # noqa: E731
                                                           .parameters())}
    assert got_early == param_modules(early) and got_late == param_modules(late)
    groups = m.layer_groups(3)
    assert {id(p) for p in groups[2]} == {id(p) for p in m.head.parameters()}


def _three_channel_state(timm_name):
    import timm

    torch.manual_seed(1)
    return timm.create_model(timm_name, pretrained=False, in_chans=3, num_classes=1000).state_dict()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_weights_from_local_file(tmp_path, fmt):
    sd = _three_channel_state("resnet18")
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)  # wrapped, DataParallel keys
    else:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    m = models.build_model("resnet18", pretrained=str(path))
    w3, w4 = sd["conv1.weight"], m.encoder.conv1.weight.detach()
    assert w4.shape[1] == 4
    # documented rule: RGB kernels repeated (R, G, B, R) and scaled by 3/4
    assert torch.allclose(w4[:, :3], w3 * 0.75)
    assert torch.allclose(w4[:, 3], w3[:, 0] * 0.75)
    assert torch.equal(m.encoder.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_cadene_se_resnext50_state_dict_loads(tmp_path):
    """Cadene pretrainedmodels' se_resnext50_32x4d uses the key layout of timm's legacy model."""
    sd = _three_channel_state("legacy_seresnext50_32x4d")
    assert "last_linear.weight" in sd and "layer0.conv1.weight" in sd
    path = tmp_path / "se_resnext50_32x4d-a260b3a4.pth"
    torch.save(sd, path)
    m = models.build_model("se_resnext50", pretrained=str(path))
    assert torch.allclose(m.encoder.layer0.conv1.weight[:, :3], sd["layer0.conv1.weight"] * 0.75)
    assert torch.equal(m.encoder.layer3[2].se_module.fc1.weight, sd["layer3.2.se_module.fc1.weight"])


def test_wrong_or_missing_weights_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth: weights file not found"):
        models.build_model("resnet18", pretrained=str(tmp_path / "nope.pth"))
    path = tmp_path / "r50.pth"
    torch.save(_three_channel_state("resnet50"), path)
    with pytest.raises(WeightsError, match="r50.pth: .*shape"):
        models.build_model("resnet18", pretrained=str(path))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth: cannot read weights"):
        models.build_model("resnet18", pretrained=str(bad))


def test_random_init_says_so(caplog):
    with caplog.at_level(logging.INFO):
        models.build_model("resnet18")
    assert "resnet18: no pretrained weights, random initialisation" in caplog.text


def test_gapnet_structure_and_regularisation():
    base, extra = GapNetPL(), GapNetPL(extra_first_stage=2)
    n_conv = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.stage1)  # noqa: E731
    assert n_conv(base) == 1 and n_conv(extra) == 3
    assert base.head[0].in_features == 32 + 64 + 128
    assert [x.out_features for x in base.head if isinstance(x, nn.Linear)] == [256, 256, 28]
    assert [x.p for x in base.head if isinstance(x, nn.AlphaDropout)] == [0.3, 0.3]
    ws = [m.weight for m in base.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    expected = 1e-7 * sum(w.abs().sum() for w in ws) + 1e-5 * sum((w ** 2).sum() for w in ws)
    assert torch.allclose(base.regularization(1e-7, 1e-5), expected)
    assert np.isfinite(base.regularization(1e-7, 1e-5).item())
