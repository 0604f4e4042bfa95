"""The frozen-encoder path: embedding throughput and classifier training time.

    python bench/bench_embed.py [--arch vit_base16] [--batches 2] [--n 105000]

1. Images per second of the embedding pass (hpa.prediction.embeddings.embed_batch: one dihedral view, the
   features the head reads) of a ViT-B/16 (random weights: the cost does not depend on them) at
   224, 448 and 512 px, fp32 and bf16, on the device present (CPU here; a GPU when one is lent).
2. Seconds to train the classifiers of 5 folds on `--n` embeddings of width 768 (a ViT-B class
   token) and 2304 (what the toolkit stores: ACP of the token grid + class token), 8 views: the
   paper's head (30 epochs) and the logistic regression (L-BFGS, all 28 classes at once), on the
   training share of each fold (4/5). Random embeddings and labels (10% positives).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from results import write_section

from hpa.prediction.embeddings import Encoder, build_encoder, embed_batch
from hpa.training.frozen import FrozenSettings, fit_logreg, train_head


def throughput(arch: str, side: int, amp: str, batches: int, device: torch.device) -> float:
    model, _ = build_encoder(Encoder(arch, "none", side, ("id",), amp), device)
    batch = 8 if device.type == "cpu" else 64
    x = torch.rand(batch, 4, side, side, device=device)
    embed_batch(model, x[:2], ("id",), amp)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(batches):
        embed_batch(model, x, ("id",), amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - t0)


def head_seconds(n: int, width: int, kind: str, device: torch.device, epochs_timed: int) -> float:
    """Seconds of one fold's classifier on 4/5 of `n` samples; the head is timed for `epochs_timed`
    epochs and scaled to its 30 (every epoch is the same work)."""
    rng = np.random.default_rng(0)
    n_train = n * 4 // 5
    y = (rng.random((n_train, 28)) < 0.1).astype(np.float32)
    if kind == "head":
        x = rng.standard_normal((n_train, 8, width), dtype=np.float32).astype(np.float16)
        st = FrozenSettings()
        t0 = time.perf_counter()
        train_head(x, y, st.model_copy(update={"epochs": epochs_timed}), device, seed=0)
        return (time.perf_counter() - t0) * st.epochs / epochs_timed
    else:
        x = rng.standard_normal((n_train, width), dtype=np.float32)
        t0 = time.perf_counter()
        fit_logreg(x, y, 1.0, device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_base16")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--n", type=int, default=105_000, help="embeddings (the Kaggle train + HPAv18 count)")
    ap.add_argument("--epochs-timed", type=int, default=3, help="head epochs timed (scaled to 30)")
    ap.add_argument("--skip-heads", action="store_true")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    rows = []
    for side in (224, 448, 512):
        r = {amp: throughput(a.arch, side, amp, a.batches, device) for amp in ("off", "bf16")}
        rows.append(f"| {side} | {r['off']:.2f} | {r['bf16']:.2f} | {r['bf16'] / r['off']:.2f}x |")
        print(rows[-1], flush=True)
    n_img = 105_000 + 11_702
    fp32_224 = float(rows[0].split("|")[2])
    body = (f"Embedding pass of {a.arch} (random weights, one view, the stored features), {dev}:\n\n"
            "| side | fp32 images/s | bf16 images/s | bf16 / fp32 |\n|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nAt the fp32 224 px rate, embedding the {n_img:,} Kaggle train + HPAv18 + test images under 8 views "
            f"takes {n_img * 8 / fp32_224 / 3600:.1f} h here.")
    if not a.skip_heads:
        lines = []
        for width in (768, 2304):
            for kind in ("head", "logreg"):
                s = head_seconds(a.n, width, kind, device, a.epochs_timed) * 5
                lines.append(f"| {kind} | {width} | {s:.0f} |")
                print(lines[-1], flush=True)
        body += (f"\n\nClassifiers on {a.n:,} embeddings x 8 views (random), 5 folds (each on 4/5 of them; "
                 f"one fold timed, x 5; the head's first {a.epochs_timed} epochs timed, x {30 // a.epochs_timed}), "
                 f"{dev}:\n\n"
                 "| classifier | width | seconds, 5 folds |\n|---|---|---|\n"
                 + "\n".join(lines) + "\n\nThe head: 30 epochs of the paper's head (FC 1024, BatchNorm, dropout "
                 "0.5), batch 256, one random view per sample per epoch. The regression: the view-mean embedding, "
                 "L-BFGS to convergence (at most 500 iterations).")
    write_section("frozen encoders: embedding and classifier time",
                  f"python bench/bench_embed.py --n {a.n} --epochs-timed {a.epochs_timed}", body)


if __name__ == "__main__":
    main()
