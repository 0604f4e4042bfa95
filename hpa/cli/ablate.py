r"""Which of the paper's tricks help on your data: each factor against the arch's paper config.

    python ablate.py --data-dir data/demo --arch resnet18 --size 128 --factors loss,hard_k,pool --seeds 3 \
        --folds 0 1 [--set epochs=8]

Factors (config keys, or test-time): pool (acp / gap / max), head_hidden (paper / none), hard_k
(off / 0.25 / 0.5 / 0.75), loss (bce / focal / eloss_bce / eloss_focal), alpha_e (0.9 / 0.99 /
0.999), cycles (cyclic restarts / one cycle / constant LR), oversample_max (on / off), duplicates
(the folds rebuilt with near-duplicates dropped / grouped / ignored; needs dedup.py's groups), tta
(1 / 8) and thresholds (paper / flat 0.5 / exact / the blend's auto). Runs that exist are reused and
a killed ablation resumes. Writes ablations/<name>/: results.csv (one row per variant, seed and
fold), summary.csv, table.md (mean macro F1 with 95% intervals, the paired difference to the
baseline and whether it is significant) and plot.png.
"""

from __future__ import annotations

from hpa import api
from hpa.cli import Parser, options
from hpa.config import arch_layers, build_config, parse_set
from hpa.data import layout
from hpa.models import list_archs
from hpa.pipeline.ablation import ALL_FACTORS


def build_parser() -> Parser:
    ap = Parser(__doc__, "ablate.py")
    options.data_dir(ap, help="dataset directory (prepared, with folds.csv)")
    ap.add_argument("--arch", required=True, choices=list_archs(), help="the baseline: this arch's paper config")
    ap.add_argument("--size", type=options.positive_int, required=True, help="prepared image size")
    ap.add_argument("--factors", required=True, help=f"comma-separated factors: {', '.join(ALL_FACTORS)}")
    ap.add_argument("--seeds", type=options.positive_int, default=3, help="seeds per variant")
    options.folds(ap, "folds of folds.csv each variant trains and is scored on (at least 2)", default=[0, 1])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="baseline setting overrides")
    ap.add_argument("--name", help="output name [<arch>_<size>]")
    options.out_dir(ap, "where ablations/<name>/ goes", default=layout.DEFAULT_ABLATIONS)
    options.device(ap)
    ap.add_argument("--jobs", type=options.positive_int, default=1,
                    help="(variant, seed) cells trained at once, each on cores / jobs threads")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    base = build_config(arch_layers(a.arch) + [("--set", parse_set(a.set)), ("flags", {
        "arch": a.arch, "size": a.size, "data_dir": str(a.data_dir)})])
    out = layout.ablation_dir(a.out_dir, a.arch, a.size, a.name)
    factors = [f.strip() for f in a.factors.split(",") if f.strip()]
    summary = api.ablate(base, factors, seeds=a.seeds, folds=a.folds, out_dir=out, device=a.device, jobs=a.jobs,
                         echo=lambda s: print(s, flush=True))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"table: {layout.ablation_file(out, 'table')}; plot: {layout.ablation_file(out, 'plot')}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
