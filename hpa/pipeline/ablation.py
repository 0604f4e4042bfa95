"""Ablations: the paper's tricks one factor at a time against the arch's paper config, over seeds
and folds, with paired statistics.

A factor is named by the config key it changes (`pool`, `head_hidden`, `hard_k`, `loss`,
`alpha_e`, `cycles`, `oversample_max`), is `duplicates` (the folds rebuilt with near-duplicates
dropped, grouped or ignored), or is a test-time factor (`tta`, `thresholds`) evaluated
on the baseline's runs. Every (variant, seed) trains every fold; each fold is scored by OOF
macro F1 with thresholds fitted on the other folds' OOF of the same runs (cross-fitting, so no
score sees its own threshold fit). Variants are compared to the baseline pairwise over the same
(seed, fold) cells: the mean difference, its 95% t interval, and a paired t-test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hpa.config import LOSSES, TrainConfig
from hpa.core.atomic import atomic_write_csv, atomic_write_text
from hpa.core.locks import dir_lock
from hpa.data import layout
from hpa.data.labels import labels_matrix, read_folds, read_label_tables
from hpa.errors import ConfigError
from hpa.prediction.blending import choose_blend, fit_blend
from hpa.prediction.metrics import macro_f1
from hpa.prediction.thresholds import apply_thresholds, fit_thresholds

# factor -> variant -> settings (dotted keys reach `model`); the baseline is the arch config itself
FACTORS: dict[str, dict[str, dict]] = {
    "pool": {"acp": {"model.pool": "acp"}, "gap": {"model.pool": "avg"}, "max": {"model.pool": "max"}},
    "head_hidden": {"none": {"model.head_hidden": [], "model.head_dropout": []}},
    "hard_k": {"off": {"hard_k": None}, "0.25": {"hard_k": 0.25}, "0.5": {"hard_k": 0.5}, "0.75": {"hard_k": 0.75}},
    "loss": {k: {"loss": k} for k in LOSSES},
    "alpha_e": {str(a): {"alpha_e": a} for a in (0.9, 0.99, 0.999)},
    "cycles": {"one_cycle": {"cycles": 1, "cycle_epochs": None},
               "constant": {"cycles": 1, "cycle_epochs": None, "min_lr_ratio": 1.0}},
    "oversample_max": {"off": {"oversample_max": 1}, "on": {"oversample_max": 4}},
}
TEST_FACTORS = ("tta", "thresholds")  # TTA 1 (baseline) / 8; thresholds paper (baseline) / flat / exact / auto
ALL_FACTORS = (*FACTORS, "duplicates", *TEST_FACTORS)


def apply_settings(cfg: TrainConfig, settings: dict) -> TrainConfig:
    top = {k: v for k, v in settings.items() if not k.startswith("model.")}
    model = {**cfg.model, **{k[6:]: v for k, v in settings.items() if k.startswith("model.")}}
    return TrainConfig(**{**cfg.model_dump(), **top, "model": model})


def effective(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the builder's defaults written into `model`, so that a variant that only spells
    out a default (pool: acp) equals the baseline and is not trained twice."""
    import inspect

    from hpa.models import builder

    defaults = {k: p.default for k, p in inspect.signature(builder(cfg.arch)).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in ("pretrained", "num_classes")}
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **cfg.model}.items()}
    return cfg.model_copy(update={"model": model})


def variants(base: TrainConfig, factors: list[str], extra: dict[str, dict[str, Path]] | None = None
             ) -> list[tuple[str, str, TrainConfig]]:
    """(factor, variant, config) of every training variant that differs from the baseline. `extra`
    holds the data factors' files: duplicates -> mode -> folds CSV (a mode whose folds equal the
    baseline's is the baseline itself)."""
    out = [("baseline", "paper config", base)]
    for f in factors:
        if f in TEST_FACTORS:
            continue
        if f == "duplicates":
            if not extra or "duplicates" not in extra:
                raise ConfigError("--factors duplicates: the folds of each duplicates mode were not built")
            base_folds = read_folds(layout.folds_csv(base.data_dir, base.folds_csv))
            out += [(f, mode, base.model_copy(update={"folds_csv": str(path)}))
                    for mode, path in extra["duplicates"].items() if read_folds(path) != base_folds]
            continue
        if f not in FACTORS:
            raise ConfigError(f"--factors {f}: unknown; choose from {', '.join(ALL_FACTORS)}")
        for name, settings in FACTORS[f].items():
            cfg = apply_settings(base, settings)
            if effective(cfg) != effective(base):
                out.append((f, name, cfg))
    return out


def cross_fitted_f1(oof: dict[int, tuple[list[str], np.ndarray]], y_of: dict[str, np.ndarray],
                    method: str) -> dict[int, float]:
    """Per fold: macro F1 of its OOF rows at thresholds fitted on the other folds' OOF rows."""
    out = {}
    for f, (ids, p) in oof.items():
        other = [k for k in oof if k != f]
        op = np.concatenate([oof[k][1] for k in other])
        oy = np.stack([y_of[i] for k in other for i in oof[k][0]])
        y = np.stack([y_of[i] for i in ids])
        if method == "auto":
            (w, m), _ = choose_blend([op], oy, ["equal"], ["flat", "paper", "shrink", "exact"], progress=False)
            thr = fit_blend([op], oy, w, m).thresholds
        else:
            thr = fit_thresholds(op, oy, method)
        out[f] = macro_f1(y, apply_thresholds(p, thr))
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant: mean macro F1 with a 95% t interval over (seed, fold) cells, and the paired
    difference to the baseline's same cells with its 95% interval and paired t-test p-value."""
    base = results[results["factor"] == "baseline"].set_index(["seed", "fold"])["macro_f1"]
    rows = []
    for (factor, variant), g in results.groupby(["factor", "variant"], sort=False):
        v = g.set_index(["seed", "fold"])["macro_f1"]
        n = len(v)
        half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        row = {"factor": factor, "variant": variant, "n": n, "mean_f1": v.mean(), "ci95": half}
        if factor != "baseline":
            d = (v - base.reindex(v.index)).dropna()
            dh = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
            p = stats.ttest_rel(v.reindex(d.index), base.reindex(d.index)).pvalue if len(d) > 1 else np.nan
            row.update(diff=d.mean(), diff_ci95=dh, p_value=p, significant=bool(len(d) > 1 and abs(d.mean()) > dh))
        rows.append(row)
    return pd.DataFrame(rows)


def table_markdown(summary: pd.DataFrame) -> str:
    lines = ["| factor | variant | n | macro F1 (95% CI) | difference to baseline (95% CI) | p (paired t) | "
             "significant |", "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        diff = "" if r.factor == "baseline" else f"{r.diff:+.4f} ± {r.diff_ci95:.4f}"
        p = "" if r.factor == "baseline" else f"{r.p_value:.3f}"
        sig = "" if r.factor == "baseline" else ("yes" if r.significant else "no")
        lines.append(f"| {r.factor} | {r.variant} | {r.n} | {r.mean_f1:.4f} ± {r.ci95:.4f} | {diff} | {p} | {sig} |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: Path) -> None:
    from hpa.prediction.report import save_figure, subplots

    fig, ax = subplots(figsize=(7, 0.35 * len(summary) + 1.2))
    labels = [f"{r.factor}: {r.variant}" for r in summary.itertuples()]
    ax.errorbar(summary["mean_f1"], range(len(summary)), xerr=summary["ci95"], fmt="o", capsize=3)
    ax.axvline(summary["mean_f1"].iloc[0], color="grey", ls="--", lw=1)
    ax.set(yticks=range(len(summary)), yticklabels=labels, xlabel="OOF macro F1 (mean, 95% CI)")
    ax.invert_yaxis()
    save_figure(fig, path)


def duplicates_folds(base: TrainConfig, out_dir: Path) -> dict[str, Path]:
    """The base folds rebuilt under each duplicates mode (same number of folds, seed 0), from the
    dataset's duplicate groups (input_prep/dedup.py), written to `out_dir/folds/<mode>.csv`."""
    from hpa.data.folds import DUPLICATES, assign_folds, read_groups

    groups_csv = layout.duplicate_groups_csv(base.data_dir)
    if not groups_csv.is_file():
        raise ConfigError(f"--factors duplicates: {groups_csv} not found; run input_prep/dedup.py first")
    groups = read_groups(groups_csv)
    labels = read_label_tables(layout.label_tables(base.data_dir, base.external))
    k = len({f for f in read_folds(layout.folds_csv(base.data_dir, base.folds_csv)).values() if f >= 0})
    out = {}
    for mode in DUPLICATES:
        folds, _ = assign_folds(labels["Id"].tolist(), labels_matrix(labels), labels["table"].to_numpy(), k, 0,
                                groups, mode)
        out[mode] = layout.ablation_folds(out_dir, mode)
        out[mode].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out[mode], pd.DataFrame({"Id": labels["Id"], "fold": folds}))
    return out


def _init_worker(threads: int) -> None:
    import torch

    from hpa.core import runtime

    torch.set_num_threads(threads)
    runtime.SHOW_PROGRESS = False  # workers share one terminal: their bars would interleave


def _fold_oof(cfg: TrainConfig, runs: Path, tta: list[int], ids: list[str], stores: list[Path],
              device: str) -> dict[int, tuple[list[str], np.ndarray]]:
    """One fold of one cell: its OOF probabilities per TTA count, from the files a finished cell
    keeps when its settings are unchanged, else trained (resuming what exists) and predicted. Once
    predicted, the checkpoints are deleted: reuse needs only the OOF files, and an ablation of 100+
    runs would otherwise keep two checkpoints each."""
    from hpa.config import changed_settings, read_yaml
    from hpa.core.runtime import pick_device
    from hpa.data.predictions import read_predictions, write_predictions
    from hpa.prediction.inference import PredictOptions, load_run, predict
    from hpa.training.engine import train

    run = layout.run_dir(runs, cfg.arch, cfg.size, cfg.fold)
    files = {t: layout.ablation_oof(run, t) for t in tta}
    saved = layout.run_file(run, "config")
    if all(f.is_file() for f in files.values()) and saved.is_file() and not changed_settings(read_yaml(saved), cfg):
        return {t: read_predictions(f) for t, f in files.items()}
    train(cfg, runs=runs, device_name=device, resume=True, echo=lambda _: None,
          hint="delete that run directory, or choose another --out-dir")
    dev = pick_device(device)
    model = load_run(run, dev).model
    out = {}
    for t in tta:
        o = PredictOptions.make(tta=t, amp=cfg.amp, device=str(dev))
        p, _ = predict([model], ids, cfg.size, o, "ablation", store=stores)
        write_predictions(files[t], ids, p)
        out[t] = read_predictions(files[t])  # as reuse will read it (CSV rounding), so reruns score the same
    for ck in ("best", "last"):
        layout.run_file(run, ck).unlink(missing_ok=True)
    return out


def _cell_oof(cfg: TrainConfig, folds: list[int], runs: Path, tta: list[int], store_of: dict[str, Path],
              device: str) -> dict[int, dict[int, tuple[list[str], np.ndarray]]]:
    """Train (or reuse) one (variant, seed) on `folds`; OOF probabilities per TTA count and fold."""
    fold_of = read_folds(layout.folds_csv(cfg.data_dir, cfg.folds_csv))
    oof: dict[int, dict[int, tuple[list[str], np.ndarray]]] = {t: {} for t in tta}
    for f in folds:
        ids = [i for i, k in fold_of.items() if k == f]
        if not ids:
            raise ConfigError(f"fold {f}: no sample of {layout.folds_csv(cfg.data_dir, cfg.folds_csv)} is in it")
        for t, pred in _fold_oof(cfg.model_copy(update={"fold": f}), runs, tta, ids, [store_of[i] for i in ids],
                                 device).items():
            oof[t][f] = pred
    return oof


def _train_cells(cells: list, args, jobs: int, echo) -> dict:
    """Every cell's OOF, in this process or in `jobs` worker processes sharing the CPU threads."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    oofs = {}
    if jobs == 1:
        for n, cell in enumerate(cells):
            oofs[n] = _cell_oof(*args(cell))
            echo(f"{cell[0]}={cell[1]} seed {cell[2]}: done ({n + 1}/{len(cells)})")
        return oofs
    threads = max(1, (os.cpu_count() or jobs) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_cell_oof, *args(cell)): n for n, cell in enumerate(cells)}
        for done, fut in enumerate(as_completed(futures)):
            n = futures[fut]
            oofs[n] = fut.result()
            echo(f"{cells[n][0]}={cells[n][1]} seed {cells[n][2]}: done ({done + 1}/{len(cells)})")
    return oofs


def run_ablation(base: TrainConfig, factors: list[str], seeds: int, folds: list[int], out_dir: Path, *,
                 device: str = "auto", jobs: int = 1, echo=print) -> pd.DataFrame:
    """Train (or reuse) every variant x seed x fold, score it, write results.csv, table.md, plot.
    `jobs` > 1 trains that many (variant, seed) cells at once in worker processes that share the
    CPU threads (on 2 cores, two 1-thread runs train 1.55x as fast as one 2-thread run; bench/RESULTS.md).
    One ablation at a time per output directory (a lock)."""
    with dir_lock(layout.lock_file(out_dir), "ablation directory"):
        return _run_ablation(base, factors, seeds, folds, out_dir, device, jobs, echo)


def _run_ablation(base: TrainConfig, factors: list[str], seeds: int, folds: list[int], out_dir: Path, device: str,
                  jobs: int, echo) -> pd.DataFrame:
    table = layout.folds_csv(base.data_dir, base.folds_csv)
    have = sorted({f for f in read_folds(table).values() if f >= 0})
    missing = sorted(set(folds) - set(have))
    if missing:  # refused, never reduced to the folds there are
        raise ConfigError(f"--folds {' '.join(map(str, folds))}: {table} has no fold {missing[0]} (its folds: "
                          f"{' '.join(map(str, have))})")
    if len(set(folds)) < 2:
        raise ConfigError(f"--folds {' '.join(map(str, folds))}: cross-fitted thresholds need at least 2 folds")
    folds = sorted(set(folds))
    labels = read_label_tables(layout.label_tables(base.data_dir, base.external))
    y_of = dict(zip(labels["Id"], labels_matrix(labels)))
    store_of = dict(zip(labels["Id"], layout.stores_of(base.data_dir, base.size, labels["table"])))
    tests = [f for f in factors if f in TEST_FACTORS]
    extra = {"duplicates": duplicates_folds(base, out_dir)} if "duplicates" in factors else {}
    cells = []  # (factor, variant, seed, config, [(TTA count, threshold method, scored factor, variant)])
    for factor, variant, cfg in variants(base, factors, extra):
        scored = [(1, "paper", factor, variant)]
        if factor == "baseline":  # the test-time factors are scored on the baseline's runs
            scored += [(8, "paper", "tta", "8")] if "tta" in tests else []
            scored += [(1, m, "thresholds", m) for m in ("flat", "exact", "auto")] if "thresholds" in tests else []
        cells += [(factor, variant, seed, cfg.model_copy(update={"seed": seed}), scored) for seed in range(seeds)]

    def args(cell):
        factor, variant, seed, cfg, scored = cell
        return (cfg, folds, layout.ablation_runs(out_dir, factor, variant, seed), sorted({t for t, *_ in scored}),
                store_of, device)

    oofs = _train_cells(cells, args, jobs, echo)
    rows = []
    for n, (_, _, seed, _, scored) in enumerate(cells):
        for t, method, fac, var in scored:
            for f, score in cross_fitted_f1(oofs[n][t], y_of, method).items():
                rows.append({"factor": fac, "variant": var, "seed": seed, "fold": f, "macro_f1": score})
    results = pd.DataFrame(rows)
    summary = summarize(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(layout.ablation_file(out_dir, "results"), results)
    atomic_write_csv(layout.ablation_file(out_dir, "summary"), summary)
    atomic_write_text(layout.ablation_file(out_dir, "table"), table_markdown(summary) + "\n")
    atomic_write_text(layout.ablation_file(out_dir, "config"),
                      json.dumps({"base": base.model_dump(), "factors": factors, "seeds": seeds}, indent=1))
    plot(summary, layout.ablation_file(out_dir, "plot"))
    return summary
