"""One effective batch whatever the hardware: micro-batches accumulate to the step of one big batch,
`micro_batch: auto` picks per stored side the largest that fits a (here simulated) memory limit,
and an out-of-memory error mid-run is one line that says what to set, with last.pt kept."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch import nn

from hpa.config import TrainConfig
from hpa.errors import RunError
from hpa.training import memory
from hpa.training.engine import hard_k_of, train_step

CFG = TrainConfig(arch="tiny_cnn", hard_k=None, amp="off", channels_last=False, loss="bce", grad_clip=None)


def no_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 28))


@pytest.mark.parametrize("micro", [2, 3])
def test_micro_batches_accumulate_to_the_step_of_one_batch(micro):
    """4 micro-batches of 2 (or 3 + 3 + 2) give the update of one batch of 8, against a plain
    PyTorch step (`loss.backward(); opt.step()` on the whole batch), to float tolerance."""
    torch.manual_seed(1)
    x, y = torch.rand(8, 4, 16, 16), (torch.rand(8, 28) > 0.8).float()
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")

    ref = no_bn_model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9)
    opt.zero_grad()
    want_loss = nn.functional.binary_cross_entropy_with_logits(ref(x), y)  # mean over samples and classes
    want_loss.backward()
    opt.step()

    model = no_bn_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_step(model, x, y, loss_fn=lambda logits, target: loss_fn(logits, target).mean(1), optimizer=opt,
                      scaler=scaler, cfg=CFG, micro=micro)
    assert loss == pytest.approx(want_loss.item(), rel=1e-6)
    for a, b in zip(ref.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert hard_k_of(4, 2, 8) == 1 and hard_k_of(0.5, 2, 8) == 0.5 and hard_k_of(4, 8, 8) == 4


def test_largest_fitting_is_exact_against_brute_force():
    for limit in (1, 7, 80, 133):
        for cap in range(0, limit + 3):
            calls = []

            def fits(m, cap=cap, calls=calls):
                calls.append(m)
                return m <= cap

            want = min(cap, limit) if min(cap, limit) >= 2 or cap >= limit else 0  # never 1: BatchNorm
            assert memory.largest_fitting(fits, limit) == want
            assert len(calls) <= 2 * math.ceil(math.log2(limit + 1)) + 2


def test_auto_micro_batches_fit_a_simulated_memory_limit_and_differ_by_side(monkeypatch):
    """A device whose memory holds BUDGET pixels per pass (probe_step raises OutOfMemoryError above
    it): each stored side gets the largest micro-batch under the budget, less the headroom; larger
    sides get smaller ones, and ceil(share / micro) micro-batches still make up the whole share."""
    budget = 40 * 512 ** 2
    seen = []

    def probe(model, loss_fn, cfg, device, m, side):
        seen.append((m, side))
        if m * side * side > budget:
            raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(memory, "can_probe", lambda device: True)
    monkeypatch.setattr(memory, "probe_step", probe)
    cfg = TrainConfig(arch="tiny_cnn", size=768, crop=512, crop_large=768, batch_size=80)
    model = no_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    micro = memory.micro_batches(model, None, cfg, torch.device("cpu"), [768, 1024], share=80)
    assert set(micro) == {768, 1024}
    for side, crop in ((768, 512), (1024, 768)):
        largest = budget // crop ** 2  # 40 and 17
        assert micro[side] == math.floor(largest * memory.HEADROOM) and micro[side] * crop ** 2 <= budget
        assert math.ceil(80 / micro[side]) * micro[side] >= 80
    assert micro[1024] < micro[768]
    assert {s for _, s in seen} == {512, 768}  # probed at the crop each side trains on
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # probing changed nothing
    assert torch.equal(rng, torch.get_rng_state())
    # a share that fits whole is used whole, without headroom
    assert memory.micro_batches(model, None, cfg, torch.device("cpu"), [768], share=8) == {768: 8}
    monkeypatch.setattr(memory, "can_probe", lambda device: False)  # a device neither probed nor counted
    assert memory.micro_batches(model, None, cfg, torch.device("meta"), [768, 1024], share=80) == {768: 80, 1024: 80}


@pytest.mark.parametrize("amp,width", [("off", 4), ("bf16", 2)])
def test_cpu_micro_batches_count_the_activations_autograd_keeps(monkeypatch, amp, width):
    """On the CPU (no out-of-memory error to probe for) the bytes saved for backward per sample are
    counted: for conv -> ReLU -> pool -> linear that is the conv's input (4 stains), the ReLU's output
    (8 maps) and the linear's 8 inputs, `width` bytes each; the micro-batch is what half the available
    memory holds, the whole share when it all fits, and too little memory is one line."""
    cfg = TrainConfig(arch="tiny_cnn", size=64, crop=48, crop_large=64, amp=amp, channels_last=False)
    model = no_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outputs = []  # the ReLU's outputs, saved for its backward: none may outlive the counting pass
    model[1].register_forward_hook(lambda mod, inp, out: outputs.append(weakref.ref(out)))
    for crop in (16, 48):
        assert memory.saved_bytes_per_sample(model, cfg, torch.device("cpu"), crop) == (12 * crop ** 2 + 8) * width
    assert len(outputs) == 4 and all(ref() is None for ref in outputs)
    per_sample = {64: (12 * 48 ** 2 + 8) * width, 85: (12 * 64 ** 2 + 8) * width}  # side 85 = 3072 px at 64
    budget = 40 * per_sample[85]
    monkeypatch.setattr(memory, "available_memory", lambda: budget)
    micro = memory.micro_batches(model, None, cfg, torch.device("cpu"), [64, 85], share=80)
    assert micro == {s: math.floor(budget * memory.CPU_MEMORY_SHARE / b) for s, b in per_sample.items()}
    assert micro[85] == 20 and micro[64] < 80
    assert memory.micro_batches(model, None, cfg, torch.device("cpu"), [64, 85], share=8) == {64: 8, 85: 8}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes on this machine: half each
    assert memory.micro_batches(model, None, cfg, torch.device("cpu"), [85], share=80) == {85: 10}
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * per_sample[85])
    with pytest.raises(RunError, match=r"not even two 64 px crops \(stored side 85\) fit in the 0.0 GiB of memory"):
        memory.micro_batches(model, None, cfg, torch.device("cpu"), [85], share=8)
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # not Linux: the whole share, as before
    assert memory.micro_batches(model, None, cfg, torch.device("cpu"), [64], share=80) == {64: 80}


def test_available_memory_is_what_linux_reports():
    free = memory.available_memory()
    if free is None:
        pytest.skip("no /proc/meminfo here")
    total = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < free <= total


def test_auto_is_recorded_reused_on_resume_and_an_oom_is_one_line(small_data, tmp_path, monkeypatch):
    import hpa
    import hpa.training.engine
    from hpa.config import read_yaml
    from hpa.core.checkpoint import load_checkpoint

    budget = 5 * 24 ** 2  # 5 crops of 24 px per pass

    def probe(model, loss_fn, cfg, device, m, side):
        if m * side * side > budget:
            raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(memory, "can_probe", lambda device: True)
    monkeypatch.setattr(memory, "probe_step", probe)
    lines = []
    settings = dict(epochs=2, batch_size=16, crop=24, workers=0, amp="off", pretrained="none", echo=lines.append)
    run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path / "a", **settings)
    assert read_yaml(run / "config.yaml")["micro_batches"] == {32: 4}  # floor(5 x 0.85)
    assert any("batch 16 per step = 1 process(es) x micro-batch x micro-batches: side 32 (crop 24): 4 x 4" in ln
               for ln in lines)
    ref = load_checkpoint(run / "last.pt")
    # an out-of-memory error in epoch 2: one line naming the side and micro-batch, last.pt of epoch 1 kept
    real_step = hpa.training.engine.train_step
    calls = []

    def oom_in_epoch_2(*a, **kw):
        calls.append(1)
        if len(calls) > len(ref["lr_steps"]) // 2:
            raise torch.OutOfMemoryError("simulated")
        return real_step(*a, **kw)

    monkeypatch.setattr(hpa.training.engine, "train_step", oom_in_epoch_2)
    with pytest.raises(RunError, match=r"\[tiny_cnn_32 f0\] out of device memory in epoch 2 at stored side 32 with "
                                       r"micro-batch 4; set --set micro_batches=\{32: 2\}.* --resume: last.pt of "
                                       r"epoch 1 is kept"):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path / "b", **settings)
    assert load_checkpoint(tmp_path / "b" / "tiny_cnn_32" / "f0" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(hpa.training.engine, "train_step", real_step)
    monkeypatch.setattr(memory, "probe_step", lambda *a: pytest.fail("a resumed run reuses its micro-batches"))
    run_b = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path / "b", **settings)
    resumed = load_checkpoint(run_b / "last.pt")
    assert resumed["config"]["micro_batches"] == {32: 4}
    assert all(torch.equal(ref["model"][k], resumed["model"][k]) for k in ref["model"])


@pytest.mark.slow
def test_compile_trains_like_eager(small_data, tmp_path, monkeypatch):
    """`compile: true` against eager after two steps of tiny_cnn in fp32, dropout off (compiled dropout
    draws its masks from another generator). TorchDynamo captures the toolkit's model, step and
    checkpoints for real; the graphs run through AOTAutograd's eager backend, because inductor's C++
    code generation costs a minute and a half on 2 CPU cores and is PyTorch's to test.
    Tolerance 1e-4 relative."""
    import pandas as pd

    import hpa

    compiled_models = []
    real_compile = torch.compile

    def compile_eagerly(model, **kw):
        compiled_models.append(model)
        return real_compile(model, **{**kw, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    losses = []
    for compiled in (False, True):
        run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path / str(compiled),
                             epochs=1, limit_batches=2, batch_size=16, crop=24, workers=0, amp="off",
                             pretrained="none", compile=compiled, echo=lambda _: None,
                             model={"width": 16, "stem_stride": 2, "input_norm": True, "head_hidden": [128],
                                    "head_dropout": [0.0]})
        losses.append(pd.read_csv(run / "log.csv")[["train_loss", "val_loss"]].to_numpy())
    assert len(compiled_models) == 1  # the compiled run, and only it, went through torch.compile
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.slow  # a subprocess: CUDA must be hidden before torch starts
def test_the_gpu_benchmark_says_so_in_one_line_without_cuda():
    import os
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "bench/bench_gpu.py"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines() == ["bench_gpu: no CUDA device here; nothing measured (run it on a machine "
                                             "with a GPU)"]


def test_sigterm_mid_epoch_saves_at_that_step_and_resume_equals_an_uninterrupted_run(small_data, tmp_path,
                                                                                    monkeypatch):
    """SIGTERM (a preemption) or SIGUSR1 (SLURM's time-limit warning) during a step: the step
    finishes, last.pt records the position inside the epoch, and the resumed run ends bit-identical
    to one never stopped (same batches, augmentation, dropout, schedule)."""
    import os
    import signal

    import hpa
    import hpa.training.engine
    from hpa.core.checkpoint import load_checkpoint
    from hpa.errors import Stopped

    settings = dict(epochs=2, batch_size=4, crop=24, workers=0, amp="off", pretrained="none", echo=lambda _: None)
    ref = load_checkpoint(hpa.train_fold("tiny_cnn", fold=1, size=32, data_dir=small_data, runs=tmp_path / "ref",
                                         **settings) / "last.pt")
    real_step, calls = hpa.training.engine.train_step, []

    def signalled(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives inside epoch 1's third step
        return real_step(*a, **kw)

    monkeypatch.setattr(hpa.training.engine, "train_step", signalled)
    with pytest.raises(Stopped, match=r"stopped by SIGUSR1 at epoch 1, step 3: last.pt saved there; run the same "
                                      "command again to resume"):
        hpa.train_fold("tiny_cnn", fold=1, size=32, data_dir=small_data, runs=tmp_path / "cut", **settings)
    saved = load_checkpoint(tmp_path / "cut" / "tiny_cnn_32" / "f1" / "last.pt")
    assert saved["epoch"] == 0 and saved["partial"]["step"] == 3 and len(saved["lr_steps"]) == 3
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is removed after training
    monkeypatch.setattr(hpa.training.engine, "train_step", real_step)
    lines = []
    run = hpa.train_fold("tiny_cnn", fold=1, size=32, data_dir=small_data, runs=tmp_path / "cut",
                         **{**settings, "echo": lines.append})
    assert any("resumed from" in ln and "step 3 of epoch 1" in ln for ln in lines)
    done = load_checkpoint(run / "last.pt")
    assert done["lr_steps"] == ref["lr_steps"] and "partial" not in done
    assert all(torch.equal(ref["model"][k], done["model"][k]) for k in ref["model"])
    assert [h["train_loss"] for h in done["history"]] == pytest.approx([h["train_loss"] for h in ref["history"]])
    assert [h["val_macro_f1"] for h in done["history"]] == [h["val_macro_f1"] for h in ref["history"]]


def test_micro_splits_never_leave_a_single_sample_and_use_the_fewest_parts():
    for n in range(1, 41):
        for m in range(2, n + 3):
            sizes = memory.micro_splits(n, m)
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1, (n, m, sizes)
            assert n == 1 or min(sizes) >= 2, (n, m, sizes)
            if m >= 3 or n % 2 == 0:  # micro 2 of an odd share: one part of 3 rather than a part of 1
                assert max(sizes) <= m, (n, m, sizes)
                fewest = next(k for k in range(1, n + 1) if k * m >= n)  # brute force
                assert len(sizes) == fewest, (n, m, sizes)
    assert memory.micro_splits(16, 3) == [3, 3, 3, 3, 2, 2] and memory.micro_splits(8, None) == [8]


def test_a_bad_micro_batch_setting_is_one_line_at_the_seam(small_data, tmp_path):
    import hpa
    from hpa.errors import ConfigError

    base = dict(epochs=1, batch_size=16, crop=24, workers=0, amp="off", pretrained="none", echo=lambda _: None)
    for setting, words in [({"micro_batch": 1}, "int >= 2"), ({"micro_batch": True}, "int >= 2"),
                           ({"micro_batch": 0}, "int >= 2"), ({"micro_batches": {32: 0}}, "micro-batch >= 2"),
                           ({"micro_batches": {32: -4}}, "micro-batch >= 2"),
                           ({"micro_batches": {32: True}}, "micro-batch >= 2"),
                           ({"micro_batches": {128: 4}}, "do not occur in the training data"),
                           ({"batch_size": 1}, "at least 2 samples")]:
        with pytest.raises(ConfigError, match=words) as e:
            hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, **{**base, **setting})
        assert "\n" not in str(e.value)


def test_a_batch_of_16_in_micro_batches_of_3_trains_a_batchnorm_head(small_data, tmp_path):
    """16 = 5 x 3 + 1 used to leave the head's BatchNorm1d one sample: now 3+3+3+3+2+2, logged so."""
    import hpa

    lines = []
    run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, epochs=1, batch_size=16,
                         crop=24, workers=0, amp="off", pretrained="none", micro_batch=3, echo=lines.append,
                         model={"head_hidden": [16], "head_dropout": [0.0]})
    assert (run / "best.pt").is_file()
    assert any("side 32 (crop 24): 3-2 x 6" in ln for ln in lines), lines
    lines.clear()
    hpa.train_fold("tiny_cnn", fold=1, size=32, data_dir=small_data, runs=tmp_path, epochs=1, batch_size=16, crop=24,
                   workers=0, amp="off", pretrained="none", micro_batch=4, echo=lines.append)
    assert any("side 32 (crop 24): 4 x 4" in ln for ln in lines), lines  # not "16"


@pytest.mark.parametrize("arch", ["se_resnext50", "resnet50", "resnet101", "inception_v4", "densenet121",
                                  "gapnet_pl"])
def test_auto_probe_finds_a_micro_batch_for_every_paper_arch_under_a_memory_limit(arch, monkeypatch):
    """The real probe step of each paper model (its BatchNorm head included) under a simulated limit
    of 3 crops per pass: the probe starts at 2, so it never asks BatchNorm to normalise one sample."""
    from hpa.config import load_arch_config
    from hpa.models import build_model
    from hpa.training.losses import build_loss

    real = memory.probe_step
    seen = []

    def limited(model, loss_fn, cfg, device, m, side):
        seen.append(m)
        if m > 3:
            raise torch.OutOfMemoryError("simulated")
        real(model, loss_fn, cfg, device, m, side)

    monkeypatch.setattr(memory, "can_probe", lambda device: True)
    monkeypatch.setattr(memory, "probe_step", limited)
    cfg = load_arch_config(arch, size=64, crop=32, crop_large=None, pretrained="none", amp="off", channels_last=False,
                           batch_size=8)
    torch.manual_seed(0)
    model = build_model(arch, **cfg.model)
    loss = build_loss(cfg.loss, torch.ones(28).numpy() * 10, alpha_e=cfg.alpha_e, gamma=cfg.gamma)
    micro = memory.micro_batches(model, loss, cfg, torch.device("cpu"), [64], share=8)
    assert micro == {64: 2}  # floor(3 x 0.85) = 2
    assert min(seen) == 2 and 1 not in seen
