"""Which of the paper's tricks help on your data: each factor against the arch's paper config.

    python ablate.py --data-dir data/demo --arch resnet18 --size 128 --factors loss,hard_k,pool --seeds 3 \
        --n-folds 2 [--set epochs=8]

Factors (config keys, or test-time): pool (acp / gap / max), head_hidden (paper / none), hard_k
(off / 0.25 / 0.5 / 0.75), loss (bce / focal / eloss_bce / eloss_focal), alpha_e (0.9 / 0.99 /
0.999), cycles (cyclic restarts / one cycle / constant LR), oversample_max (on / off), duplicates
(the folds rebuilt with near-duplicates dropped / grouped / ignored; needs dedup.py's groups), tta (1 / 8)
and thresholds (paper / flat 0.5 / exact / the blend's auto). Runs that exist are reused and a
killed ablation resumes. Writes ablations/<name>/: results.csv (one row per variant, seed and
fold), summary.csv, table.md (mean macro F1 with 95% intervals, the paired difference to the
baseline and whether it is significant) and plot.png.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.config import arch_layers, build_config, parse_set
from hpa.models import list_archs
from hpa.pipeline.ablation import ALL_FACTORS, run_ablation


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory (prepared, with folds.csv)")
    ap.add_argument("--arch", required=True, choices=list_archs(), help="the baseline: this arch's paper config")
    ap.add_argument("--size", type=cli.positive_int, required=True, help="prepared image size")
    ap.add_argument("--factors", required=True,
                    help=f"comma-separated factors: {', '.join(ALL_FACTORS)}")
    ap.add_argument("--seeds", type=cli.positive_int, default=3, help="seeds per variant")
    ap.add_argument("--n-folds", type=cli.positive_int, default=2, help="folds of folds.csv to train (the first K)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="baseline setting overrides")
    ap.add_argument("--name", help="output name (default: <arch>_<size>)")
    ap.add_argument("--out-dir", type=Path, default=Path("ablations"), help="where ablations/<name>/ goes")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--jobs", type=cli.positive_int, default=1,
                    help="(variant, seed) cells trained at once, each on cores / jobs threads")
    a = ap.parse_args(argv)
    base = build_config(arch_layers(a.arch) + [("--set", parse_set(a.set)), ("flags", {
        "arch": a.arch, "size": a.size, "data_dir": str(a.data_dir)})])
    out = a.out_dir / (a.name or f"{a.arch}_{a.size}")
    factors = [f.strip() for f in a.factors.split(",") if f.strip()]
    summary = run_ablation(base, factors, a.seeds, a.n_folds, out, a.device, a.jobs,
                           echo=lambda s: print(s, flush=True))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"table: {out / 'table.md'}; plot: {out / 'plot.png'}")


if __name__ == "__main__":
    cli.run(main)
