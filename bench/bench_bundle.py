"""Bundle prediction speed on the CPU, and the load time of a 30-checkpoint bundle.

    python bench/bench_bundle.py [--images 8] [--skip-load]

1. Images per second per core (torch on 1 thread) of a bundle with one small member (resnet18,
   random weights) at the paper's sizes, 768 and 1024 px, with 1 and 8 TTA views, bf16 and fp32,
   through hpa.prediction.ensemble.predict_ensemble on a folder of 2048 px PNGs (decoding and resizing
   included, as a user's folder costs).
2. load_bundle on the paper recipe's shape: 6 members (se_resnext50 x 2, resnet50, resnet101,
   inception_v4, densenet121) x 5 folds = 30 safetensors files (random weights), every file's
   sha256 checked; the time split into hashing and building + loading the models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results import write_section

from hpa.config import load_arch_config
from hpa.models import build_model
from hpa.prediction.bundle import load_bundle, write_bundle
from hpa.prediction.ensemble import Ensemble, Member, predict_ensemble
from hpa.prediction.inference import DIHEDRAL

PAPER = [("se_resnext50", 768), ("se_resnext50", 1024), ("resnet50", 768), ("resnet101", 1024),
         ("inception_v4", 768), ("densenet121", 768)]


def member(arch: str, size: int, folds: int, tta: int, amp: str) -> Member:
    cfg = load_arch_config(arch, size=size, pretrained="none")
    models = [build_model(arch, **cfg.model).eval().to(memory_format=torch.channels_last) for _ in range(folds)]
    return Member(f"{arch}_{size}", size, models, DIHEDRAL[:tta], [size], amp, list(range(folds)), [cfg] * folds)


def folder(n: int, side: int, root: Path) -> list[str]:
    import cv2

    from hpa.data.demo import render
    from hpa.data.images import write_sample_png

    rng = np.random.default_rng(0)
    ids = []
    for k in range(n):
        img = cv2.resize(render([0, 25], 256, rng), (side, side), interpolation=cv2.INTER_LINEAR)
        write_sample_png(root, f"s{k}", img)
        ids.append(f"s{k}")
    return ids


def bench_predict(n: int) -> str:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ids = folder(n, 2048, Path(d))
        for size in (768, 1024):
            for tta in (1, 8):
                for amp in ("bf16", "off"):
                    ens = Ensemble([member("resnet18", size, 1, tta, amp)], "equal", np.ones(1), np.full(28, 0.5))
                    predict_ensemble(ens, ids[:1], device=torch.device("cpu"), batch_size=4, raw_dir=Path(d))  # warm-up
                    t = time.perf_counter()
                    predict_ensemble(ens, ids, device=torch.device("cpu"), batch_size=4, raw_dir=Path(d))
                    dt = time.perf_counter() - t
                    rows.append(f"| {size} | {tta} | {amp if amp != 'off' else 'fp32'} | {n / dt:.2f} | "
                                f"{dt / n / tta:.3f} |")
    torch.set_num_threads(torch.get_num_interop_threads())
    return ("One member (resnet18, 1 fold), 2048 px PNG sources resized to the member's side, 1 thread:\n\n"
            "| side | TTA views | precision | images/s per core | s per view |\n|---|---|---|---|---|\n"
            + "\n".join(rows))


def bench_load() -> str:
    with tempfile.TemporaryDirectory() as d:
        members = [member(a, s, 5, 8, "bf16") for a, s in PAPER]
        ens = Ensemble(members, "equal", np.full(len(members), 1 / len(members)), np.full(28, 0.5))
        t = time.perf_counter()
        write_bundle(ens, Path(d) / "b", training_data={"labels": {}, "folds_sha256": ""},
                     summary={"oof_macro_f1": 0.0, "oof_rows": 0, "oof_macro_f1_at_0.5": 0.0})
        t_write = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(d) / "b").rglob("*.safetensors"))
        del members, ens
        from hpa.core.digests import file_sha256

        t = time.perf_counter()
        for p in sorted((Path(d) / "b").rglob("*.safetensors")):
            file_sha256(p)
        t_hash = time.perf_counter() - t
        t = time.perf_counter()
        bundle = load_bundle(Path(d) / "b")
        t_load = time.perf_counter() - t
        n = sum(len(m.models) for m in bundle.ensemble.members)
    return (f"The paper recipe's shape, {n} checkpoints ({size / 2**30:.2f} GiB of safetensors): written in "
            f"{t_write:.1f} s; `load_bundle` {t_load:.1f} s, of which hashing every file (sha256, checked against "
            f"config.json) is about {t_hash:.1f} s ({t_hash / t_load:.0%}) and building the 30 models and loading "
            "their weights the rest.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--skip-load", action="store_true")
    a = ap.parse_args()
    body = bench_predict(a.images)
    if not a.skip_load:
        body += "\n\n" + bench_load()
    write_section("bundle: prediction and load", f"python bench/bench_bundle.py --images {a.images}", body)


if __name__ == "__main__":
    main()
