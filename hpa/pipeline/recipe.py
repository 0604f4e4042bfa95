"""Recipes: an ensemble as a YAML file under configs/recipes/ (the members: arch, prepared size and
any setting per member), run end to end by `bash run_all.sh --recipe NAME`: prepare every size,
find duplicates across train, external and test, make the folds over train + external, train
every member and fold, predict OOF and test, blend into a submission. Every stage runs in this
process through the library; only several GPUs start processes (torchrun, one per GPU).
Re-running resumes: finished runs are kept (resume), predictions whose sidecars name today's
checkpoints, folds and test-time settings are not redone. One recipe at a time per output
directory (a lock; a second one stops with one line naming the first).

GPUs: with N > 1 visible GPUs each fold trains under `torchrun --nproc_per_node N` (DDP), or with
--parallel-folds one fold per GPU at a time, from one queue of every member's folds; --gpus limits N.

    bash run_all.sh --recipe paper --data-dir data/hpa --out-dir work/hpa [--smoke]
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpa.config import CONFIG_DIR, TrainConfig, arch_layers, build_config, read_yaml
from hpa.core.digests import file_sha256
from hpa.core.locks import dir_lock
from hpa.core.runtime import DEFAULT_WORKERS
from hpa.data import layout
from hpa.data.dedup import find_duplicates
from hpa.data.folds import DEFAULT_DUPLICATES, DUPLICATES, write_folds
from hpa.data.preparation import prepare_dataset
from hpa.errors import ConfigError, HPAError
from hpa.pipeline.slurm import SlurmOptions
from hpa.prediction.blending import run_blend
from hpa.prediction.embeddings import Encoder
from hpa.prediction.inference import DIHEDRAL
from hpa.training.engine import train
from hpa.training.frozen import KINDS, FrozenSettings, frozen_settings, member_tag

SMOKE_SCALE = 12  # --smoke: sizes and crops / 12 (768 -> 64), 1 epoch of 2 batches of 2, gradients clipped


class Member(BaseModel):
    """One model of the ensemble: an arch trained on every fold, or with `frozen` (head | logreg) a
    classifier trained on the frozen encoder's embeddings (hpa.training.frozen). `smoke` replaces settings
    under --smoke (e.g. a tiny ViT without pretrained weights for a foundation-model member)."""
    model_config = ConfigDict(extra="forbid")
    arch: str
    size: int = Field(gt=0)
    set: dict[str, Any] = Field(default_factory=dict)
    frozen: Literal[KINDS] | None = None
    smoke: dict[str, Any] = Field(default_factory=dict)

    def encoder(self, tta: int) -> Encoder:
        st = self.frozen_settings()
        return Encoder(self.arch, st.pretrained, self.size, DIHEDRAL[:min(tta, st.tta)], st.amp, st.accept_licence)

    def frozen_settings(self) -> FrozenSettings:
        return frozen_settings(self.set, f"recipe member {self.arch}_{self.size} (frozen: {self.frozen})")

    @property
    def tag(self) -> str:
        """The `<arch>` of its run directories and prediction files."""
        return member_tag(self.encoder(8), self.frozen) if self.frozen else self.arch

    @property
    def name(self) -> str:
        return f"{self.tag}_{self.size}"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_folds: int = Field(5, ge=2)
    duplicates: Literal[DUPLICATES] = DEFAULT_DUPLICATES  # make_folds --duplicates
    tta: int = Field(8, ge=1, le=8)
    # predict the test folder's images with the blended ensemble into test_images/, with report.html
    # and class maps (a page per image: worth it for a demo's 500 images, not for Kaggle's 11,702)
    test_report: bool = False
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
    from hpa.models import list_archs

    for m in recipe.members:
        if m.arch not in list_archs():
            raise ConfigError(f"{path}: member {m.name}: unknown arch; valid: {', '.join(list_archs())}")
    for m in recipe.members:
        if m.frozen:
            m.frozen_settings()
    names = [m.name for m in recipe.members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two members share a name (arch_size): {names}")
    return recipe


def smoke_member(m: Member) -> Member:
    """The member shrunk for a CPU smoke run: the same arch and settings at 1/12 of the size (a
    frozen member: its head for 2 epochs), then the member's own `smoke` replacements."""
    over = dict(m.smoke)
    arch, size = over.pop("arch", m.arch), over.pop("size", None)
    if m.frozen:
        return Member(arch=arch, size=size or max(16, round(m.size / SMOKE_SCALE)), frozen=m.frozen,
                      set={**m.set, "epochs": 2, "batch_size": 8, **over})
    small = {k: max(8, round(v / SMOKE_SCALE)) for k, v in m.set.items() if k in ("crop", "crop_large") and v}
    from hpa.config import load_arch_config

    base = load_arch_config(arch)
    for k in ("crop", "crop_large"):
        if k not in small and getattr(base, k):
            small[k] = max(8, round(getattr(base, k) / SMOKE_SCALE))
    return Member(arch=arch, size=size or max(16, round(m.size / SMOKE_SCALE)),
                  set={**m.set, **small, "epochs": 1, "limit_batches": 2, "batch_size": 2, "workers": 0,
                       # 2-sample batches at 1/12 size give BatchNorm near-zero variances and wild
                       # gradients; clipping keeps the check about plumbing, not about divergence
                       "grad_clip": 1.0, **over})


def gpu_count(limit: int | None) -> int:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return min(n, limit) if limit is not None else n


REPLACE_HINT = "delete that run directory to train it again, or choose another --out-dir"


def member_config(m: Member, data_dir: Path, fold: int) -> TrainConfig:
    """A member's training config: its arch config, then the member's `set`, as train_fold.py builds it."""
    return build_config(arch_layers(m.arch) + [(f"recipe member {m.name}", {**m.set, "arch": m.arch, "fold": fold,
                                                                           "size": m.size,
                                                                           "data_dir": str(data_dir)})])


def train_commands(m: Member, data_dir: Path, runs: Path, fold: int, device: str, gpus: int) -> list[str]:
    """The command that trains one fold in its own process(es): torchrun over `gpus` GPUs, or one
    process (a fold pinned to one GPU of --parallel-folds)."""
    args = ["-m", "hpa.cli.train_fold", "--arch", m.arch, "--fold", fold, "--size", m.size, "--data-dir", data_dir,
            "--runs", runs, "--resume", "--device", device]
    for k, v in m.set.items():
        args += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: null, true, 768, [0.5, 1.0]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", gpus, *args]
    return [sys.executable, *args]


def _run(cmd: list, echo, env: dict | None = None) -> None:
    echo("$ " + " ".join(map(str, cmd)))
    r = subprocess.run([str(c) for c in cmd], env=env)
    if r.returncode != 0:
        raise HPAError(f"training failed (exit code {r.returncode}); fix the error above and run the same command "
                       "again: finished steps are kept")


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
                cmd = [str(c) for c in train_commands(m, data_dir, runs, f, device, 1)]
                running[gpu] = (m, f, subprocess.Popen(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": ids[gpu]}))
        time.sleep(poll_s)
        for gpu, (m, f, proc) in list(running.items()):
            if proc.poll() is not None:
                del running[gpu]
                if proc.returncode != 0:
                    failed.append(f"{m.name} fold {f}")
    if failed:
        raise HPAError(f"training failed for {', '.join(failed)}; run the same command again to resume")


def predictions_current(m: Member, runs: Path, preds: Path, folds: list[int], tta: tuple[str, ...], amp: str,
                        folds_sha: str) -> bool:
    """True when every fold's OOF and test files exist and their sidecars name today's best.pt (by
    content), the folds table and the test-time settings: a retrained fold, a changed TTA or other
    folds make a member's predictions stale."""
    from hpa.prediction.blending import read_sidecars

    for f in folds:
        best = layout.run_file(layout.run_dir(runs, m.arch, m.size, f), "best")
        files = [layout.prediction_path(preds, m.arch, m.size, f, k) for k in ("oof", "test")]
        sides = read_sidecars([p for p in files if p.is_file()])
        if not best.is_file() or len(sides) < 2:
            return False
        want = {"checkpoint_sha256": file_sha256(best), "sizes": [m.size], "tta": list(tta), "amp": amp}
        for s in sides.values():
            made = s.get("producer") or {}
            if s.get("folds_sha256") != folds_sha or {k: made.get(k) for k in want} != want:
                return False
    return True


def prepare_data(recipe: Recipe, data_dir: Path, sizes: list[int], workers: int, echo) -> Path:
    """Every size prepared, the near-duplicates found, the folds made; returns the folds table."""
    tables = layout.label_tables(data_dir)
    for s in sizes:
        echo(f"== prepare {s}")
        failures = prepare_dataset(data_dir, s, workers=workers, echo=echo)
        if failures:
            split = next(iter(failures))
            raise HPAError(f"prepare {s}: {sum(map(len, failures.values()))} samples could not be read (listed in "
                           f"{layout.failure_list(layout.prepared_dir(data_dir, s, split), split)} and beside it); fix "
                           "or remove them and run the same command again")
    echo("== near-duplicates across train, external and test")
    find_duplicates(data_dir, layout.dedup_dir(data_dir), size=sizes[0], workers=workers, echo=echo)
    folds = layout.folds_csv(data_dir)
    echo(f"== folds over {' + '.join(p.name for p in tables)} (duplicates: {recipe.duplicates})")
    if not folds.is_file():
        write_folds(tables, recipe.n_folds, 0, folds, layout.duplicate_groups_csv(data_dir), recipe.duplicates,
                    echo=echo)
        return folds
    import tempfile

    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".recipe_folds.") as tmp:
        mine = Path(tmp) / folds.name
        write_folds(tables, recipe.n_folds, 0, mine, layout.duplicate_groups_csv(data_dir), recipe.duplicates,
                    echo=lambda _: None)
        if mine.read_bytes() != folds.read_bytes():
            raise HPAError(f"{folds}: holds other folds than this recipe makes ({recipe.n_folds} folds, duplicates "
                           f"{recipe.duplicates}, seed 0), and the recipe never writes over a folds table; runs "
                           "trained on it need it as it is. Move it away (e.g. to folds_mine.csv) or use a copy of the "
                           "dataset")
    echo(f"{folds}: already holds this recipe's folds")
    return folds


def train_members(members: list[Member], folds: list[int], data_dir: Path, runs: Path, device: str, n_gpus: int,
                  parallel_folds: bool, echo) -> None:
    members = [m for m in members if not m.frozen]  # frozen members train with their predictions
    if parallel_folds and n_gpus > 1:
        train_on_gpus([(m, f) for m in members for f in folds], n_gpus, data_dir, runs,
                      "cuda" if device == "auto" else device, echo)
        return
    for m in members:
        for f in folds:
            echo(f"== train {m.name} fold {f}")
            if n_gpus > 1:
                _run(train_commands(m, data_dir, runs, f, device, n_gpus), echo)
            else:
                train(member_config(m, data_dir, f), runs=runs, device_name=device, resume=True, echo=echo,
                      hint=REPLACE_HINT)


def predict_members(members: list[Member], folds: list[int], data_dir: Path, out_dir: Path, tta: int,
                    device: str, smoke: bool, echo) -> None:
    runs, preds = layout.recipe_runs(out_dir), layout.recipe_predictions(out_dir)
    from hpa.core.runtime import pick_device
    from hpa.prediction.inference import PredictOptions, predict_folds
    from hpa.training.frozen import run_frozen

    transforms = DIHEDRAL[:tta]
    folds_sha = file_sha256(layout.folds_csv(data_dir))
    for m in members:
        if m.frozen:
            echo(f"== {m.name}: {m.frozen} on frozen {m.encoder(tta).key} embeddings")
            loading = PredictOptions(workers=0 if smoke else DEFAULT_WORKERS, device=str(pick_device(device)))
            written = run_frozen(data_dir, m.encoder(tta), m.frozen, m.frozen_settings(), folds, preds, opts=loading,
                                 echo=echo)
            if written:
                echo(f"wrote {len(written)} prediction files to {preds}")
            continue
        amp = member_config(m, data_dir, 0).amp
        if predictions_current(m, runs, preds, folds, transforms, amp, folds_sha):
            echo(f"== predictions of {m.name} are up to date")
            continue
        echo(f"== predict {m.name} (OOF + test, TTA {tta})")
        opts = PredictOptions.make(tta=transforms, amp=amp, workers=0 if smoke else DEFAULT_WORKERS, device=device)
        written = predict_folds(runs, m.arch, m.size, folds, preds, opts, data_dir=data_dir).write_all()
        echo(f"wrote {len(written)} prediction files to {preds}")


def blend_members(members: list[Member], folds: list[int], data_dir: Path, out_dir: Path, echo) -> Path:
    preds = layout.recipe_predictions(out_dir)
    echo("== blend")
    sub = layout.recipe_submission(out_dir)
    test_labels = layout.test_labels_csv(data_dir)
    s = run_blend([layout.prediction_path(preds, m.tag, m.size, f, "oof") for m in members for f in folds],
                  [layout.prediction_path(preds, m.tag, m.size, f, "test") for m in members for f in folds],
                  layout.label_tables(data_dir), layout.split_table(data_dir, "test"), sub,
                  test_labels=test_labels if test_labels.is_file() else None, folds_csv=layout.folds_csv(data_dir))
    for n in s["notes"]:
        echo(f"note: {n}")
    echo(f"blend: {s['weighting']} weights + {s['threshold_method']} thresholds; OOF macro F1 "
         f"{s['oof_macro_f1']:.4f}")
    if "test_macro_f1" in s:
        echo(f"TEST MACRO F1: {s['test_macro_f1']:.4f}")
    return sub


def report_test_images(data_dir: Path, out_dir: Path, device: str, echo) -> Path:
    """The test folder predicted as a user's folder is, by the blended ensemble (hpa.prediction.folder), with
    report.html and the class maps of every predicted class."""
    from hpa.core.runtime import pick_device
    from hpa.prediction.ensemble import from_recipe
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import PredictOptions

    echo("== report of the test images (ensemble probabilities and class maps)")
    dev = pick_device(device)
    ens, opts = from_recipe(out_dir, dev), PredictOptions(device=str(dev))
    r = predict_folder(ens, layout.raw_dir(data_dir, "test"), layout.recipe_test_images(out_dir),
                       ids_csv=layout.split_table(data_dir, "test"), opts=opts, echo=echo)
    echo(f"report: {r.report}")
    truth = layout.demo_cells(data_dir, "test")
    if truth["table"].is_file():  # the demo knows its cells: every cell predicted and scored as in 2021
        import shutil

        from hpa.prediction.cells import IMAGE_METHODS, evaluate_cells, predict_cells, segmentation_quality

        for method in IMAGE_METHODS:  # the class maps' cells beside the report; the crops' in a folder of their own
            preds = r.predictions if method == "maps" else layout.recipe_cells_by(out_dir, method)
            if preds != r.predictions:
                preds.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(r.predictions, preds)
            predict_cells(ens, layout.raw_dir(data_dir, "test"), preds, method=method, opts=opts, echo=echo)
            score, _ = evaluate_cells(preds, truth)
            echo(f"PER-CELL mAP ({method}; the 2021 metric: IoU 0.6, its 19 classes): {score:.4f}")
        found, mean_iou = segmentation_quality(r.predictions, truth)
        echo(f"SEGMENTATION (offline): {found:.1%} of the drawn cells found at IoU 0.6, mean IoU {mean_iou:.3f}")
    return r.report


def check_data_dir(data_dir: Path) -> Path:
    data_dir = Path(data_dir).absolute()
    for f in ("train", "test"):
        if not layout.split_table(data_dir, f).is_file():
            raise ConfigError(f"--data-dir {data_dir}: {layout.SPLIT_TABLES[f]} not found (see data/README.md)")
    return data_dir


def run_recipe(recipe: Recipe, data_dir: Path, out_dir: Path, device: str = "auto", smoke: bool = False,
               gpus: int | None = None, parallel_folds: bool = False, echo=print) -> Path:
    """Every stage of the recipe; returns the submission's path."""
    data_dir, out_dir = check_data_dir(data_dir), Path(out_dir).absolute()
    members = [smoke_member(m) for m in recipe.members] if smoke else recipe.members
    n_gpus = gpu_count(gpus)
    runs = layout.recipe_runs(out_dir)
    tables = layout.label_tables(data_dir)
    sizes = sorted({m.size for m in members})
    with dir_lock(layout.lock_file(out_dir), "recipe output directory"):
        echo(f"== recipe: {len(members)} members x {recipe.n_folds} folds, sizes {sizes}, "
             f"{'HPAv18 external included, ' if len(tables) > 1 else ''}{n_gpus} GPU(s); outputs in {out_dir}")
        prepare_data(recipe, data_dir, sizes, 1 if smoke else DEFAULT_WORKERS, echo)
        folds = list(range(recipe.n_folds))
        train_members(members, folds, data_dir, runs, device, n_gpus, parallel_folds, echo)
        predict_members(members, folds, data_dir, out_dir, 1 if smoke else recipe.tta, device, smoke, echo)
        sub = blend_members(members, folds, data_dir, out_dir, echo)
        if recipe.test_report:
            report_test_images(data_dir, out_dir, device, echo)
        return sub


def run_stage(req: RecipeRequest, recipe: Recipe, echo=print) -> None:
    """One stage of the recipe, as a SLURM job runs it (hpa.pipeline.slurm): data, train (one member's fold,
    from --fold or the array task), predict (one member) or blend."""
    stage, device, smoke, member, fold = req.stage, req.device, req.smoke, req.member, req.fold
    data_dir, out_dir = check_data_dir(req.data_dir), Path(req.out_dir).absolute()
    members = [smoke_member(m) for m in recipe.members] if smoke else recipe.members
    folds = list(range(recipe.n_folds))
    if stage == "data":
        prepare_data(recipe, data_dir, sorted({m.size for m in members}), 1 if smoke else DEFAULT_WORKERS, echo)
        return
    if stage == "blend":
        blend_members(members, folds, data_dir, out_dir, echo)
        if recipe.test_report:
            report_test_images(data_dir, out_dir, device, echo)
        return
    chosen = [m for m in members if m.name == member]
    if not chosen:
        raise ConfigError(f"--member {member}: not a member of this recipe ({', '.join(m.name for m in members)})")
    if stage == "predict":
        predict_members(chosen, folds, data_dir, out_dir, 1 if smoke else recipe.tta, device, smoke, echo)
        return
    if fold is None:
        fold = int(os.environ.get("SLURM_ARRAY_TASK_ID", "-1"))
    if fold not in folds:
        raise ConfigError(f"--fold {fold}: the recipe has folds {folds}")
    n_gpus = gpu_count(None)
    if n_gpus > 1:
        _run(train_commands(chosen[0], data_dir, layout.recipe_runs(out_dir), fold, device, n_gpus), echo)
    else:
        train(member_config(chosen[0], data_dir, fold), runs=layout.recipe_runs(out_dir), device_name=device,
              resume=True, echo=echo, hint=REPLACE_HINT)


def launch_slurm(req: RecipeRequest, recipe: Recipe, echo=print) -> Path | None:
    """`--launcher slurm`: submit every unfinished stage as SLURM jobs (hpa.pipeline.slurm) and return, or
    with `wait` wait for them and end with the submission (returned); with `plan`, say what would be
    submitted."""
    from hpa.pipeline import slurm

    opts, device, smoke, plan, wait = req.slurm, req.device, req.smoke, req.plan, req.wait
    recipe_path, overridden = req.recipe_path(), req.n_folds is not None
    data_dir, out_dir = check_data_dir(req.data_dir), Path(req.out_dir).absolute()
    members = [smoke_member(m) for m in recipe.members] if smoke else recipe.members
    folds = list(range(recipe.n_folds))
    configs = [None if m.frozen else member_config(m, data_dir, 0) for m in members]
    if plan:
        echo(f"--launcher slurm would submit: 1 data job ({opts.cpus_per_job} CPUs; skipped once prepared), "
             f"{len(members)} training arrays of {recipe.n_folds} tasks ({len(members) * recipe.n_folds} jobs; "
             f"each {max(opts.gpus_per_job, 1) if opts.gpus_per_job else 'no'} GPU(s), {opts.cpus_per_job} CPUs, "
             f"time limit {opts.time or 'the partition default'}, requeued on preemption), {len(members)} prediction "
             "jobs and 1 blend job. Time per fold: run `bash run_all.sh --plan` on one GPU node (e.g. through srun).")
        return None
    runs, preds = layout.recipe_runs(out_dir), layout.recipe_predictions(out_dir)
    sizes = sorted({m.size for m in members})
    ready = layout.folds_csv(data_dir).is_file() and all(layout.prepared_dir(data_dir, s, "train").is_dir()
                                                         for s in sizes)
    folds_sha = file_sha256(layout.folds_csv(data_dir)) if ready else ""

    def current(m: Member) -> bool:
        tta = 1 if smoke else recipe.tta
        if m.frozen:  # one prediction job embeds (resumably) and trains every fold's head
            from hpa.training.frozen import frozen_current

            enc = m.encoder(tta)
            store = layout.embeddings_dir(data_dir, enc.key, enc.size)
            return ready and layout.embedding_provenance(store).is_file() and \
                frozen_current(data_dir, enc, store, m.frozen, m.frozen_settings(), folds, preds)
        cfg = member_config(m, data_dir, 0)
        return ready and predictions_current(m, runs, preds, folds, DIHEDRAL[:tta], cfg.amp, folds_sha)

    slurm.check_fits(opts)
    with dir_lock(layout.lock_file(out_dir), "recipe output directory"):
        if overridden:  # the jobs must see the same recipe: the overridden one beside the outputs, after the checks
            from hpa.config import save_yaml

            recipe_path = str(layout.recipe_copy(out_dir))
            save_yaml(Path(recipe_path), recipe.model_dump())
        launcher = slurm.Launcher(out_dir, opts, slurm.python_stage(recipe_path, data_dir, out_dir, smoke, device),
                                  echo)
        jobs = slurm.submit_recipe(launcher, members, configs, folds, ready, current)
    if jobs:
        echo(f"submitted {len(jobs)} job(s) to SLURM:")
        for jid, name, log in jobs:
            echo(f"  {jid}  {name}  log: {log}")
    else:
        echo("nothing new to submit: every stage is finished or queued")
    if not wait:
        echo(f"follow them with squeue; run the same command again to resubmit what failed; outputs in {out_dir}")
        return None
    echo("waiting for the jobs ...")
    launcher.wait()
    sub = layout.recipe_submission(out_dir)
    if not sub.is_file():
        raise HPAError(f"the jobs ended without {sub}; see the logs in {launcher.dir}, then run the same command again")
    return sub


def plan_recipe(recipe: Recipe, data_dir: Path, out_dir: Path, device: str = "auto", smoke: bool = False,
                gpus: int | None = None, parallel_folds: bool = False, echo=print) -> Path:
    """`--plan`: time every member on this device and project the recipe's wall time (hpa.pipeline.plan);
    trains nothing. Returns plan.md's path."""
    from hpa.core.atomic import atomic_write_text
    from hpa.core.runtime import pick_device
    from hpa.pipeline.plan import Gpus, make_plan

    data_dir, out_dir = check_data_dir(data_dir), Path(out_dir).absolute()
    members = [smoke_member(m) for m in recipe.members] if smoke else recipe.members
    configs = [None if m.frozen else member_config(m, data_dir, 0) for m in members]
    # the output directory's lock first: a plan beside a live recipe is refused, and an output
    # directory that cannot be written fails before minutes of timing, not after
    with dir_lock(layout.lock_file(out_dir), "recipe output directory"):
        text, _ = make_plan(members, configs, recipe.n_folds, 1 if smoke else recipe.tta, pick_device(device),
                            Gpus(gpu_count(gpus), parallel_folds), echo, data_dir=data_dir)
        path = layout.recipe_plan(out_dir)
        atomic_write_text(path, text)
    echo(text)
    return path


@dataclass(frozen=True)
class RecipeRequest:
    """What `bash run_all.sh` asks for. Without a data directory the synthetic demo is generated once
    (into data/demo) and the `demo` recipe runs; with one, the `paper` recipe. The outputs go to
    work/<data directory's name> unless `out_dir` says otherwise."""
    recipe: str | None = None  # configs/recipes/<name>.yaml or a YAML path
    data_dir: Path | None = None
    out_dir: Path | None = None
    n_folds: int | None = None  # the recipe's number of folds, overridden
    device: str = "auto"
    smoke: bool = False
    gpus: int | None = None
    parallel_folds: bool = False
    plan: bool = False
    slurm: SlurmOptions | None = None  # None: run here
    wait: bool = False
    demo_size: tuple[int, int] = (2000, 500)  # the generated demo's train and test samples
    stage: str | None = None  # one SLURM job's work (with member and fold)
    member: str | None = None
    fold: int | None = None

    def recipe_path(self) -> str:
        """The recipe as a job names it: a file absolute, a name as it is."""
        r = self.recipe or "paper"
        return str(Path(r).absolute()) if r.endswith((".yaml", ".yml")) else r


@dataclass
class RecipeOutcome:
    """What a recipe call made, for the caller to show."""
    data_dir: Path
    out_dir: Path
    submission: Path | None = None  # None: planned only, or SLURM jobs still running
    plan: Path | None = None
    demo_preview: Path | None = None
    seconds: float = 0.0

    def files(self) -> dict[str, Path]:
        """The outputs to point a user at, by what they are, those that exist."""
        found = {"submission": self.submission, "plan": self.plan, "demo preview": self.demo_preview,
                 "per-class report": layout.recipe_report(self.out_dir),
                 "test images with class maps": layout.folder_report(layout.recipe_test_images(self.out_dir))}
        return {k: v for k, v in found.items() if v is not None and v.is_file()}


def run_request(req: RecipeRequest, echo=print) -> RecipeOutcome:
    """Run (or plan, or submit to SLURM, or one SLURM job's stage of) a recipe as `req` asks."""
    start = time.time()
    preview = None
    if req.data_dir is None:
        from hpa.data.demo import make_demo

        data_dir, name = layout.DEMO_DATA, req.recipe or "demo"
        if not layout.split_table(data_dir, "train").is_file():
            echo(f"== generating the demo dataset in {data_dir}")
            make_demo(data_dir, *req.demo_size, size=128, seed=0)
        preview = layout.demo_file(data_dir, "preview")
    else:
        data_dir, name = Path(req.data_dir), req.recipe or "paper"
    out_dir = Path(req.out_dir or layout.recipe_work_dir(data_dir)).absolute()
    req = dataclasses.replace(req, recipe=name, data_dir=data_dir, out_dir=out_dir)
    recipe = load_recipe(name)
    if req.n_folds is not None:  # validated as the recipe's own value is (0 and 1 are refused, not ignored)
        try:
            recipe = Recipe(**{**recipe.model_dump(), "n_folds": req.n_folds})
        except ValidationError as e:
            raise ConfigError(f"--n-folds {req.n_folds}: {e.errors()[0]['msg']}") from None
    out = RecipeOutcome(data_dir, out_dir, demo_preview=preview)
    if req.stage:
        run_stage(req, recipe, echo)
    elif req.slurm is not None:
        out.submission = launch_slurm(req, recipe, echo)
    elif req.plan:
        out.plan = plan_recipe(recipe, data_dir, out_dir, req.device, req.smoke, req.gpus, req.parallel_folds, echo)
    else:
        out.submission = run_recipe(recipe, data_dir, out_dir, req.device, req.smoke, req.gpus, req.parallel_folds,
                                    echo=echo)
    out.seconds = time.time() - start
    return out
