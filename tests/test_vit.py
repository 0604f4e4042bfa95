"""Vision transformers in the registry: any input size, the paper's head over the token grid and
the class token, layer-wise LR decay against its formula, class activation maps on the token grid,
a training run; ConvNeXt beside them."""

from __future__ import annotations

import pytest
import torch

import hpa
from hpa.config import load_arch_config
from hpa.models import build_model, list_archs
from hpa.prediction.explain import grad_cam
from hpa.training.engine import build_optimizer


def tiny_vit():
    torch.manual_seed(0)
    return build_model("vit_tiny16", head_hidden=[16], head_dropout=[0.0]).eval()


def test_the_transformers_and_convnext_are_registered():
    assert {"vit_tiny16", "vit_base16", "vit_large16", "convnext_tiny"} <= set(list_archs())
    for arch in ("vit_base16", "vit_large16", "convnext_tiny"):
        cfg = load_arch_config(arch)
        assert cfg.model["normalize"] == "imagenet" and cfg.optimizer == "adamw"


def test_any_input_size_and_the_head_sees_the_token_grid_and_the_class_token():
    net = tiny_vit()
    for h, w in ((64, 64), (96, 96), (64, 128)):
        assert net(torch.rand(2, 4, h, w)).shape == (2, 28)
    seen = {}
    net.grid.register_forward_hook(lambda m, i, o: seen.update(grid=o.shape))  # update returns None: no change
    net.head[0].register_forward_hook(lambda m, i, o: seen.update(head_in=i[0].shape))
    net(torch.rand(1, 4, 96, 64))
    assert seen["grid"] == (1, 192, 6, 4)  # 96 x 64 px in 16 px patches
    assert seen["head_in"] == (1, 192 * 3)  # average + max over the grid, + the class token


def test_layer_decay_gives_block_i_lr_times_decay_to_the_depth_above_it():
    net = tiny_vit()
    cfg = load_arch_config("vit_tiny16", lr=1e-3, layer_decay=0.5)
    opt = build_optimizer(net, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    blocks = len(net.encoder.blocks)  # 12
    for name, p in net.named_parameters():  # the formula by name, independently of depth_of
        if name.startswith("encoder.blocks."):
            depth = int(name.split(".")[2]) + 1
        elif name.startswith(("encoder.patch_embed", "encoder.cls_token", "encoder.pos_embed")):
            depth = 0
        else:  # the final norm and the head
            depth = blocks + 1
        assert lr_of[id(p)] == pytest.approx(1e-3 * 0.5 ** (blocks + 1 - depth)), name
    assert len(lr_of) == len(list(net.parameters()))
    with pytest.raises(hpa.errors.HPAError, match="not a vision transformer"):
        build_optimizer(build_model("tiny_cnn"), load_arch_config("tiny_cnn", layer_decay=0.5))


def test_class_maps_of_a_vit_come_from_its_token_grid():
    net = tiny_vit()
    x = torch.rand(2, 4, 64, 96)
    cam = grad_cam(net, x, [0, 5])
    assert cam.shape == (2, 2, 64, 96) and torch.isfinite(cam).all() and (cam >= 0).all()
    # the evidence of one patch: a model whose class-0 logit reads the grid at one token only
    with torch.no_grad():
        net.head[-1].weight.zero_()
    captured = {}

    def one_token(module, inputs, output):
        captured["grid"] = output
        mask = torch.zeros_like(output)
        mask[:, :, 1, 4] = 1  # the token of rows 16-31, columns 64-79
        return output * mask

    net.grid.register_forward_hook(one_token)
    with torch.no_grad():
        net.head[-1].weight[0, : 192 * 2].fill_(1.0)  # the pooled grid's average and max
    cam = grad_cam(net, torch.rand(1, 4, 64, 96), [0])[0, 0]
    inside = cam[16:32, 64:80].sum() / cam.sum()
    assert inside > 0.5, float(inside)


@pytest.mark.slow
def test_a_vit_and_convnext_train_a_fold(small_data, tmp_path):
    for arch in ("vit_tiny16", "convnext_tiny"):
        run = hpa.train_fold(arch, fold=0, size=32, data_dir=small_data, runs=tmp_path, epochs=1, batch_size=8,
                             crop=None, workers=0, amp="off", pretrained="none", limit_batches=2,
                             echo=lambda _: None, **({"model": {"normalize": "none"}} if arch == "convnext_tiny"
                                                     else {}))
        assert (run / "best.pt").is_file()


def test_a_vit_takes_any_side_not_only_multiples_of_its_patch():
    """A 3072 px field resized for a 64 px run is 85 px: ViTs pad the last partial patch (timm's
    dynamic_img_pad) instead of stopping on an AssertionError, in training, embedding and prediction."""
    from hpa.models import build_model

    model = build_model("vit_tiny16", pretrained="none").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 4, 85, 100)).shape == (2, 28)
        _, grid = model.tokens_to_grid(model.encoder.forward_features(model.prepare(torch.rand(1, 4, 85, 100))),
                                       (85, 100))
    assert grid.shape[-2:] == (6, 7)  # the token grid a class map weighs: ceil(85 / 16) x ceil(100 / 16)
