"""A one-node SLURM cluster for the tests: munge + slurmctld + slurmd from the distribution's
packages, configured in a temporary directory (proctrack/linuxproc, task/none, this node's CPUs),
stopped by the process ids in their pid files. Installs the packages when missing, as root with
apt-get; otherwise the caller skips with the reason."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Unavailable(Exception):
    """Why no cluster can be started here (one line, for pytest.skip)."""


def ensure_packages() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise Unavailable(f"installing SLURM failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.pidfiles: list[Path] = []

    def start(self, timeout: float = 60) -> Cluster:
        ensure_packages()
        if os.geteuid() != 0:
            raise Unavailable("starting slurmd needs root")
        node = socket.gethostname()
        r, cpus = self.root, os.cpu_count() or 1
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        # munged runs as user munge and must reach its directory: not under pytest's private tmp
        self.munge_root = Path(tempfile.mkdtemp(prefix="hpa-munge-"))
        os.chmod(self.munge_root, 0o755)
        mdir = self.munge_root / "munge"
        mdir.mkdir()
        shutil.chown(mdir, "munge", "munge")
        os.chmod(mdir, 0o700)
        key = Path("/etc/munge/munge.key")
        if not key.is_file():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            os.chmod(key, 0o400)
        sock = mdir / "munge.socket"
        conf = r / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=hpatest", f"SlurmctldHost={node}", "SlurmUser=root", "SlurmdUser=root",
            # cred_expire is also how long SLURM holds a requeued job back (120 s by default)
            "AuthType=auth/munge", f"AuthInfo=socket={sock},cred_expire=10", f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool", f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
            # a requeued job waits out its hold, then for the main scheduler's pass (every 60 s by default)
            "SchedulerParameters=sched_interval=1",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "JobRequeue=1",
            "SlurmctldPort=16817", "SlurmdPort=16818", "MpiDefault=none",
            f"NodeName={node} CPUs={cpus} RealMemory=8000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        os.environ["SLURM_CONF"] = str(conf)  # the toolkit's sbatch/squeue calls in this process and children
        m = subprocess.run(["munged", "--force", f"--socket={sock}", f"--pid-file={mdir}/munged.pid",
                            f"--log-file={mdir}/munged.log", f"--seed-file={mdir}/seed"], user="munge",
                           capture_output=True, text=True)
        if m.returncode != 0:
            raise Unavailable(f"munged did not start: {' '.join((m.stderr or m.stdout).split())[:200]}")
        self.pidfiles.append(mdir / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], check=True, env=self.env, capture_output=True)
            self.pidfiles.append(r / f"{daemon}.pid")
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if s.returncode == 0 and s.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.stop()
        raise Unavailable(f"the SLURM node did not come up within {timeout:.0f} s (logs in {r / 'log'})")

    def stop(self) -> None:
        for pidfile in reversed(self.pidfiles):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        os.environ.pop("SLURM_CONF", None)
        shutil.rmtree(getattr(self, "munge_root", ""), ignore_errors=True)
