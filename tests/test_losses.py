import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpa.training.losses import build_loss, effective_number_weights, hard_example_loss


def test_effective_number_weights_formula_and_limits():
    counts = np.array([1, 2, 10, 500, 12885])
    for alpha in (0.5, 0.9, 0.999):
        direct = [(1 - alpha) / (1 - alpha ** n) for n in counts]
        assert np.allclose(effective_number_weights(counts, alpha), direct)
        # Q_n by its recursion Q_n = alpha * Q_{n-1} + 1, Q_1 = 1 (the paper's derivation)
        q = 1.0
        for _ in range(2, 11):
            q = alpha * q + 1
        assert effective_number_weights([10], alpha)[0] == pytest.approx(1 / q)
    assert np.allclose(effective_number_weights(counts, 0.0), 1.0)
    assert np.allclose(effective_number_weights(counts, 1.0), 1 / counts)
    assert np.allclose(effective_number_weights(counts, 1 - 1e-9), 1 / counts, rtol=1e-4)  # the limit is continuous
    assert effective_number_weights([0], 0.99)[0] == pytest.approx(1.0)  # n = 0 treated as n = 1
    with pytest.raises(ValueError):
        effective_number_weights(counts, 1.5)


def data(n=6, c=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, (torch.rand(n, c, generator=g) < 0.2).float()


def test_bce_per_sample():
    logits, y = data()
    out = build_loss("bce")(logits, y)
    assert out.shape == (6,)
    ref = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    assert torch.allclose(out, ref)


def test_focal_against_hand_computation():
    logits, y = data()
    gamma, alpha = 2.0, 0.25
    out = build_loss("focal", gamma=gamma, alpha=alpha)(logits, y)
    p = 1 / (1 + np.exp(-logits.double().numpy()))
    t = y.numpy()
    pt = np.where(t == 1, p, 1 - p)
    at = np.where(t == 1, alpha, 1 - alpha)
    ref = (-at * (1 - pt) ** gamma * np.log(pt)).mean(1)
    assert np.allclose(out.numpy(), ref, rtol=1e-4, atol=1e-7)
    no_alpha = build_loss("focal", gamma=0.0)(logits, y)  # gamma 0, no alpha: plain BCE
    assert torch.allclose(no_alpha, build_loss("bce")(logits, y), atol=1e-6)


@pytest.mark.parametrize("base", ["bce", "focal"])
def test_eloss_weights_classes_by_effective_number(base):
    logits, y = data()
    counts = np.arange(1, 29) * 40
    w = effective_number_weights(counts, 0.999)
    w = torch.tensor(w / w.mean(), dtype=torch.float32)  # documented: normalised to mean 1
    out = build_loss(f"eloss_{base}", counts, alpha_e=0.999)(logits, y)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    per = bce if base == "bce" else (1 - torch.exp(-bce)) ** 2 * bce
    assert torch.allclose(out, (per * w).mean(1), atol=1e-6)
    with pytest.raises(ValueError, match="needs class_counts"):
        build_loss(f"eloss_{base}")


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'dice'; choose from bce, focal, eloss_bce, eloss_focal"):
        build_loss("dice")


def test_hard_example_loss_matches_sorting():
    losses = torch.tensor([0.3, 2.0, 0.1, 1.5, 0.7, 0.9])
    s = sorted(losses.tolist(), reverse=True)
    assert hard_example_loss(losses, 2).item() == pytest.approx(sum(s[:2]) / 2)
    assert hard_example_loss(losses, 0.5).item() == pytest.approx(sum(s[:3]) / 3)
    assert hard_example_loss(losses, None).item() == pytest.approx(losses.mean().item())
    assert hard_example_loss(losses, 100).item() == pytest.approx(losses.mean().item())
    assert hard_example_loss(losses, 0.01).item() == pytest.approx(2.0)  # at least one sample
    for bad in (0, 1.5, 0.0):
        with pytest.raises(ValueError):
            hard_example_loss(losses, bad)


def test_gradients_flow_only_through_kept_samples():
    logits, y = data(n=8)
    logits.requires_grad_(True)
    per = build_loss("bce")(logits, y)
    hard_example_loss(per, 3).backward()
    kept = set(torch.topk(per.detach(), 3).indices.tolist())
    for i in range(8):
        nonzero = logits.grad[i].abs().sum().item() > 0
        assert nonzero == (i in kept)
    assert math.isfinite(logits.grad.sum().item())
