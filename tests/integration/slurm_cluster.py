"""A one-node Slurm cluster for tests: Debian's munge and slurm-wlm on 127.0.0.1, in a directory of its own;
with ``accounting``, also Debian's slurmdbd over a MariaDB server of its own (loopback only).

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
ACCOUNTING_NEEDED = ("slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db", "mariadb")
MUNGE_KEY = Path("/etc/munge/munge.key")
DEFAULT_MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing(accounting: bool = False) -> str | None:
    """Why no cluster (with ``accounting``: with slurmdbd) can start here, or None."""
    needed = NEEDED + (ACCOUNTING_NEEDED if accounting else ())
    absent = [
        name for name in needed if shutil.which(name) is None and shutil.which(name, path="/usr/sbin") is None
    ]
    if absent:
        packages = "slurm-wlm munge" + (" slurmdbd mariadb-server" if accounting else "")
        return f"needs Slurm and munge ({', '.join(absent)} not found: apt-get install {packages})"
    if os.geteuid() != 0:
        return "needs root (slurmd, and mknod for the GPUs' device files)"
    if not MUNGE_KEY.is_file():
        return f"needs munge's key {MUNGE_KEY}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _munge_answers(path: Path) -> bool:
    """Whether a munged listens on ``path``."""
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin") or name


class SlurmCluster:
    """munged, slurmctld and slurmd for one node of ``gpus`` GPUs; ``env`` for Slurm's commands."""

    def __init__(self, root: Path, gpus: int = 1, extra_config: str = "", accounting: bool = False) -> None:
        self.root = root
        self.accounting = accounting
        self.dbd_port = _free_port()
        self.node = socket.gethostname()
        for name in ("state", "spool", "dev", "log"):
            (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(gpus):
            os.mknod(root / "dev" / f"nvidia{index}", 0o600 | 0o020000, os.makedev(195, index))
        key = root / "munge.key"
        shutil.copyfile(MUNGE_KEY, key)
        key.chmod(0o600)
        # Slurm's connections to slurmdbd authenticate through munge's default socket, whatever AuthInfo says.
        self.munge_socket = DEFAULT_MUNGE_SOCKET if accounting else root / "munge.sock"
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
            + (
                f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
                f"AccountingStoragePort={self.dbd_port}\n"
                if accounting
                else "AccountingStorageType=accounting_storage/none\n"
            )
            + "MpiDefault=none\n"
            f"{extra_config}"
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} Gres=gpu:{gpus} "
            "State=UNKNOWN\n"
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.pids: list[Path] = []

    def start(self, timeout_s: float = 60.0) -> SlurmCluster:
        root = self.root
        if not _munge_answers(self.munge_socket):  # a node's own munged (same key) serves as well
            self.munge_socket.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [_binary("munged"), f"--socket={self.munge_socket}", f"--key-file={root / 'munge.key'}",
                 f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
                 f"--seed-file={root / 'munge.seed'}", "--force"],
                check=True, timeout=30, capture_output=True,
            )  # fmt: skip
            self.pids.append(root / "munged.pid")
        if self.accounting:
            self._start_accounting()
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

    def _start_accounting(self, timeout_s: float = 30.0) -> None:
        """MariaDB on a loopback port of its own, and slurmdbd over it; the cluster registered."""
        root, db = self.root, self.root / "db"
        db.mkdir(exist_ok=True)
        subprocess.run(
            [_binary("mariadb-install-db"), "--user=root", f"--datadir={db}", "--skip-test-db",
             "--auth-root-authentication-method=socket"],
            check=True, timeout=60, capture_output=True,
        )  # fmt: skip
        mysql_port, sock = _free_port(), root / "mysql.sock"
        subprocess.Popen(
            [_binary("mariadbd"), "--user=root", f"--datadir={db}", f"--socket={sock}",
             f"--port={mysql_port}", "--bind-address=127.0.0.1", f"--pid-file={root / 'mysqld.pid'}",
             "--skip-log-bin",
             f"--log-error={root / 'log' / 'mysqld.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.pids.append(root / "mysqld.pid")
        deadline = time.monotonic() + timeout_s
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        grant = (
            "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';"
        )
        subprocess.run([_binary("mariadb"), f"--socket={sock}", "-u", "root", "-e", grant], check=True,
                       timeout=30, capture_output=True)  # fmt: skip
        dbd_conf = root / "slurmdbd.conf"  # read from SLURM_CONF's directory; SlurmUser's, mode 0600
        dbd_conf.write_text(
            f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\nDbdHost=localhost\n"
            f"DbdAddr=127.0.0.1\nDbdPort={self.dbd_port}\nSlurmUser=root\n"
            f"PidFile={root / 'slurmdbd.pid'}\nLogFile={root / 'log' / 'slurmdbd.log'}\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={mysql_port}\n"
            "StorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n"
        )
        dbd_conf.chmod(0o600)
        subprocess.run([_binary("slurmdbd")], check=True, timeout=30, env=self.env, capture_output=True)
        self.pids.append(root / "slurmdbd.pid")
        while time.monotonic() < deadline:
            if self.run("sacctmgr", "-i", "add", "cluster", "gpuproftest").returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"slurmdbd did not answer in {timeout_s:g} s: {self.logs()}")

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
