"""The recipe on a SLURM cluster: every stage handed to SLURM as batch jobs, chained by dependencies.

    bash run_all.sh --data-dir data/hpa --launcher slurm [--partition gpu --gpus-per-job 1 --time 2-00:00:00]

Jobs (plain `sbatch`, one script each, kept in <out-dir>/slurm/ with their logs):
- `data`: prepare every size, find the near-duplicates, make the folds (skipped once done);
- `train-<member>`: one array per member, one task per unfinished fold, after `data`;
- `predict-<member>`: OOF and test predictions, after the member's array;
- `blend`: the submission, after every prediction job.
Each job runs one stage of `python -m hpa.cli.run_all --stage ...` in-process (torchrun for several GPUs per job). A
training job asks SLURM for USR1 two minutes before its time limit and is requeueable: on USR1 (or
SIGTERM, a preemption) it saves last.pt at the next step and requeues itself, and resumes from that
step. Running the same command again submits only what is neither finished nor queued.

Plain sbatch rather than submitit: the job scripts are readable shell files a cluster's admins can
inspect and resubmit by hand, nothing is pickled (a job runs today's code against the run's saved
config), and no dependency is added.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpa.data import layout
from hpa.errors import HPAError

STAGES = ("data", "train", "predict", "blend")


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    time: str | None = None  # a training job's limit, e.g. 2-00:00:00
    mem: str | None = None
    extra: list[str] = field(default_factory=list)  # more sbatch options, e.g. --qos=long


def slurm_command(args: list[str]) -> str:
    """Run a SLURM client command; one line naming it when it fails or is missing."""
    try:
        r = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise HPAError(f"{args[0]}: not found; --launcher slurm runs on a SLURM cluster's login node") from None
    if r.returncode != 0:
        raise HPAError(f"{' '.join(args[:2])} failed: {' '.join((r.stderr or r.stdout).split())[:300]}")
    return r.stdout


class Launcher:
    """Submits the recipe's jobs; `stage_args` is the hpa.pipeline.recipe command line of a stage."""

    def __init__(self, out_dir: Path, opts: SlurmOptions, stage_args: Callable[[str], list[str]],
                 echo: Callable[[str], None] = print):
        self.out_dir, self.opts, self.stage_args, self.echo = Path(out_dir), opts, stage_args, echo
        self.dir = layout.slurm_dir(self.out_dir)
        self.tag = hashlib.sha256(str(self.out_dir).encode()).hexdigest()[:6]  # one recipe's jobs, by name
        self.submitted: list[tuple[str, str, Path]] = []  # (job id, name, log)

    def name(self, stage: str, member: str | None = None) -> str:
        return f"hpa-{self.tag}-{stage}" + (f"-{member}" if member else "")

    def queued(self) -> dict[str, list[tuple[str, str]]]:
        """Job name -> [(job id, state)] of this recipe's jobs still in the queue."""
        out: dict[str, list[tuple[str, str]]] = {}
        for line in slurm_command(["squeue", "-h", "-r", "-o", "%i|%j|%T"]).splitlines():  # -r: a line per task
            jid, name, state = line.split("|")
            if name.startswith(f"hpa-{self.tag}-"):
                out.setdefault(name, []).append((jid, state))
        return out

    def script(self, name: str, stage: str, args: list[str], array: str | None, after: list[str]) -> str:
        o = self.opts
        lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --cpus-per-task={o.cpus_per_job}",
                 "#SBATCH --open-mode=append"]
        log = layout.slurm_log(self.dir, name, "%a" if array else None)
        lines.append(f"#SBATCH --output={log}")
        lines += [f"#SBATCH --partition={o.partition}"] if o.partition else []
        lines += [f"#SBATCH --account={o.account}"] if o.account else []
        lines += [f"#SBATCH --mem={o.mem}"] if o.mem else []
        if o.gpus_per_job and stage in ("train", "predict"):
            lines.append(f"#SBATCH --gpus={o.gpus_per_job}")
        if stage == "train":
            lines += ["#SBATCH --requeue", "#SBATCH --signal=B:USR1@120"]  # save and requeue before the limit
            lines += [f"#SBATCH --time={o.time}"] if o.time else []
        lines += [f"#SBATCH --array={array}"] if array else []
        lines += [f"#SBATCH --dependency=afterok:{':'.join(after)}", "#SBATCH --kill-on-invalid-dep=yes"] \
            if after else []
        lines += [f"#SBATCH {x}" for x in o.extra]
        return "\n".join(lines + ["", "exec " + " ".join(shlex.quote(str(a)) for a in args), ""])

    def submit(self, stage: str, member: str | None = None, array: str | None = None,
               after: list[str] | None = None, extra: list[str] = ()) -> str:
        name = self.name(stage, member)
        text = self.script(name, stage, [*self.stage_args(stage), *extra], array, after or [])
        self.dir.mkdir(parents=True, exist_ok=True)
        path = layout.slurm_script(self.dir, name)
        path.write_text(text)
        jid = slurm_command(["sbatch", "--parsable", str(path)]).strip().split(";")[0]
        log = layout.slurm_log(self.dir, name, "<fold>" if array else None)
        self.submitted.append((jid, name + (f" [folds {array}]" if array else ""), log))
        return jid

    def never_starting(self) -> tuple[str, str, str] | None:
        """(job id, name, reason) of a pending job of this recipe that SLURM says can never start."""
        for line in slurm_command(["squeue", "-h", "-r", "-o", "%i|%j|%T|%r"]).splitlines():
            jid, name, state, reason = (line.split("|") + ["", "", "", ""])[:4]
            if name.startswith(f"hpa-{self.tag}-") and state == "PENDING" and reason in NEVER_STARTS:
                return jid, name, reason
        return None

    def wait(self, poll_s: float = 5.0) -> None:
        """Until none of this recipe's jobs is queued; a failed job is one line naming its log, and a
        job SLURM will never start (its reason says so) one line naming the reason and the flag."""
        ids = [jid for jid, _, _ in self.submitted]
        while self.queued():
            stuck = self.never_starting()
            if stuck:
                jid, name, reason = stuck
                raise HPAError(f"SLURM job {jid} ({name}) can never start: {reason} ({NEVER_STARTS[reason]}); "
                               f"scancel it, change that and run the same command again")
            time.sleep(poll_s)
        if not ids:
            return
        out = slurm_command(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State", "-j", ",".join(ids)]) \
            if _has_sacct() else ""
        bad = [ln.split("|") for ln in out.splitlines() if ln and ln.split("|")[2] not in ("COMPLETED", "REQUEUED")]
        if bad:
            raise HPAError(f"SLURM job {bad[0][0]} ({bad[0][1]}) ended {bad[0][2]}; see its log in {self.dir}, then "
                           "run the same command again")


# squeue reasons of a pending job that no amount of waiting changes, and what to change
NEVER_STARTS = {
    "PartitionConfig": "it asks for more CPUs, GPUs or memory than any node of the partition has: lower "
                       "--cpus-per-job, --gpus-per-job or --mem, or choose another --partition",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows: choose another --partition",
    "PartitionTimeLimit": "its --time is above the partition's limit: lower --time",
    "BadConstraints": "no node meets its constraints: check the --sbatch options",
    "DependencyNeverSatisfied": "a job it depends on failed: see that job's log in <out-dir>/slurm",
    "InvalidAccount": "the --account is not valid on this cluster",
    "InvalidQOS": "the QOS (--sbatch=--qos=...) is not valid on this cluster",
    "QOSMaxCpuPerJobLimit": "its QOS allows fewer CPUs: lower --cpus-per-job",
    "QOSMaxGRESPerJob": "its QOS allows fewer GPUs: lower --gpus-per-job",
    "QOSMaxWallDurationPerJobLimit": "its QOS allows a shorter time: lower --time",
}


def _mebibytes(mem: str) -> float | None:
    """sbatch's --mem (a number of MiB, or with K, M, G, T)."""
    m = mem.strip().upper()
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2}
    try:
        return float(m[:-1]) * scale[m[-1]] if m[-1] in scale else float(m)
    except ValueError:
        return None


def check_fits(opts: SlurmOptions) -> None:
    """Refuse, before submitting, requests no node of the partition can hold (sinfo's CPUs, memory and
    GPUs per node): SLURM accepts such a job and leaves it pending for ever."""
    rows = [ln.split("|") for ln in slurm_command(["sinfo", "-h", "-o", "%P|%c|%m|%G"]).splitlines() if ln]
    if not rows:
        raise HPAError("sinfo lists no partitions; is this a SLURM login node?")
    want = opts.partition
    mine = [r for r in rows if (r[0].rstrip("*") == want if want else r[0].endswith("*"))] or \
        ([] if want else rows)
    if not mine:
        known = ", ".join(r[0].rstrip("*") for r in rows)
        raise HPAError(f"--partition {want}: not a partition of this cluster ({known})")
    name = mine[0][0].rstrip("*")
    cpus = max(int(r[1].rstrip("+")) for r in mine)
    if opts.cpus_per_job > cpus:
        raise HPAError(f"--cpus-per-job {opts.cpus_per_job}: no node of partition {name} has more than {cpus} CPUs "
                       f"(sinfo); ask for at most {cpus}")
    mem = max(int(r[2].rstrip("+")) for r in mine if r[2].rstrip("+").isdigit()) if any(
        r[2].rstrip("+").isdigit() for r in mine) else None
    asked = _mebibytes(opts.mem) if opts.mem else None
    if opts.mem and asked is None:
        raise HPAError(f"--mem {opts.mem}: not a memory size (e.g. 64G or 16000)")
    if asked and mem and asked > mem:
        raise HPAError(f"--mem {opts.mem}: no node of partition {name} has more than {mem} MB (sinfo)")
    if opts.gpus_per_job and not any("gpu" in r[3] for r in mine):
        raise HPAError(f"--gpus-per-job {opts.gpus_per_job}: partition {name} has no GPUs (sinfo lists no gpu "
                       "resources); choose a GPU --partition")


def _has_sacct() -> bool:
    r = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True)
    return r.returncode == 0 and "accounting storage is disabled" not in (r.stderr + r.stdout).lower()


def finished_folds(runs: Path, member, folds: list[int], epochs: int) -> list[int]:
    """Folds whose run has trained every epoch (its log has the last epoch and last.pt exists)."""

    done = []
    for f in folds:
        run = layout.run_dir(runs, member.arch, member.size, f)
        if layout.finished_run(run, epochs):
            done.append(f)
    return done


def submit_recipe(launcher: Launcher, members: list, configs: list, folds: list[int], data_ready: bool,
                  predictions_current: Callable) -> list[tuple[str, str, Path]]:
    """Submit every unfinished stage of the recipe whose outputs go to the launcher's folder, reusing
    the jobs of this recipe still in the queue."""
    runs = layout.recipe_runs(launcher.out_dir)
    queue = launcher.queued()

    def existing(stage: str, member: str | None = None) -> list[str]:
        return [jid for jid, _ in queue.get(launcher.name(stage, member), [])]

    data_jobs = existing("data")
    if not data_ready and not data_jobs:
        data_jobs = [launcher.submit("data")]
    predict_jobs = []
    for m, cfg in zip(members, configs):
        running = existing("train", m.name)
        queued_folds = {int(j.split("_")[1]) for j in running if "_" in j and j.split("_")[1].isdigit()}
        # a frozen member (no config) has no training array: its prediction job embeds and trains the heads
        todo = [] if cfg is None else [f for f in folds if f not in finished_folds(runs, m, folds, cfg.epochs)
                                       and f not in queued_folds]
        train_jobs = [j.split("_")[0] for j in running]
        if todo:
            train_jobs.append(launcher.submit("train", m.name, array=",".join(map(str, todo)), after=data_jobs,
                                              extra=["--member", m.name]))
        pending = existing("predict", m.name)
        if not pending and (train_jobs or not predictions_current(m)):
            pending = [launcher.submit("predict", m.name, after=sorted(set(train_jobs + data_jobs)),
                                       extra=["--member", m.name])]
        predict_jobs += pending
    if predict_jobs or not layout.recipe_submission(launcher.out_dir).is_file():
        if not existing("blend"):
            launcher.submit("blend", after=predict_jobs + data_jobs)
    return launcher.submitted


def python_stage(recipe_path: str, data_dir: Path, out_dir: Path, smoke: bool, device: str) -> Callable:
    def args(stage: str) -> list[str]:
        return [sys.executable, "-m", "hpa.cli.run_all", "--recipe", recipe_path, "--data-dir", data_dir,
                "--out-dir", out_dir, "--device", device, "--stage", stage, *(["--smoke"] if smoke else [])]
    return args
