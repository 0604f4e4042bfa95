"""Recipes: an ensemble as a YAML file under configs/recipes/ (the members: arch, prepared size and
any setting per member), run end to end by `bash run_all.sh --recipe NAME`: prepare every size,
find duplicates across train, external and test, make the folds over train + external, train
every member and fold, predict OOF and test, blend into a submission. Re-running resumes: finished
runs are kept (train_fold --resume), predictions newer than their runs are not redone.

GPUs: with N > 1 visible GPUs each fold trains under `torchrun --nproc_per_node N` (DDP), or with
--parallel-folds one fold per GPU at a time, from one queue of every member's folds; --gpus limits N.

    python -m hpa.recipe --recipe paper --data-dir data/hpa --out-dir work/hpa [--smoke]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpa import cli
from hpa.config import CONFIG_DIR, read_yaml
from hpa.errors import ConfigError, HPAError

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SCALE = 12  # --smoke: sizes and crops / 12 (768 -> 64), 1 epoch of 2 batches of 2, gradients clipped


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str
    size: int = Field(gt=0)
    set: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arch}_{self.size}"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_folds: int = Field(5, ge=2)
    duplicates: str = Field("drop", pattern="^(drop|group|ignore)$")
    tta: int = Field(8, ge=1, le=8)
    members: list[Member] = Field(min_length=1)


def load_recipe(name: str) -> Recipe:
    """A recipe by name (configs/recipes/<name>.yaml) or path; errors name the file and key."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "recipes" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "recipes").glob("*.yaml"))
        raise ConfigError(f"--recipe {name}: no such recipe ({path}); known: {', '.join(known)}")
    try:
        recipe = Recipe(**read_yaml(path))
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    from models import list_archs

    for m in recipe.members:
        if m.arch not in list_archs():
            raise ConfigError(f"{path}: member {m.name}: unknown arch; valid: {', '.join(list_archs())}")
    names = [m.name for m in recipe.members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two members share a name (arch_size): {names}")
    return recipe


def smoke_member(m: Member) -> Member:
    """The member shrunk for a CPU smoke run: the same arch and settings at 1/12 of the size."""
    small = {k: max(8, round(v / SMOKE_SCALE)) for k, v in m.set.items() if k in ("crop", "crop_large") and v}
    from hpa.config import load_arch_config

    base = load_arch_config(m.arch)
    for k in ("crop", "crop_large"):
        if k not in small and getattr(base, k):
            small[k] = max(8, round(getattr(base, k) / SMOKE_SCALE))
    return Member(arch=m.arch, size=max(16, round(m.size / SMOKE_SCALE)),
                  set={**m.set, **small, "epochs": 1, "limit_batches": 2, "batch_size": 2, "workers": 0,
                       # 2-sample batches at 1/12 size give BatchNorm near-zero variances and wild
                       # gradients; clipping keeps the check about plumbing, not about divergence
                       "grad_clip": 1.0})


def gpu_count(limit: int | None) -> int:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return min(n, limit) if limit is not None else n


def _run(cmd: list[str], echo, env: dict | None = None) -> None:
    echo("$ " + " ".join(map(str, cmd)))
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if r.returncode != 0:
        raise HPAError(f"{Path(str(cmd[1])).name if cmd[0] == sys.executable else cmd[0]} failed (exit code "
                       f"{r.returncode}); fix the error above and run the same command again: finished steps are kept")


def train_commands(m: Member, data_dir: Path, runs: Path, fold: int, device: str, gpus: int,
                   parallel: bool) -> list[str]:
    args = ["train_fold.py", "--arch", m.arch, "--fold", fold, "--size", m.size, "--data-dir", data_dir,
            "--runs", runs, "--resume", "--device", device]
    for k, v in m.set.items():
        args += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: null, true, 768, [0.5, 1.0]
    if gpus > 1 and not parallel:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", gpus, *args]
    return [sys.executable, *args]


def train_on_gpus(jobs: list[tuple[Member, int]], n_gpus: int, data_dir: Path, runs: Path, device: str,
                  echo=print, poll_s: float = 1.0) -> None:
    """Every (member, fold) as its own process pinned to one GPU, the next job starting on whichever
    GPU frees first, across members: 5 folds x 6 members on 4 GPUs keep all 4 busy instead of
    idling 3 in each member's last wave. Failed jobs are reported together at the end."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(g) for g in range(n_gpus)]  # keep the user's GPU selection
    pending, running, failed = list(jobs), {}, []
    while pending or running:
        for gpu in range(n_gpus):
            if gpu not in running and pending:
                m, f = pending.pop(0)
                echo(f"== train {m.name} fold {f} on GPU {ids[gpu]}")
                cmd = [str(c) for c in train_commands(m, data_dir, runs, f, device, 1, True)]
                running[gpu] = (m, f, subprocess.Popen(cmd, cwd=ROOT, env={**os.environ,
                                                                            "CUDA_VISIBLE_DEVICES": ids[gpu]}))
        time.sleep(poll_s)
        for gpu, (m, f, proc) in list(running.items()):
            if proc.poll() is not None:
                del running[gpu]
                if proc.returncode != 0:
                    failed.append(f"{m.name} fold {f}")
    if failed:
        raise HPAError(f"training failed for {', '.join(failed)}; run the same command again to resume")


def predictions_current(m: Member, runs: Path, preds: Path, n_folds: int) -> bool:
    """True when every fold's OOF and test files exist and are newer than the fold's best.pt."""
    for f in range(n_folds):
        best = runs / m.name / f"f{f}" / "best.pt"
        files = [preds / f"{m.name}_f{f}_{k}.csv" for k in ("oof", "test")]
        if not best.is_file() or not all(p.is_file() and p.stat().st_mtime >= best.stat().st_mtime for p in files):
            return False
    return True


def run_recipe(recipe: Recipe, data_dir: Path, out_dir: Path, device: str = "auto", smoke: bool = False,
               gpus: int | None = None, parallel_folds: bool = False, echo=print) -> Path:
    """Every stage of the recipe; returns the submission's path."""
    for f in ("train.csv", "sample_submission.csv"):
        if not (data_dir / f).is_file():
            raise ConfigError(f"--data-dir {data_dir}: {f} not found (see data/README.md)")
    members = [smoke_member(m) for m in recipe.members] if smoke else recipe.members
    n_gpus = gpu_count(gpus)
    runs, preds = out_dir / "runs", out_dir / "predictions"
    py = sys.executable
    tables = [data_dir / "train.csv"] + ([data_dir / "external.csv"] if (data_dir / "external.csv").is_file() else [])
    sizes = sorted({m.size for m in members})
    echo(f"== recipe: {len(members)} members x {recipe.n_folds} folds, sizes {sizes}, "
         f"{'HPAv18 external included, ' if len(tables) > 1 else ''}{n_gpus} GPU(s); outputs in {out_dir}")
    for s in sizes:
        echo(f"== prepare {s}")
        _run([py, "input_prep/prepare.py", "--data-dir", data_dir, "--size", s], echo)
    echo("== near-duplicates across train, external and test")
    _run([py, "input_prep/dedup.py", "--data-dir", data_dir, "--out-dir", data_dir / "dedup", "--size", sizes[0]], echo)
    echo(f"== folds over {' + '.join(p.name for p in tables)} (duplicates: {recipe.duplicates})")
    _run([py, "input_prep/make_folds.py", "--labels", *tables, "--n-folds", recipe.n_folds, "--seed", 0, "--out",
          data_dir / "folds.csv", "--groups", data_dir / "dedup" / "duplicate_groups.csv", "--duplicates",
          recipe.duplicates], echo)
    folds = list(range(recipe.n_folds))
    if parallel_folds and n_gpus > 1:
        train_on_gpus([(m, f) for m in members for f in folds], n_gpus, data_dir, runs,
                      "cuda" if device == "auto" else device, echo)
    else:
        for m in members:
            for f in folds:
                echo(f"== train {m.name} fold {f}")
                _run(train_commands(m, data_dir, runs, f, device, n_gpus, False), echo)
    for m in members:
        if predictions_current(m, runs, preds, recipe.n_folds):
            echo(f"== predictions of {m.name} are up to date")
            continue
        echo(f"== predict {m.name} (OOF + test, TTA {1 if smoke else recipe.tta})")
        _run([py, "predict_tta.py", "--arch", m.arch, "--size", m.size, "--folds", *folds, "--tta",
              1 if smoke else recipe.tta, "--runs", runs, "--out-dir", preds, "--device", device,
              *(["--workers", 0] if smoke else [])], echo)
    echo("== blend")
    sub = out_dir / "submission.csv"
    blend = [py, "blend.py", "--oof", *(preds / f"{m.name}_f*_oof.csv" for m in members), "--test",
             *(preds / f"{m.name}_f*_test.csv" for m in members), "--data-dir", data_dir, "--out", sub]
    if (data_dir / "test_labels.csv").is_file():
        blend += ["--test-labels", data_dir / "test_labels.csv"]
    _run(blend, echo)
    return sub


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--recipe", default="paper", help="configs/recipes/<name>.yaml or a YAML path")
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory (Kaggle layout)")
    ap.add_argument("--out-dir", type=Path, required=True, help="where runs/, predictions/ and the submission go")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--smoke", action="store_true", help="every member at 1/12 size, 1 epoch of 2 batches (CPU check)")
    ap.add_argument("--gpus", type=cli.positive_int, help="use at most this many GPUs (default: all)")
    ap.add_argument("--parallel-folds", action="store_true", help="one fold per GPU at once instead of DDP per fold")
    ap.add_argument("--n-folds", type=int, help="override the recipe's number of folds")
    a = ap.parse_args(argv)
    recipe = load_recipe(a.recipe)
    if a.n_folds:
        recipe = recipe.model_copy(update={"n_folds": a.n_folds})
    sub = run_recipe(recipe, a.data_dir, a.out_dir, a.device, a.smoke, a.gpus, a.parallel_folds,
                     echo=lambda line: print(line, flush=True))
    print(f"submission: {sub}")


if __name__ == "__main__":
    cli.run(main)
