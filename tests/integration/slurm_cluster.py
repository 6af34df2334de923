"""A one-node Slurm cluster for tests: Debian's munge and slurm-wlm on 127.0.0.1, in a directory of its own.

Its GPUs are character devices made with mknod (``Gres=gpu``, ``AutoDetect=off``): Slurm allocates them and
sets ``SLURM_JOB_GPUS`` as on a GPU node, and the jobs talk to a simulated gpuprofd. Needs root (slurmd,
mknod) and ``munged``, ``slurmctld`` and ``slurmd`` on the PATH (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [
        name for name in NEEDED if shutil.which(name) is None and shutil.which(name, path="/usr/sbin") is None
    ]
    if absent:
        return f"needs Slurm and munge ({', '.join(absent)} not found: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "needs root (slurmd, and mknod for the GPUs' device files)"
    if not MUNGE_KEY.is_file():
        return f"needs munge's key {MUNGE_KEY}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin") or name


class SlurmCluster:
    """munged, slurmctld and slurmd for one node of ``gpus`` GPUs; ``env`` for Slurm's commands."""

    def __init__(self, root: Path, gpus: int = 1, extra_config: str = "") -> None:
        self.root = root
        self.node = socket.gethostname()
        for name in ("state", "spool", "dev", "log"):
            (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(gpus):
            os.mknod(root / "dev" / f"nvidia{index}", 0o600 | 0o020000, os.makedev(195, index))
        key = root / "munge.key"
        shutil.copyfile(MUNGE_KEY, key)
        key.chmod(0o600)
        self.munge_socket = root / "munge.sock"
        devices = f"{root}/dev/nvidia[0-{gpus - 1}]" if gpus > 1 else f"{root}/dev/nvidia0"
        (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu File={devices}\n")
        (root / "slurm.conf").write_text(
            f"ClusterName=gpuproftest\nSlurmctldHost={self.node}(127.0.0.1)\n"
            f"SlurmctldPort={_free_port()}\nSlurmdPort={_free_port()}\n"
            f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
            "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSchedulerType=sched/backfill\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nGresTypes=gpu\n"
            f"StateSaveLocation={root}/state\nSlurmdSpoolDir={root}/spool\n"
            f"SlurmctldPidFile={root}/slurmctld.pid\nSlurmdPidFile={root}/slurmd.pid\n"
            f"SlurmctldLogFile={root}/log/slurmctld.log\nSlurmdLogFile={root}/log/slurmd.log\n"
            "SlurmUser=root\nSlurmdUser=root\nReturnToService=2\nJobCompType=jobcomp/none\n"
            "AccountingStorageType=accounting_storage/none\nMpiDefault=none\n"
            f"{extra_config}"
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} Gres=gpu:{gpus} "
            "State=UNKNOWN\n"
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.pids: list[Path] = []

    def start(self, timeout_s: float = 60.0) -> SlurmCluster:
        root = self.root
        subprocess.run(
            [_binary("munged"), f"--socket={self.munge_socket}", f"--key-file={root / 'munge.key'}",
             f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
             f"--seed-file={root / 'munge.seed'}", "--force"],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        self.pids.append(root / "munged.pid")
        conf = str(root / "slurm.conf")
        subprocess.run([_binary("slurmctld"), "-f", conf, "-i"], check=True, timeout=30, env=self.env,
                       capture_output=True)  # fmt: skip
        self.pids.append(root / "slurmctld.pid")
        subprocess.run(
            [_binary("slurmd"), "-f", conf], check=True, timeout=30, env=self.env, capture_output=True
        )
        self.pids.append(root / "slurmd.pid")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%t").stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.3)
        raise RuntimeError(f"the test cluster's node is not idle after {timeout_s:g} s: {self.logs()}")

    def run(self, *command: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_binary(command[0]), *command[1:]],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.env,
        )

    def wait_for_job(self, job_id: str, timeout_s: float = 300.0) -> None:
        """Until the job (every task of an array) has left the queue."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-j", job_id).stdout.strip():
                return
            time.sleep(0.5)
        raise AssertionError(f"Slurm job {job_id} still queued after {timeout_s:g} s: {self.logs()}")

    def logs(self) -> str:
        texts = [p.read_text(errors="replace")[-1500:] for p in sorted((self.root / "log").glob("*.log"))]
        return "\n".join(texts)

    def stop(self) -> None:
        for pid_file in reversed(self.pids):
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.5)
