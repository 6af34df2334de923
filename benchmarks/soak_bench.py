"""gpuprofd soak test: one root daemon, 8 simulated GPUs, 4 OS users submitting jobs, 8 live subscribers.

    python3 benchmarks/soak_bench.py [--minutes 10] [--json-out PATH]          (as root)

Starts one gpuprofd (``python -m gpuprof.daemon.cli serve --simulate``) as root on 8 simulated GPUs at its
default settings (``rate_hz`` 1 kHz, ``history_s`` 600) with a temporary state directory, and creates the
group ``gpuprof`` (when missing) and USERS temporary OS users in it. Each user runs a client process, as
that user, that keeps ``--per-gpu`` of its burn jobs queued or running on every GPU and backs off, counting
them, when the daemon refuses with ``quota_exceeded`` or ``rate_limited``; the first user also reads the live
data on 8 SUB sockets (``gpu/N``, plus the ``job/ID`` topics of its own jobs). Every ``--sample-s`` the
daemon's RSS, open file descriptors, threads and CPU, the state directory's size on disk, the jobs by state
(read-only from the job store's SQLite file) and its log's new lines are recorded; a probe (root, which the
daemon does not rate-limit) times ``hello``, ``jobs`` and ``job`` requests in the first minute after warm-up
and in the last minute. Everything created (users, group, directory modes opened for the users, the
temporary directory) is removed or put back at the end, also on Ctrl-C or SIGTERM. Prints tables and writes
one JSON. Every figure is SIMULATED: it measures gpuprof's own code, not a GPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import grp
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from daemon_bench import DaemonUnderTest, ms_stats  # benchmarks/, beside this file
from sampler_bench import finite, fmt, table

HERE = Path(__file__).resolve()
GROUP = "gpuprof"  # gpuprofd's default users_group and socket_group
USER_PREFIX = "gpsoak"  # the temporary users are gpsoak0, gpsoak1, ...
USERS, GPUS = 4, 8
RATE_HZ = 1000.0  # gpuprofd's default rate_hz
JOB_TIMEOUT_S = 120.0
REFUSALS = ("quota_exceeded", "rate_limited")  # the daemon's per-user limits: back off and count
POLL_S = 1.0  # how often a submitter looks at its own queue
BACKOFF_S = (0.5, 16.0)  # first and longest wait after a refusal or an error, doubled each time
SUB_JOBS_POLL_S = 2.0  # how often the subscriber looks for new jobs of its own to watch
GAP_MS = 20.0  # a gap between two batches of one GPU this long means lost batches or missed slots
PROBE_TYPES = ("hello", "jobs", "job")
MONTH_GPU_HOURS = GPUS * 24 * 30  # the node's 8 GPUs busy all month
MB = 1e6


def nap(seconds: float, stop: threading.Event) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, in short steps so that signals are seen promptly."""
    deadline = time.monotonic() + max(0.0, seconds)
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM: a role process then ends its loop and still reports what it counted."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def error_code(exc: BaseException) -> str:
    """The protocol error code of a gpuprof exception, or its class name (timeouts, denials)."""
    code = getattr(exc, "code", None)
    return str(code) if code else type(exc).__name__


# ---- the users' processes (run as those users, by this same file with --role) ---------------------------


def run_submitter(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keep ``per_gpu`` of this user's burn jobs queued or running on every GPU until ``until``."""
    from gpuprof.client import Client
    from gpuprof.client.wire.errors import GpuprofError
    from gpuprof.client.wire.jobspec import JobSpec

    stop = stop_on_sigterm()
    burn = {"seconds": cfg["job_seconds"], "warmup_s": 0}
    specs = [
        JobSpec.from_dict(
            {"name": "soak", "gpu": gpu, "workload": "burn", "burn": burn, "timeout_s": JOB_TIMEOUT_S}
        )
        for gpu in range(cfg["gpus"])
    ]
    counts: collections.Counter[str] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    first = cfg["index"] % cfg["gpus"]  # users start on different GPUs, then each goes round-robin
    backoff = 0.0
    with Client(cfg["endpoint"], timeout_s=30) as client:
        while not stop.is_set() and time.monotonic() < cfg["until"]:
            try:
                outstanding: collections.Counter[int] = collections.Counter()
                for state in ("queued", "running"):
                    counts["requests"] += 1
                    outstanding.update(int(job["gpu"]) for job in client.jobs(state=state, limit=1000))
                for k in range(cfg["gpus"]):
                    gpu = (first + k) % cfg["gpus"]
                    for _ in range(max(0, cfg["per_gpu"] - outstanding[gpu])):
                        counts["requests"] += 1
                        client.submit(specs[gpu])
                        counts["submitted"] += 1
                first = (first + 1) % cfg["gpus"]
                backoff, delay = 0.0, POLL_S
            except GpuprofError as exc:
                code = error_code(exc)
                (refusals if code in REFUSALS else errors)[code] += 1
                backoff = min(BACKOFF_S[1], max(BACKOFF_S[0], 2 * backoff))
                delay = backoff * random.uniform(0.5, 1.0)  # jitter: users refused together retry apart
            nap(min(delay, cfg["until"] - time.monotonic()), stop)
    return {"user": cfg["user"], **counts, "refusals": dict(refusals), "errors": dict(errors)}


class LagMinutes:
    """Per-minute p50, p99 and max of a latency, keeping only the current minute's values."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.minute = 0
        self.values: list[int] = []
        self.done: list[dict[str, Any]] = []

    def add(self, now: float, value_ns: int) -> None:
        minute = int((now - self.started) // 60)
        if minute != self.minute:
            self.close()
            self.minute = minute
        self.values.append(value_ns)

    def close(self) -> None:
        if self.values:
            self.done.append({"minute": self.minute, **ms_stats(self.values)})
        self.values = []


def run_subscriber(cfg: dict[str, Any]) -> dict[str, Any]:
    """Read every GPU's live samples on its own SUB socket (``gpu/N``), plus this user's jobs' topics."""
    import zmq

    from gpuprof.client import Client
    from gpuprof.client.wire.errors import GpuprofError
    from gpuprof.client.wire.protocol import ProtocolError, decode_publish, topic_for_gpu, topic_for_job

    stop = stop_on_sigterm()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = Client(cfg["endpoint"], timeout_s=30)
    gpus = range(cfg["gpus"])
    per_gpu = {g: {"batches": 0, "samples": 0, "gaps": 0, "max_gap_ms": 0.0} for g in gpus}
    counts: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    last_t: dict[int, int] = {}
    watched: dict[str, tuple[int, float]] = {}  # job id -> (socket, when last seen outstanding)
    started = time.monotonic()
    lag = LagMinutes(started)  # receipt minus the newest sample's t_ns, per batch
    try:
        pub = str(client.hello()["pub_endpoint"])
        subs = []
        for gpu in gpus:
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, topic_for_gpu(gpu))
            sub.connect(pub)
            subs.append(sub)
        poller = zmq.Poller()
        for sub in subs:
            poller.register(sub, zmq.POLLIN)
        next_jobs_poll = started
        while not stop.is_set() and time.monotonic() < cfg["until"]:
            now = time.monotonic()
            if now >= next_jobs_poll:
                next_jobs_poll = now + SUB_JOBS_POLL_S
                try:
                    for state in ("queued", "running"):
                        for job in client.jobs(state=state, limit=1000):
                            index = int(job["gpu"]) % len(subs)
                            if job["id"] not in watched:
                                subs[index].setsockopt(zmq.SUBSCRIBE, topic_for_job(job["id"]))
                                counts["job_topics_subscribed"] += 1
                            watched[job["id"]] = (index, now)
                except GpuprofError as exc:
                    errors[error_code(exc)] += 1
                for job_id, (index, seen) in list(watched.items()):
                    if now - seen > 60:  # its final state was missed: stop listening anyway
                        subs[index].setsockopt(zmq.UNSUBSCRIBE, topic_for_job(job_id))
                        del watched[job_id]
                        counts["job_topics_expired"] += 1
            for sub, _ in poller.poll(200):
                for _ in range(1000):  # drain what is queued, a bounded amount per socket per turn
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received = time.monotonic()
                    try:
                        kind, body = decode_publish(frames[-1])
                    except ProtocolError:
                        counts["undecodable"] += 1
                        continue
                    counts[f"messages_{kind}"] += 1
                    if kind == "samples" and body.get("t_ns"):
                        gpu, t_ns = int(body["gpu"]), body["t_ns"]
                        entry = per_gpu[gpu]
                        entry["batches"] += 1
                        entry["samples"] += len(t_ns)
                        if gpu in last_t:
                            gap_ms = (t_ns[0] - last_t[gpu]) / 1e6
                            entry["gaps"] += gap_ms > GAP_MS
                            entry["max_gap_ms"] = max(entry["max_gap_ms"], gap_ms)
                        last_t[gpu] = t_ns[-1]
                        lag.add(received, time.monotonic_ns() - t_ns[-1])
                    elif kind == "job" and body.get("job", {}).get("state") in cfg["final_states"]:
                        job_id = str(body["job"]["id"])
                        counts[f"final_{body['job']['state']}"] += 1
                        if job_id in watched:
                            subs[watched.pop(job_id)[0]].setsockopt(zmq.UNSUBSCRIBE, topic_for_job(job_id))
    finally:
        lag.close()
        client.close()
        context.destroy(linger=0)
    return {
        "seconds": time.monotonic() - started,
        "per_gpu": per_gpu,
        "lag_by_minute": lag.done,
        **counts,
        "errors": dict(errors),
    }


# ---- the root side: users, the daemon, measurements ----------------------------------------------------


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True)


def closed_ancestors(paths: list[Path]) -> list[Path]:
    """Directories on the way to ``paths`` that others cannot search."""
    closed: list[Path] = []
    for path in paths:
        for directory in [*reversed(path.resolve().parents), path.resolve()]:
            if directory.is_dir() and not directory.stat().st_mode & stat.S_IXOTH and directory not in closed:
                closed.append(directory)
    return closed


def end_processes_of(uids: set[int]) -> list[int]:
    """SIGKILL every process left running as one of ``uids`` (users this run created, so ours); their pids."""
    ended = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            uid_line = next(li for li in (entry / "status").read_text().splitlines() if li.startswith("Uid:"))
            if int(uid_line.split()[1]) in uids:
                os.kill(int(entry.name), signal.SIGKILL)
                ended.append(int(entry.name))
        except (OSError, StopIteration, ValueError):
            continue  # gone meanwhile
    return ended


@contextlib.contextmanager
def temporary_users(count: int) -> Iterator[list[pwd.struct_passwd]]:
    """``count`` new users in the group GROUP (made if missing), able to run this Python; all undone after."""
    import gpuprof

    created_group = False
    made: list[str] = []
    opened: dict[Path, int] = {}
    try:
        if not any(g.gr_name == GROUP for g in grp.getgrall()):
            _run(["groupadd", GROUP])
            created_group = True
        for i in range(count):
            name = f"{USER_PREFIX}{i}"
            with contextlib.suppress(KeyError):  # left over from an interrupted run
                pwd.getpwnam(name)
                _run(["userdel", name])
            _run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", GROUP, name])
            made.append(name)
        roots = [Path(sys.executable), Path(sys.prefix), Path(gpuprof.__path__[0]), Path(os.__file__), HERE]
        for directory in closed_ancestors(roots):
            opened[directory] = directory.stat().st_mode
            directory.chmod(stat.S_IMODE(opened[directory]) | stat.S_IXOTH)  # search, not list
        yield [pwd.getpwnam(name) for name in made]
    finally:
        for directory, mode in opened.items():
            directory.chmod(stat.S_IMODE(mode))
        uids = set()
        for name in made:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(name).pw_uid)
        if uids and end_processes_of(uids):
            time.sleep(0.5)  # userdel refuses a user who still has processes
        for name in made:
            _run(["userdel", name], check=False)
        if created_group:
            _run(["groupdel", GROUP], check=False)


def as_account(user: pwd.struct_passwd) -> dict[str, Any]:
    """subprocess arguments that run a child as ``user``, with a minimal environment."""
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        "env": {
            "PATH": os.environ.get("PATH", ""),
            "HOME": "/",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        "cwd": "/",
    }


def start_role(role: str, cfg: dict[str, Any], user: pwd.struct_passwd, log: Path) -> subprocess.Popen[str]:
    """This file in ``role``, run as ``user``: its report is its last line of stdout, errors in ``log``."""
    command = [sys.executable, str(HERE), "--role", role, "--role-config", json.dumps(cfg)]
    with open(log, "ab") as err:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, **as_account(user))


def collect_role(process: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """A role process's report, once it has ended (SIGTERM past ``deadline``, SIGKILL 30 s later)."""
    for signum in (None, signal.SIGTERM, signal.SIGKILL):
        if signum is not None and process.poll() is None:
            process.send_signal(signum)
        try:
            out, _ = process.communicate(
                timeout=max(1.0, deadline - time.monotonic()) if signum is None else 30
            )
            lines = out.strip().splitlines()
            report = json.loads(lines[-1]) if lines else {}
            return {**report, "exit_status": process.returncode}
        except subprocess.TimeoutExpired:
            continue
        except json.JSONDecodeError:
            return {"exit_status": process.returncode, "error": "no report"}
    return {"exit_status": process.returncode, "error": "did not end"}


def proc_figures(pid: int) -> dict[str, Any]:
    """RSS, peak RSS, threads, open fds and CPU seconds (own, and of reaped children: the workers)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    stat_fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "rss_bytes": int(fields["VmRSS"].split()[0]) * 1024,
        "hwm_bytes": int(fields["VmHWM"].split()[0]) * 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": (int(stat_fields[11]) + int(stat_fields[12])) / tick,
        "children_cpu_s": (int(stat_fields[13]) + int(stat_fields[14])) / tick,
    }


def disk_usage(state_dir: Path) -> dict[str, Any]:
    """Bytes on disk (allocated blocks) and apparent bytes under ``state_dir``, by part, and files."""
    parts: collections.Counter[str] = collections.Counter()
    apparent, files = 0, 0
    for directory, _, names in os.walk(state_dir):
        for name in names:
            try:
                info = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue  # a temporary file renamed meanwhile
            top = Path(directory).relative_to(state_dir).parts
            part = top[0] if top else ("db" if name.startswith("gpuprof.db") else "other")
            parts[part] += info.st_blocks * 512
            apparent += info.st_size
            files += 1
    return {"bytes": sum(parts.values()), "apparent_bytes": apparent, "files": files, "by_part": dict(parts)}


def job_counts(db: Path) -> dict[str, Any]:
    """Jobs by state, and the GPU-seconds of finished jobs that ran (their traces are on disk)."""
    if not db.exists():
        return {"by_state": {}, "finished_ran": 0, "gpu_s": 0.0}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT state, COUNT(*), SUM(CASE WHEN started_ns IS NOT NULL AND finished_ns IS NOT NULL "
            "THEN 1 ELSE 0 END), SUM(CASE WHEN started_ns IS NOT NULL AND finished_ns IS NOT NULL "
            "THEN finished_ns - started_ns ELSE 0 END) FROM jobs GROUP BY state"
        ).fetchall()
    return {
        "by_state": {state: n for state, n, _, _ in rows},
        "finished_ran": sum(ran or 0 for _, _, ran, _ in rows),
        "gpu_s": sum(ns or 0 for _, _, _, ns in rows) / 1e9,
    }


def failure_reasons(db: Path) -> dict[str, int]:
    """How many jobs failed, were cancelled or interrupted, by reason (ids and numbers blanked)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT state, reason FROM jobs WHERE state NOT IN ('queued', 'running', 'succeeded')"
        )
        reasons = collections.Counter(f"{state}: {blank(reason or '')}" for state, reason in rows)
    return dict(reasons.most_common(10))


def trace_rows(traces: Path) -> dict[str, Any]:
    """Rows and bytes of the stored sample and energy traces (Parquet footers only)."""
    import pyarrow.parquet as pq

    out: dict[str, Any] = {"samples": [0, 0, 0], "energy": [0, 0, 0]}  # files, rows, bytes on disk
    for path in traces.glob("*.parquet"):
        kind = "energy" if path.name.endswith(".energy.parquet") else "samples"
        if path.name.endswith(".requests.parquet"):
            continue
        out[kind][0] += 1
        out[kind][1] += pq.read_metadata(path).num_rows
        out[kind][2] += path.stat().st_blocks * 512
    return {k: dict(zip(("files", "rows", "bytes"), v, strict=True)) for k, v in out.items()}


def blank(text: str) -> str:
    """A log line or reason with job ids, numbers and paths blanked, so that repeats group together."""
    text = re.sub(r"\b[0-9a-hjkmnp-tv-z]{16}\b", "ID", text)
    text = re.sub(r"/[\w./-]+", "PATH", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)


class LogReader:
    """The daemon log's new lines since the last read, counted by level and by message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.messages: collections.Counter[str] = collections.Counter()

    def read(self) -> dict[str, int]:
        if not self.path.exists():
            return {}
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1  # a half-written line waits for the next read
        self.offset += end
        levels: collections.Counter[str] = collections.Counter()
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split(": ", 2)  # "gpuprofd: LEVEL: message"
            level = parts[1] if len(parts) == 3 and parts[0] == "gpuprofd" else "other"
            levels[level] += 1
            if level != "INFO":
                self.messages[blank(line)[:300]] += 1
        return dict(levels)


def probe(
    endpoint: str, start_at: float, seconds: float, count: int, stop: threading.Event
) -> dict[str, Any]:
    """``count`` requests of each of PROBE_TYPES, interleaved and spread over ``seconds``: round trips."""
    import msgpack

    from gpuprof.client import Client
    from gpuprof.client.wire.errors import GpuprofError

    nap(start_at - time.monotonic(), stop)
    rtts: dict[str, list[int]] = {t: [] for t in PROBE_TYPES}
    errors: collections.Counter[str] = collections.Counter()
    jobs_bytes: list[int] = []
    ids: list[str] = []
    plan = [t for _ in range(count) for t in PROBE_TYPES]
    began = time.monotonic()
    with Client(endpoint, timeout_s=30) as client:
        for i, type_ in enumerate(plan):
            nap(began + i * seconds / len(plan) - time.monotonic(), stop)
            if stop.is_set() or time.monotonic() > began + seconds + 60:
                break
            try:
                sent = time.perf_counter_ns()
                if type_ == "hello":
                    client.hello()
                elif type_ == "jobs":
                    listed = client.jobs(limit=100)
                elif ids:
                    client.job(random.choice(ids))
                else:
                    continue
                rtts[type_].append(time.perf_counter_ns() - sent)
                if type_ == "jobs":
                    ids = [str(j["id"]) for j in listed] or ids
                    jobs_bytes.append(len(msgpack.packb({"jobs": listed})))
            except GpuprofError as exc:
                errors[error_code(exc)] += 1
        # The daemon's own time to answer (every user's last 1,000 of each type): a round trip adds the
        # client's and the daemon's waits for a CPU, which a loaded machine makes long whatever the daemon.
        served = client.stats().get("requests", {})
    return {
        "late_s": began - start_at,  # how late the window began (the probe thread was busy or slow)
        "took_s": time.monotonic() - began,
        **{t: ms_stats(v) for t, v in rtts.items()},
        "served": {t: served.get(t, {}) for t in PROBE_TYPES},
        "jobs_reply_bytes": int(np.median(jobs_bytes)) if jobs_bytes else None,
        "errors": dict(errors),
    }


def per_mb(value: float | None) -> float | None:
    """Bytes in MB, None kept."""
    return value / MB if value is not None else None


def sample_ratio(subscriber: dict[str, Any]) -> float | None:
    """Samples the subscriber received against what the sampler's rate gives over its time, all GPUs."""
    per_gpu = subscriber.get("per_gpu") or {}
    expected = subscriber.get("seconds", 0) * RATE_HZ * len(per_gpu)
    return sum(p["samples"] for p in per_gpu.values()) / expected if expected else None


def slope_per_hour(t_s: list[float], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against time, per hour."""
    if len(t_s) < 3:
        return None
    return float(np.polyfit(np.asarray(t_s) / 3600, np.asarray(values, dtype=np.float64), 1)[0])


# ---- the run --------------------------------------------------------------------------------------------


def take_sample(
    daemon: DaemonUnderTest, t0: float, log: LogReader, last: dict[str, Any] | None
) -> dict[str, Any]:
    """One row of the time series."""
    assert daemon.process is not None
    now = time.monotonic()
    row: dict[str, Any] = {"t_s": now - t0, **proc_figures(daemon.process.pid)}
    row["disk"] = disk_usage(daemon.state_dir)
    row["jobs"] = job_counts(daemon.state_dir / "gpuprof.db")
    row["log_lines"] = log.read()
    row["loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    row["cpu_ticks"] = [sum(ticks), ticks[3] + ticks[4]]  # all, idle + iowait: the node's busy share
    try:
        stats = daemon.request("stats")
        history = stats["history"]
        row["history_touched_bytes"] = int(
            history["bytes"] * min(1.0, history["samples"] / history["capacity"])
        )
        row["history_samples"] = history["samples"]
        row["history_capacity"] = history["capacity"]
        row["deadline_misses"] = stats["sampler"]["deadline_misses"]
        row["achieved_rate_hz"] = stats["sampler"]["achieved_rate_hz"]
        row["queued"] = sum(stats["jobs"]["queued"].values())
        row["running"] = len(stats["jobs"]["running"])
    except (RuntimeError, TimeoutError) as exc:
        row["stats_error"] = str(exc)
    if last is not None:
        dt = row["t_s"] - last["t_s"]
        row["daemon_cpu_pct"] = 100 * (row["cpu_s"] - last["cpu_s"]) / dt
        row["workers_cpu_pct"] = 100 * (row["children_cpu_s"] - last["children_cpu_s"]) / dt
        all_ticks, idle_ticks = (a - b for a, b in zip(row["cpu_ticks"], last["cpu_ticks"], strict=True))
        row["node_busy_pct"] = 100 * (1 - idle_ticks / all_ticks) if all_ticks else None
    return row


def soak(args: argparse.Namespace, root: Path, users: list[pwd.struct_passwd]) -> dict[str, Any]:
    """Run the daemon, the users' clients and the probes for ``--minutes``; the raw figures."""
    from gpuprof.client.handle import FINAL_STATES
    from gpuprof.sampler.sim import SimulatedNvml
    from gpuprof.sampler.sim_config import GpuSpec, SimConfig

    total_s = args.minutes * 60
    warmup_s = min(60.0, total_s / 4)
    probe_s = min(60.0, total_s / 4)
    # The simulated GPUs' state file, in a directory the workers (the users) can reach; the daemon gives
    # the file to the group gpuprof.
    os.environ["GPUPROF_SIM_STATE"] = str(root / "sim.state")
    SimulatedNvml().configure(SimConfig(gpus=(GpuSpec(),) * GPUS))
    config = f"rate_hz = {RATE_HZ}\n"  # its default, said explicitly; everything else at the defaults
    out: dict[str, Any] = {"interrupted": False}
    with DaemonUnderTest(root, True, config) as daemon:
        assert daemon.process is not None
        t0 = time.monotonic()
        until = t0 + total_s
        common = {"endpoint": daemon.endpoint, "gpus": GPUS, "until": until}
        roles = {
            user.pw_name: start_role(
                "submitter",
                {
                    **common,
                    "user": user.pw_name,
                    "index": i,
                    "per_gpu": args.per_gpu,
                    "job_seconds": args.job_seconds,
                },
                user,
                root / f"{user.pw_name}.err",
            )
            for i, user in enumerate(users)
        }
        roles["subscriber"] = start_role(
            "subscriber", {**common, "final_states": sorted(FINAL_STATES)}, users[0], root / "subscriber.err"
        )
        stop = threading.Event()
        probes: dict[str, Any] = {}
        windows = {"start": warmup_s, "end": total_s - probe_s}

        def run_probes() -> None:
            for name, at in windows.items():
                probes[name] = probe(daemon.endpoint, t0 + at, probe_s, args.probe_requests, stop)

        prober = threading.Thread(target=run_probes, daemon=True)
        prober.start()
        log = LogReader(daemon.log)
        samples: list[dict[str, Any]] = []
        try:
            next_at = t0
            while True:
                samples.append(take_sample(daemon, t0, log, samples[-1] if samples else None))
                row = samples[-1]
                if len(samples) % max(1, round(60 / args.sample_s)) == 1:
                    print(
                        f"  {row['t_s'] / 60:5.1f} min: RSS {row['rss_bytes'] / MB:.1f} MB, "
                        f"{row['fds']} fds, "
                        f"{row['threads']} threads, state dir {row['disk']['bytes'] / MB:.1f} MB, "
                        f"jobs {row['jobs']['by_state']}, load {row['loadavg_1m']}",
                        flush=True,
                    )
                next_at += args.sample_s
                if next_at > until + 1:
                    break
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            out["interrupted"] = True
            print("  interrupted: stopping the clients and the daemon", flush=True)
        finally:
            stop.set()
            out["roles"] = {name: collect_role(p, until + 30) for name, p in roles.items()}
            prober.join(timeout=90)
        out["probes"] = probes
        out["samples"] = samples
        out["warmup_s"] = warmup_s
        out["probe_s"] = probe_s
        out["log_messages"] = dict(log.messages.most_common(20))
    # After the daemon stopped: what its store holds (running jobs were ended by the stop).
    out["jobs_final"] = job_counts(daemon.state_dir / "gpuprof.db")
    out["failure_reasons"] = failure_reasons(daemon.state_dir / "gpuprof.db")
    out["traces"] = trace_rows(daemon.state_dir / "traces")
    out["daemon_exit_status"] = daemon.process.returncode if daemon.process else None
    out["log_tail"] = daemon.log_tail()
    return out


def summarize(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The headline figures from the raw series."""
    samples = raw["samples"]
    start = next((s for s in samples if s["t_s"] >= raw["warmup_s"] - 1), samples[0])
    end = samples[-1]
    after = [s for s in samples if s["t_s"] >= start["t_s"]]
    t_s = [s["t_s"] for s in after]
    lean = [s["rss_bytes"] - s.get("history_touched_bytes", 0) for s in after]
    # The history ring (history_s of samples) is allocated at start but its pages are touched as it fills:
    # RSS grows for history_s by design. Past that, or less what has been touched, growth is something else.
    full = [s for s in after if s.get("history_samples", 0) >= 0.999 * s.get("history_capacity", 1)]
    full_slope = (
        slope_per_hour([s["t_s"] for s in full], [s["rss_bytes"] for s in full]) if len(full) >= 6 else None
    )
    cpu = {k: [s[k] for s in after if k in s] for k in ("daemon_cpu_pct", "workers_cpu_pct")}
    busy = [s["node_busy_pct"] for s in after if s.get("node_busy_pct") is not None]
    gpu_h = [s["jobs"]["gpu_s"] / 3600 for s in samples]
    disk = [s["disk"]["bytes"] for s in samples]
    disk_per_gpu_h = None
    if len(samples) >= 3 and gpu_h[-1] > gpu_h[0]:
        disk_per_gpu_h = float(np.polyfit(gpu_h, disk, 1)[0])  # growth of the state dir per GPU-hour run
    ratio = (disk[-1] - disk[0]) / gpu_h[-1] if gpu_h[-1] else None
    traces = raw["traces"]["samples"]
    refusals: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    submitted = 0
    for name, report in raw["roles"].items():
        if name != "subscriber":
            refusals.update(report.get("refusals", {}))
            errors.update(report.get("errors", {}))
            submitted += report.get("submitted", 0)
    span_s = end["t_s"]
    finished = end["jobs"]["finished_ran"]
    return {
        "minutes": args.minutes,
        "run_s": span_s,
        "start_t_s": start["t_s"],
        "rss_mb_start": start["rss_bytes"] / MB,
        "rss_mb_end": end["rss_bytes"] / MB,
        "rss_less_history_mb_start": lean[0] / MB,
        "rss_less_history_mb_end": lean[-1] / MB,
        "rss_slope_mb_per_h": per_mb(slope_per_hour(t_s, [s["rss_bytes"] for s in after])),
        "rss_less_history_slope_mb_per_h": per_mb(slope_per_hour(t_s, lean)),
        "rss_slope_mb_per_h_history_full": per_mb(full_slope),
        "history_full_minutes": len(full) * args.sample_s / 60,
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "fds_slope_per_h": slope_per_hour(t_s, [s["fds"] for s in after]),
        "threads_start": start["threads"],
        "threads_end": end["threads"],
        "disk_mb_end": end["disk"]["bytes"] / MB,
        "disk_bytes_per_gpu_hour": disk_per_gpu_h,
        "disk_bytes_per_gpu_hour_ratio": ratio,
        "disk_bytes_per_job": (disk[-1] - disk[0]) / finished if finished else None,
        "trace_bytes_per_sample_row": traces["bytes"] / traces["rows"] if traces["rows"] else None,
        "month_disk_gb": disk_per_gpu_h * MONTH_GPU_HOURS / 1e9 if disk_per_gpu_h else None,
        # Long jobs: only the sample trace grows with a job's length; its rows cost what they cost here.
        "month_disk_gb_trace_rows_only": (
            traces["bytes"] / traces["rows"] * RATE_HZ * 3600 * MONTH_GPU_HOURS / 1e9
            if traces["rows"]
            else None
        ),
        "disk_by_part_bytes_per_job": {
            part: (size - samples[0]["disk"]["by_part"].get(part, 0)) / finished
            for part, size in end["disk"]["by_part"].items()
        }
        if finished
        else None,
        "node_busy_pct_mean": float(np.mean(busy)) if busy else None,
        "subscriber_sample_ratio": sample_ratio(raw["roles"].get("subscriber", {})),
        "month_assumption": (
            f"{GPUS} GPUs busy 24 h x 30 d ({MONTH_GPU_HOURS} GPU-hours) with jobs like these "
            f"({args.job_seconds:g} s burns, 1 kHz traces), default settings, nothing ever deleted"
        ),
        "jobs_submitted": submitted,
        "jobs_finished_ran": finished,
        "jobs_by_state_end": end["jobs"]["by_state"],
        "jobs_final": raw["jobs_final"]["by_state"],
        "gpu_hours": gpu_h[-1],
        "gpu_busy_fraction": gpu_h[-1] * 3600 / (GPUS * span_s) if span_s else None,
        "refusals": dict(refusals),
        "client_errors": dict(errors),
        "daemon_cpu_pct_mean": float(np.mean(cpu["daemon_cpu_pct"])) if cpu["daemon_cpu_pct"] else None,
        "workers_cpu_pct_mean": float(np.mean(cpu["workers_cpu_pct"])) if cpu["workers_cpu_pct"] else None,
        "deadline_misses_end": end.get("deadline_misses"),
        "log_lines_by_level": dict(
            sum((collections.Counter(s["log_lines"]) for s in samples), collections.Counter())
        ),
        **{
            f"request_{w}_ms_{t}_{phase}": raw["probes"].get(phase, {}).get(t, {}).get(w)
            for t in PROBE_TYPES
            for phase in ("start", "end")
            for w in ("p50", "p99")
        },
        **{
            f"served_{w}_ms_{t}_{phase}": raw["probes"]
            .get(phase, {})
            .get("served", {})
            .get(t, {})
            .get(f"{w}_ms")
            for t in PROBE_TYPES
            for phase in ("start", "end")
            for w in ("p50", "p99")
        },
    }


def report(raw: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the tables."""
    s = summary
    rows = [
        ["daemon RSS, MB", s["rss_mb_start"], s["rss_mb_end"], s["rss_slope_mb_per_h"]],
        [
            "  less the history ring filled so far",
            s["rss_less_history_mb_start"],
            s["rss_less_history_mb_end"],
            s["rss_less_history_slope_mb_per_h"],
        ],
        ["open fds", s["fds_start"], s["fds_end"], s["fds_slope_per_h"]],
        ["threads", s["threads_start"], s["threads_end"], None],
    ]
    for t in PROBE_TYPES:
        for w in ("p50", "p99"):
            rows.append(
                [f"`{t}` {w}, ms", s[f"request_{w}_ms_{t}_start"], s[f"request_{w}_ms_{t}_end"], None]
            )
    for t in PROBE_TYPES:
        for w in ("p50", "p99"):
            rows.append(
                [f"  daemon's time to answer `{t}` {w}, ms", s[f"served_{w}_ms_{t}_start"],
                 s[f"served_{w}_ms_{t}_end"], None]
            )  # fmt: skip
    table(
        f"soak: {USERS} users, {GPUS} simulated GPUs, {s['run_s'] / 60:.1f} min (SIMULATED); start = "
        f"{s['start_t_s'] / 60:.1f} min",
        ["figure", "start", "end", "slope / h"],
        rows,
    )
    totals = [
        ["jobs submitted", s["jobs_submitted"]],
        ["jobs finished (ran)", s["jobs_finished_ran"]],
        ["jobs by state at the end", json.dumps(s["jobs_by_state_end"])],
        ["GPU-hours of jobs, busy fraction", f"{fmt(s['gpu_hours'])} h, {fmt(s['gpu_busy_fraction'])}"],
        ["refusals by code", json.dumps(s["refusals"]) if s["refusals"] else "none"],
        ["other client errors", json.dumps(s["client_errors"]) if s["client_errors"] else "none"],
        ["RSS slope once the history was full, MB/h", s["rss_slope_mb_per_h_history_full"]],
        ["state dir at the end, MB", s["disk_mb_end"]],
        ["state dir per GPU-hour of jobs, MB (fit)", per_mb(s["disk_bytes_per_gpu_hour"])],
        [
            "state dir per finished job, KB",
            s["disk_bytes_per_job"] / 1e3 if s["disk_bytes_per_job"] else None,
        ],
        ["trace bytes per sample row", s["trace_bytes_per_sample_row"]],
        ["a month of jobs like these, GB", s["month_disk_gb"]],
        ["a month, sample traces only (long jobs), GB", s["month_disk_gb_trace_rows_only"]],
        [
            "state dir per finished job by part, KB",
            json.dumps({k: round(v / 1e3, 1) for k, v in (s["disk_by_part_bytes_per_job"] or {}).items()}),
        ],
        ["node CPU busy, % (2 cores = 100)", s["node_busy_pct_mean"]],
        ["subscriber: samples received / rate x time", s["subscriber_sample_ratio"]],
        ["daemon CPU, % of a core (mean)", s["daemon_cpu_pct_mean"]],
        ["workers CPU, % of a core (mean)", s["workers_cpu_pct_mean"]],
        ["sampler deadline misses at the end", s["deadline_misses_end"]],
        ["daemon log lines by level", json.dumps(s["log_lines_by_level"])],
    ]
    table("soak: totals", ["figure", "value"], totals)
    print(f"  a month: {s['month_assumption']}")
    sub = raw["roles"].get("subscriber", {})
    if sub.get("per_gpu"):
        per = sub["per_gpu"].values()
        lags = sub.get("lag_by_minute", [])
        first = 1 if len(lags) > 2 else 0  # minute 0 is the warm-up
        print(
            f"  subscriber: {sum(p['batches'] for p in per)} batches, "
            f"{sum(p['samples'] for p in per)} samples "
            f"in {fmt(sub.get('seconds'))} s on {len(sub['per_gpu'])} sockets; gaps > {GAP_MS:g} ms: "
            f"{sum(p['gaps'] for p in per)}, max gap {fmt(max(p['max_gap_ms'] for p in per))} ms; "
            f"live lag p99 in minute {lags[first]['minute'] if lags else '-'} / the last minute: "
            f"{fmt(lags[first]['p99'] if lags else None)} / {fmt(lags[-1]['p99'] if lags else None)} ms; "
            f"job messages "
            f"{sub.get('messages_job', 0)}, markers {sub.get('messages_marker', 0)}"
        )
    every = max(1, round(60 / args.sample_s))  # one row a minute
    series = [x for i, x in enumerate(raw["samples"]) if i % every == 0 or i == len(raw["samples"]) - 1]
    table(
        "soak: time series",
        [
            "min",
            "RSS MB",
            "RSS-hist MB",
            "fds",
            "threads",
            "disk MB",
            "finished",
            "queued",
            "daemon %",
            "load",
        ],
        [
            [
                x["t_s"] / 60,
                x["rss_bytes"] / MB,
                (x["rss_bytes"] - x.get("history_touched_bytes", 0)) / MB,
                x["fds"],
                x["threads"],
                x["disk"]["bytes"] / MB,
                x["jobs"]["finished_ran"],
                x.get("queued"),
                x.get("daemon_cpu_pct"),
                x["loadavg_1m"],
            ]
            for x in series
        ],
    )
    if raw["log_messages"]:
        print("\n== daemon log: lines other than INFO, by message (numbers, ids and paths blanked)")
        for message, n in raw["log_messages"].items():
            print(f"  {n:6d}  {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--json-out", type=Path, help="results file (default out/soak_bench_<date>.json)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="sampling period (default 10 s)")
    parser.add_argument(
        "--per-gpu", type=int, default=1, help="each user's outstanding jobs per GPU (default 1)"
    )
    parser.add_argument("--job-seconds", type=float, default=2.0, help="each burn job's seconds (default 2)")
    parser.add_argument("--probe-requests", type=int, default=200, help="per request type and window (200)")
    parser.add_argument("--role", choices=("submitter", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--role-config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.sample_s <= 0 or args.per_gpu < 1 or args.probe_requests < 1:
        parser.error("--minutes, --sample-s, --per-gpu and --probe-requests must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        run = run_submitter if args.role == "submitter" else run_subscriber
        print(json.dumps(run(json.loads(args.role_config))), flush=True)
        return 0
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        print("soak_bench needs root and useradd: it creates users and a group and runs a root gpuprofd")
        return 2

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupt)
    now = datetime.datetime.now(datetime.UTC)
    out_path = args.json_out or Path("out") / f"soak_bench_{now:%Y%m%dT%H%M%SZ}.json"
    from gpuprof.daemon.config import DaemonConfig

    defaults = DaemonConfig()
    print(
        f"gpuprof soak -- SIMULATED GPU: {GPUS} GPUs, {USERS} users, {args.minutes:g} min"
        + ("" if args.minutes >= 10 else " (under 10 min: a check of the script, not a soak)"),
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="gpsoak-", dir="/tmp"))  # short: ipc paths are limited to ~100 bytes
    root.chmod(0o755)  # the users reach the sockets and the simulated GPUs' state file in it
    try:
        with temporary_users(USERS) as users:
            raw = soak(args, root, users)
    finally:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        for name in ("gpuprofd.log", *(f"{USER_PREFIX}{i}.err" for i in range(USERS)), "subscriber.err"):
            if (root / name).exists():
                shutil.copy(root / name, out_path.with_suffix(f".{name}"))
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(raw, args)
    report(raw, summary, args)
    result = {
        "simulated": True,
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "host": {
            "name": socket.gethostname(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "uname": " ".join(os.uname()),
        },
        "daemon_defaults": {k: v for k, v in vars(defaults).items() if not isinstance(v, tuple)},
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("role")},
        "summary": summary,
        **{k: v for k, v in raw.items() if k != "log_tail"},
        "log_tail": raw["log_tail"],
    }
    out_path.write_text(json.dumps(finite(result), indent=2, default=str) + "\n")
    print(f"\nwrote {out_path} (daemon log beside it: {out_path.with_suffix('.gpuprofd.log')})")
    return 1 if raw["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
