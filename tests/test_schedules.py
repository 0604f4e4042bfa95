import math

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from hpa.training.schedules import cyclic_cosine, lr_range_test, schedule_shape


def make(cycle_steps=10, cycles=2, min_ratio=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.01}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.03}],
                          lr=0.03)
    return opt, cyclic_cosine(opt, cycle_steps, cycles, min_ratio)


def test_cosine_values_and_restarts():
    opt, sch = make()
    assert isinstance(sch, LambdaLR)  # a torch scheduler: its state and tooling work as usual
    lrs = []
    for _ in range(25):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sch.step()
    for step, (a, b) in enumerate(lrs):
        t = (step % 10) / 10 if step < 20 else None
        f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)) if t is not None else 0.1
        assert a == pytest.approx(0.01 * f) and b == pytest.approx(0.03 * f)  # groups keep their ratio
    assert lrs[0][1] == pytest.approx(0.03) and lrs[10][1] == pytest.approx(0.03)  # restart
    assert lrs[9][1] < lrs[5][1] < lrs[1][1]


def test_state_roundtrip_through_a_weights_only_checkpoint(tmp_path):
    opt, sch = make()
    for _ in range(7):
        opt.step()
        sch.step()
    torch.save(sch.state_dict(), tmp_path / "s.pt")
    opt2, sch2 = make()
    sch2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(3):
        opt.step(), sch.step(), opt2.step(), sch2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_schedule_shape_follows_epochs():
    assert schedule_shape(24, None, 1) == (24, 1)
    assert schedule_shape(10, None, 2) == (5, 2)
    assert schedule_shape(16, 4, None) == (4, 4)
    assert schedule_shape(10, 4, None) == (4, 3)
    assert schedule_shape(16, 4, 2) == (4, 2)


def test_lr_range_test_stays_below_the_divergence_limit():
    """Least squares with curvature lambda_max: SGD diverges above lr = 2 / lambda_max."""
    torch.manual_seed(0)
    x = torch.randn(256, 8) * torch.linspace(0.5, 3.0, 8)
    w_true = torch.randn(8, 1)
    y = x @ w_true
    lam_max = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max().item()
    model = torch.nn.Linear(8, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def step():
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    r = lr_range_test(step, opt, start_lr=1e-5, end_lr=10.0, steps=120)
    limit = 2 / lam_max
    assert limit / 30 < r["chosen_lr"] <= limit, (r["chosen_lr"], limit)
    assert r["chosen_lr"] == pytest.approx(r["min_loss_lr"] / 10)
    assert len(r["lrs"]) < 120  # stopped once the loss diverged
    k = r["lrs"].index(r["min_loss_lr"])
    assert r["smoothed"][k] == min(r["smoothed"])
    assert all(b > a for a, b in zip(r["lrs"], r["lrs"][1:]))  # exponential growth
    assert r["lrs"][1] / r["lrs"][0] == pytest.approx((10.0 / 1e-5) ** (1 / 119))
