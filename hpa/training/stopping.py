"""Stopping a run at a step boundary on SIGTERM/SIGUSR1 (a preemption, scancel, SLURM's
time-limit signal), and requeueing its SLURM job."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from hpa.training import distributed


class StopRequest:
    """SIGTERM (a preemption, `kill`, `scancel`) or SIGUSR1 (what SLURM sends before a time limit
    with `--signal`): the current step finishes, last.pt is saved there, and the run stops, so that
    the same command (or the requeued job) resumes from that step. Ctrl-C keeps Python's
    KeyboardInterrupt: the last epoch's checkpoint is kept."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._set)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _set(self, signum, frame) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """True on every process once any has been signalled (DDP ranks stop at the same step)."""
        if distributed.world() > 1:
            return any(distributed.gather(self.signum is not None))
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"


def slurm_job_to_requeue(env: dict[str, str]) -> str:
    """This batch job's id for `scontrol requeue`: `<array job>_<task>` inside an array task, because
    the first task's SLURM_JOB_ID is also the array's id, and requeueing that id requeues every
    task of the array (its running siblings are killed and wait out SLURM's requeue hold)."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID", "")


def requeue_slurm_job() -> str:
    """Inside a SLURM batch job: requeue it, so it resumes from the checkpoint just saved."""
    job = slurm_job_to_requeue(dict(os.environ))
    if not job:
        return ""
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if r.returncode != 0:
        return f"; scontrol requeue {job} failed ({r.stderr.strip()})"
    return f"; requeued SLURM job {job}"
