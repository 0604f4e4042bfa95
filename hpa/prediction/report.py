"""Plots and tables people read: training curves, per-class reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa.core.atomic import atomic_save
from hpa.data.labels import CLASS_NAMES


def subplots(*grid: int, figsize: tuple[float, float]):
    """A figure and its axes drawn without pyplot, so importing the toolkit never switches a notebook's
    plotting backend (a Figure renders to PNG with the Agg canvas on its own)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def save_figure(fig, path: Path) -> None:
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


def plot_training_curves(log: pd.DataFrame, path: Path) -> None:
    fig, ax = subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(log["epoch"], log["train_loss"], "o-", label="train")
    ax[0].plot(log["epoch"], log["val_loss"], "o-", label="validation")
    ax[0].set(title="loss", xlabel="epoch")
    ax[0].legend()
    ax[1].plot(log["epoch"], log["val_macro_f1"], "o-", color="C2")
    ax[1].set(title="validation macro F1 (threshold 0.5)", xlabel="epoch")
    ax[2].plot(log["epoch"], log["lr"], "o-", color="C3")
    ax[2].set(title="head learning rate (end of epoch)", xlabel="epoch", yscale="log")
    save_figure(fig, path)


def plot_lr_find(result: dict, path: Path) -> None:
    fig, ax = subplots(figsize=(6.5, 4))
    ax.plot(result["lrs"], result["losses"], color="0.7", lw=1, label="loss")
    ax.plot(result["lrs"], result["smoothed"], color="C0", label="smoothed loss")
    ax.axvline(result["min_loss_lr"], color="0.4", ls=":", label=f"smoothed minimum {result['min_loss_lr']:.2e}")
    ax.axvline(result["chosen_lr"], color="C3", ls="--", label=f"chosen lr {result['chosen_lr']:.2e}")
    ax.set(xscale="log", xlabel="learning rate (head group)", ylabel="training loss", title="LR range test")
    ax.legend()
    save_figure(fig, path)


def plot_lr_schedule(lrs: list[float], path: Path) -> None:
    fig, ax = subplots(figsize=(6.5, 3.2))
    ax.plot(range(1, len(lrs) + 1), lrs, color="C3")
    ax.set(xlabel="training step", ylabel="learning rate (head group)", yscale="log", title="LR of every step")
    save_figure(fig, path)


def per_class_frame(table: dict[str, np.ndarray]) -> pd.DataFrame:
    df = pd.DataFrame({"class": range(len(CLASS_NAMES)), "name": CLASS_NAMES})
    for k, v in table.items():
        df[k] = v
    return df


def plot_per_class(df: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = subplots(figsize=(12, 4.5))
    x = np.arange(len(df))
    ax.bar(x, df["f1"], color="C0", label="F1")
    if "threshold" in df:
        ax.plot(x, df["threshold"], "D", color="C3", label="threshold")
    ax.set_xticks(x, [f"{c} {n}" for c, n in zip(df["class"], df["name"])], rotation=75, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), title=title)
    ax.legend()
    save_figure(fig, path)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def fmt(v):
        return format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v)

    rows = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def blend_report_lines(summary: dict, cv_table, k: int | None, test_labels: Path | None, png_name: str,
                       table: pd.DataFrame) -> list[str]:
    """report.md of a blend (`summary`: blend.json's content): the models and weights, the blended
    OOF (and test) scores, the cross-validated choice of weights and thresholds, the per-class table
    and plot."""
    method, n = summary["threshold_method"], summary["oof_rows"]
    names, weights, singles = summary["models"], summary["weights"], summary["single_model_oof_macro_f1"]
    lines = ["# Blend report", "", "| model | weight | OOF macro F1 (own thresholds) |", "|---|---|---|"]
    lines += [f"| {m} | {wi:.3f} | {singles[m]:.4f} |" for m, wi in zip(names, weights)]
    lines += ["", f"Blended OOF macro F1 over {n} rows: {summary['oof_macro_f1_at_0.5']:.4f} at 0.5, "
              f"{summary['oof_macro_f1']:.4f} with {method} thresholds "
              f"({summary['oof_macro_f1_filled']:.4f} when empty rows get their closest class)."]
    if "test_macro_f1" in summary:
        lines.append(f"Test macro F1 (against {test_labels}): {summary['test_macro_f1']:.4f}.")
    lines += [f"Note: {note}." for note in summary["notes"]]
    if cv_table is not None:
        lines += ["", f"## Choice of weights and thresholds: {summary['weighting']} + {method}", "",
                  f"{k}-fold cross-validation inside the {n} OOF rows "
                  f"({cv_table['n_scores'][0] // k} repeat(s)): each pair is fitted on {k - 1} parts "
                  "and scored (macro F1, empty rows filled) on the held-out part; mean and standard error over the "
                  "held-out parts. Chosen: the simplest pair whose shortfall to the best pair, on the same "
                  "held-out parts, is within one standard error (the one-standard-error rule, paired), then fitted "
                  "on all OOF rows.", "",
                  markdown_table(cv_table, floatfmt=".4f")]
    return lines + ["", f"![per-class F1]({png_name})", "", markdown_table(table)]
