"""gpuprofd benchmark: live-stream latency, a stalled subscriber, request latency, burn energy vs nvidia-smi.

    python3 benchmarks/daemon_bench.py [--simulate] [--json OUT] [--gpu N] [--only live requests burn]
    python3 benchmarks/daemon_bench.py [--simulate] --only parallel [--gpus 0 1]

Each section starts its own gpuprofd (``python -m gpuprof.daemon.cli serve``) on a temporary ipc endpoint
and state directory, and stops it at the end. Only reads the GPU: no clock, power-limit or other setting is
changed (``burn`` runs a bf16 matmul job and reads ``nvidia-smi --query-gpu``; ``parallel`` runs one such
job on each of several GPUs at once under one daemon). Prints a table per section
and writes one JSON; every figure is measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from nvidia_smi_power import NvidiaSmiPower  # benchmarks/, beside this file
from sampler_bench import device_info, finite, fmt, simulate_node, table

from gpuprof.client.wire import protocol
from gpuprof.sampler import resolve

HERE = Path(__file__).resolve().parent
SECTIONS = ("live", "requests", "burn", "parallel")
DEFAULT_SECTIONS = ("live", "requests", "burn")  # parallel needs several GPUs: asked for by name
LIVE_S = 5.0  # each subscriber phase
PUBLISH_INTERVAL_MS = 2.0  # gpuprofd's default
LIVE_ROWS = ((PUBLISH_INTERVAL_MS, (1, 8)), (50.0, (8,)))  # 50 ms: the batching of earlier versions
SUBSCRIBER_COUNTS = (1, 8)
STALL_PREFILL_S = 8.0  # stalled subscriber connected, no job yet: long enough for its queues to fill
STALLED_PUB_HWM = 16  # the stall daemon's pub_hwm: ~0.8 s of batches, reached within STALL_PREFILL_S
SAMPLER_RATE_HZ = 1000.0  # the daemon's default rate_hz, set explicitly so the expected count is known
GAP_GOAL_MS = 2.0
STORED_JOBS, REQUESTS, JOBS_REQUESTS, WARMUP_REQUESTS = 1000, 2000, 200, 50
STALL_BURN = {"seconds": 3, "duty_cycle": 1.0, "period_s": 0.5, "warmup_s": 0.5}
BURN = {
    "seconds": 10,
    "duty_cycle": 1.0,
    "period_s": 1.0,
    "kind": "matmul",
    "size": 8192,
    "dtype": "bfloat16",
    "warmup_s": 2,
}
SMI_PERIOD_MS = 100
FLAT_KEYS = (
    *(f"live_{w}_ms_{n}sub" for n in SUBSCRIBER_COUNTS for w in ("p50", "p99", "newest_p50", "newest_p99")),
    *(f"live_daemon_cpu_pct_{n}sub" for n in SUBSCRIBER_COUNTS),
    "live_p99_ms_8sub_50ms",
    "live_daemon_cpu_pct_8sub_50ms",
    *(
        f"{phase}_{k}"
        for phase in ("control", "stalled")
        for k in (
            "samples",
            "expected_samples",
            "sample_ratio",
            "max_gap_ms",
            "gaps_over_2ms",
            "missed_slots",
            "deadline_misses",
            "nvml_read_misses",
            "late_wake_misses",
            "reader_p99_ms",
        )
    ),
    *(f"normal_{p}_{k}" for p in ("control", "stalled") for k in ("deadline_misses", "late_wake_misses")),
    "stalled_dropped_batches",
    "stalled_drops_began_s_before_job",
    *(f"request_{w}_ms_{t}" for t in ("gpus", "job", "jobs") for w in ("p50", "p99")),
    "request_reply_bytes_jobs",
    "burn_window_s",
    "burn_counter_j",
    "burn_integrated_j",
    "burn_nvidia_smi_j",
    "burn_integrated_vs_counter",
    "burn_nvidia_smi_vs_counter",
    "burn_nvidia_smi_vs_integrated",
    "burn_nvidia_smi_rate_hz",
    "parallel_gpus",
    "parallel_overlap_s",
    "parallel_max_abs_integrated_vs_counter",
)
GOALS = {
    "live_p99_ms_1sub": "<= 5 (every sample)",
    "live_p99_ms_8sub": "<= 5 (every sample)",
    "stalled_late_wake_misses": "0 (misses not in slow NVML reads)",
    "request_p99_ms_gpus": "<= 10",
    "request_p99_ms_job": "<= 10",
}


def ms_stats(values_ns: list[int] | np.ndarray) -> dict[str, float | None]:
    """p50, p99 and max in ms (None when there is nothing)."""
    values = np.asarray(values_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
        "n": int(values.size),
    }


# ---- a daemon under test ---------------------------------------------------------------------------------


class Requester:
    """A DEALER socket speaking the protocol directly, timing each round trip."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.next_id = 1

    def request(self, type_: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0) -> Any:
        """(reply, round trip ns, reply bytes); raises on no reply or an error reply."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        sent = time.monotonic_ns()
        self.socket.send(protocol.encode_request(type_, body, request_id))
        if not self.socket.poll(int(timeout_s * 1000)):
            raise TimeoutError(f"no reply to {type_} within {timeout_s:g} s")
        payload = self.socket.recv_multipart()[-1]
        rtt = time.monotonic_ns() - sent
        reply = protocol.decode_reply(payload)
        if not reply.ok or reply.id != request_id:
            raise RuntimeError(f"{type_}: {reply.code}: {reply.message} (id {reply.id}, sent {request_id})")
        return reply.body, rtt, len(payload)

    def close(self) -> None:
        self.socket.close(linger=0)


class DaemonUnderTest:
    """``gpuprofd serve`` in a subprocess on its own ipc endpoint, state directory and TOML config."""

    def __init__(self, root: Path, simulate: bool, config: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.simulate = root, simulate
        self.endpoint = f"ipc://{root}/d.sock"
        self.state_dir = root / "state"
        self.config = root / "gpuprofd.toml"
        self.config.write_text(config)
        self.log = root / "gpuprofd.log"
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.process: subprocess.Popen[bytes] | None = None
        self.pub_endpoint = ""

    def __enter__(self) -> DaemonUnderTest:
        command = [sys.executable, "-m", "gpuprof.daemon.cli", "serve", "--config", str(self.config)]
        command += ["--endpoint", self.endpoint, "--state-dir", str(self.state_dir)]
        command += ["--simulate"] if self.simulate else []
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            return self._wait_ready()
        except BaseException:
            self.__exit__()  # a with-block's exit does not run when its enter raised
            raise

    def _wait_ready(self) -> DaemonUnderTest:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gpuprofd exited {self.process.returncode}: {self.log_tail()}")
            requester = Requester(self.context, self.endpoint)
            try:
                self.pub_endpoint = requester.request("hello", timeout_s=0.5)[0]["pub_endpoint"]
                return self
            except TimeoutError:
                pass
            finally:
                requester.close()
        raise RuntimeError(f"gpuprofd did not answer within 60 s: {self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.context.destroy(linger=0)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def run_job(self, burn: dict[str, Any], gpu: int, timeout_s: float = 180.0) -> tuple[dict[str, Any], int]:
        """Submit a burn job and wait for it: (its final job map, CLOCK_MONOTONIC ns at submission)."""
        submitted = time.monotonic_ns()
        job_id = self.submit_burn(burn, gpu, timeout_s)
        return self.wait_job(job_id, timeout_s), submitted

    def submit_burn(self, burn: dict[str, Any], gpu: int, timeout_s: float) -> str:
        """Submit a burn job on ``gpu``; its id."""
        from gpuprof.client.wire.jobspec import JobSpec

        spec = JobSpec.from_dict(
            {"name": "daemon-bench", "gpu": gpu, "workload": "burn", "burn": burn, "timeout_s": timeout_s}
        )
        return str(self.request("submit", {"spec": spec.to_dict()})["job"]["id"])

    def wait_job(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        """The job's final map, once it succeeded (anything else raises)."""
        deadline = time.monotonic() + timeout_s + 30
        job = self.request("job", {"id": job_id})["job"]
        while job["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']}")
            time.sleep(0.2)
            job = self.request("job", {"id": job_id})["job"]
        if job["state"] != "succeeded":
            raise RuntimeError(f"burn job {job_id} {job['state']}: {job.get('reason')}")
        return dict(job)

    def cpu_s(self) -> float:
        """User + system CPU time the daemon process has used, all threads, from /proc."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request(self, type_: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request's reply body, on a fresh socket."""
        requester = Requester(self.context, self.endpoint)
        try:
            return dict(requester.request(type_, body)[0])
        finally:
            requester.close()

    def trace_t_ns(self, job_id: str) -> np.ndarray:
        """The t_ns column of a finished job's sample trace, fetched over the protocol."""
        from gpuprof.client import Client

        with Client(self.endpoint, timeout_s=60) as client:
            return client.trace(job_id)["t_ns"].to_numpy(np.int64)


# ---- live ------------------------------------------------------------------------------------------------


def subscriber_process(pub_endpoint: str, topic: bytes, ready: Any, go: Any, stop: Any, results: Any) -> None:
    """One SUB subscriber (its own process: no GIL shared with others): per batch, receipt minus t_ns."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(pub_endpoint)
    newest: list[int] = []
    oldest: list[int] = []
    every: list[int] = []  # every sample's receipt minus its t_ns: what a viewer waits for each sample
    firsts: list[int] = []  # t_ns[0] of each recorded batch: identifies it
    received: list[int] = []
    announced = False
    try:
        while not stop.is_set():
            if not sub.poll(100):
                continue
            frames = sub.recv_multipart()
            now = time.monotonic_ns()
            if not announced:  # connected and subscribed: the first message came through
                ready.put(os.getpid())
                announced = True
            if not go.is_set() or len(frames) != 2:
                continue
            kind, body = protocol.decode_publish(frames[1])
            t_ns = body.get("t_ns") or []
            if kind == "samples" and t_ns:
                newest.append(now - t_ns[-1])
                oldest.append(now - t_ns[0])
                every.extend(now - t for t in t_ns)
                firsts.append(t_ns[0])
                received.append(now)
    finally:
        results.put(
            {"newest": newest, "oldest": oldest, "every": every, "firsts": firsts, "received": received}
        )
        context.destroy(linger=0)


def with_subscribers(
    pub_endpoint: str, gpu: int, count: int, during: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``during()`` while ``count`` subscriber processes record; (its return value, their records)."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go, stop = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    topic = protocol.topic_for_gpu(gpu)
    procs = [
        ctx.Process(
            target=subscriber_process, args=(pub_endpoint, topic, ready, go, stop, results), daemon=True
        )
        for _ in range(count)
    ]
    records: list[dict[str, Any]] = []
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        value = during()
        stop.set()
        records = [results.get(timeout=30) for _ in procs]
        return value, records
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def gaps(t_ns: np.ndarray, rate_hz: float) -> dict[str, Any]:
    """How complete a trace is: samples against rate x span (the shortfall: missed slots), largest gap."""
    t = np.sort(t_ns)
    if t.size < 2:
        return {"samples": int(t.size)}
    period_ns = 1e9 / rate_hz
    diffs = np.diff(t)
    expected = (t[-1] - t[0]) / period_ns + 1
    return {
        "samples": int(t.size),
        "span_s": float((t[-1] - t[0]) / 1e9),
        "expected_samples": float(expected),
        "sample_ratio": float(t.size / expected),
        "max_gap_ms": float(diffs.max() / 1e6),
        "gaps_over_2ms": int(np.count_nonzero(diffs > GAP_GOAL_MS * 1e6)),
        "missed_slots": max(0, round(expected) - int(t.size)),  # a late tick is not a miss; a skipped one is
    }


def stalled_phase(daemon: DaemonUnderTest, gpu: int, stalled: bool) -> dict[str, Any]:
    """A short burn job with one reading subscriber and, if ``stalled``, one that connects and never reads."""
    sub = None
    if stalled:
        sub = daemon.context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 1)  # its own queue full at once: back-pressure reaches the PUB socket
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(daemon.pub_endpoint)

    def during() -> tuple[tuple[dict[str, Any], int], dict[str, Any], dict[str, Any]]:
        time.sleep(STALL_PREFILL_S if stalled else 0.5)
        before = daemon.request("stats")["sampler"]
        ran = daemon.run_job(STALL_BURN, gpu)
        return ran, before, daemon.request("stats")["sampler"]

    try:
        ((job, submitted), before, after), records = with_subscribers(daemon.pub_endpoint, gpu, 1, during)
        ended = time.monotonic_ns()
        got: set[int] = set()
        while sub is not None and sub.poll(500):  # now read what the stalled subscriber was holding
            frames = sub.recv_multipart()
            if frames[0].startswith(b"gpu/"):
                first = protocol.decode_publish(frames[1])[1]["t_ns"][0]
                if first > ended:  # published after the stall: the held queue is drained
                    break
                got.add(first)
    finally:
        if sub is not None:
            sub.close(linger=0)
    out = gaps(daemon.trace_t_ns(job["id"]), SAMPLER_RATE_HZ)
    out["reader_p99_ms"] = ms_stats(records[0]["every"])["p99"]
    # The sampler's own count over the job (and the stats round trips around it), split by cause.
    misses = after["deadline_misses"] - before["deadline_misses"]
    in_reads = after["read_overrun_misses"] - before["read_overrun_misses"]
    out.update(deadline_misses=misses, nvml_read_misses=in_reads, late_wake_misses=misses - in_reads)
    if stalled:
        reader = records[0]
        joined = min(got) if got else None  # batches before the stalled one's subscription took hold
        dropped = [
            r
            for f, r in zip(reader["firsts"], reader["received"], strict=True)
            if joined is not None and f > joined and f not in got
        ]
        out["dropped_batches"] = len(dropped)
        out["received_batches"] = len(got)
        out["drops_began_s_before_job"] = (submitted - min(dropped)) / 1e9 if dropped else None
    return out


def section_live(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Sample-to-receipt latency with 1 and 8 subscribers; trace completeness with a stalled subscriber."""
    out: dict[str, Any] = {}
    rows = []
    config = daemon_config(args)
    for interval_ms, counts in LIVE_ROWS:
        tag = "" if interval_ms == PUBLISH_INTERVAL_MS else f"_{interval_ms:g}ms"
        live_config = config + f"publish_interval_ms = {interval_ms}\n"
        with DaemonUnderTest(root / f"live{tag}", args.simulate, live_config) as daemon:
            for count in counts:
                cpu_before = daemon.cpu_s()
                listen = lambda: time.sleep(LIVE_S)  # noqa: E731
                _, records = with_subscribers(daemon.pub_endpoint, args.gpu, count, listen)
                cpu_pct = 100 * (daemon.cpu_s() - cpu_before) / LIVE_S
                every = ms_stats([v for r in records for v in r["every"]])
                newest = ms_stats([v for r in records for v in r["newest"]])
                worst = max((ms_stats(r["every"])["p99"] or 0.0) for r in records)
                out.update(
                    {
                        f"live_p50_ms_{count}sub{tag}": every["p50"],
                        f"live_p99_ms_{count}sub{tag}": every["p99"],
                        f"live_newest_p50_ms_{count}sub{tag}": newest["p50"],
                        f"live_newest_p99_ms_{count}sub{tag}": newest["p99"],
                        f"live_daemon_cpu_pct_{count}sub{tag}": cpu_pct,
                        f"live_{count}sub{tag}": {
                            "every": every,
                            "newest": newest,
                            "worst_subscriber_p99_ms": worst,
                            "batches": [len(r["newest"]) for r in records],
                        },
                    }
                )
                rows.append(
                    [
                        f"{count} @ {interval_ms:g} ms",
                        every["n"],
                        newest["n"],
                        every["p50"],
                        every["p99"],
                        every["max"],
                        worst,
                        newest["p50"],
                        newest["p99"],
                        cpu_pct,
                    ]
                )
    table(
        f"live: sample t_ns to SUB receipt, ms, {LIVE_S:g} s per row (goal: every sample's p99 <= 5 ms)",
        [
            "subscribers @ publish interval",
            "samples",
            "batches",
            "p50",
            "p99",
            "max",
            "worst sub p99",
            "newest p50",
            "newest p99",
            "daemon CPU %",
        ],
        rows,
    )
    print(
        "  every sample of every batch as each subscriber got it; newest = each batch's last (transport); "
        "daemon CPU = its process's user + system time over the row, all threads (the sampler's included)"
    )
    stall_config = config + f"pub_hwm = {STALLED_PUB_HWM}\n"
    # The same two phases with the sampler at normal priority: what its SCHED_FIFO default buys.
    for priority, tag in ((None, ""), (0, "normal_")):
        extra = "" if priority is None else f"sampler_realtime_priority = {priority}\n"
        with DaemonUnderTest(root / f"stall{tag}", args.simulate, stall_config + extra) as daemon:
            daemon.run_job(STALL_BURN, args.gpu)  # discarded: a first job pays one-off start-up costs
            for phase in ("control", "stalled"):
                figures = stalled_phase(daemon, args.gpu, phase == "stalled")
                sampler = daemon.request("stats")["sampler"]
                figures["realtime_priority"] = sampler["realtime_priority"]
                figures["realtime_error"] = sampler["realtime_error"]
                out.update({f"{tag}{phase}_{k}": v for k, v in figures.items()})
    keys = [
        "realtime_priority",
        "samples",
        "expected_samples",
        "max_gap_ms",
        "gaps_over_2ms",
        "deadline_misses",
        "nvml_read_misses",
        "late_wake_misses",
        "reader_p99_ms",
    ]
    table(
        f"live: trace of a burn job ({STALL_BURN['seconds']:g} s + {STALL_BURN['warmup_s']:g} s warmup) at "
        f"{SAMPLER_RATE_HZ:g} Hz, pub_hwm {STALLED_PUB_HWM} (goal, stalled: late_wake_misses 0)",
        ["subscribers", *keys],
        [
            [p, *(out.get(f"{p}_{k}") for k in keys)]
            for p in ("control", "stalled", "normal_control", "normal_stalled")
        ],
    )
    began = out.get("stalled_drops_began_s_before_job")
    print(
        f"  stalled subscriber: {out.get('stalled_received_batches')} batches queued, "
        f"{out.get('stalled_dropped_batches')} dropped at the high-water mark"
        + (
            f", drops began {began:.1f} s before the job was submitted"
            if began is not None
            else " (the high-water mark was NOT reached: the stall was not exercised)"
        )
    )
    return out


# ---- requests --------------------------------------------------------------------------------------------


def stored_result() -> dict[str, Any]:
    """A realistic finished burn job's result (examples/burn.yaml: 23 windows), from a synthetic trace."""
    from gpuprof.daemon.analysis.results import job_result
    from gpuprof.daemon.analysis.windows import PhaseWindow
    from gpuprof.sampler.records import ENERGY_DTYPE, SAMPLE_DTYPE

    t0, n = 1_000_000_000, 14_000
    samples = np.zeros(n, SAMPLE_DTYPE)
    samples["t_ns"] = t0 + np.arange(n) * 1_000_000
    samples["power_mw"] = 300_000 + (np.arange(n) // 100 % 7) * 50_000
    samples["sm_clock_mhz"] = 1980
    energy = np.zeros(n // 100, ENERGY_DTYPE)
    energy["t_start_ns"] = t0 + np.arange(energy.size) * 100_000_000
    energy["t_end_ns"] = energy["t_start_ns"] + 4_000_000
    energy["energy_mj"] = np.arange(energy.size) * 40_000
    s = 1_000_000_000
    windows = [
        PhaseWindow("load", t0, t0 + s),
        PhaseWindow("warmup", t0 + s, t0 + 3 * s),
        PhaseWindow("measure", t0 + 3 * s, t0 + 13 * s),
    ]
    windows += [
        PhaseWindow("step", t0 + 3 * s + i * s // 2, t0 + 3 * s + i * s // 2 + 4 * s // 10, {"index": i})
        for i in range(20)
    ]
    return job_result(samples, energy, 0, t0, t0 + n * 1_000_000 - 1, windows, True)


def populate(state_dir: Path, count: int, simulated: bool) -> list[str]:
    """``count`` finished jobs written straight into a job store (as a daemon would have left them)."""
    from gpuprof.client.wire.jobspec import load_job_spec
    from gpuprof.daemon.server.store import JobStore

    example = HERE.parent / "examples" / "burn.yaml"
    spec, text, result = load_job_spec(example).to_dict(), example.read_text(), stored_result()
    ids = []
    with JobStore(state_dir) as store:
        for _ in range(count):
            record = store.create(spec, text, getpass.getuser(), os.getuid(), 0, simulated)
            store.set_state(record.id, "running")
            store.set_result(record.id, result)
            store.set_state(record.id, "succeeded")
            ids.append(record.id)
    return ids


def section_requests(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Round trips of gpus, job and jobs (limit 100) from one DEALER, with 1,000 stored jobs."""
    started = time.monotonic()
    ids = populate(root / "requests" / "state", STORED_JOBS, args.simulate)
    print(f"  stored {len(ids)} finished jobs in {time.monotonic() - started:.1f} s")
    rng = random.Random(0)
    plan = {
        "gpus": (REQUESTS, lambda: None),
        "job": (REQUESTS, lambda: {"id": rng.choice(ids)}),
        "jobs": (JOBS_REQUESTS, lambda: {"limit": 100}),
    }
    out: dict[str, Any] = {}
    rows = []
    with DaemonUnderTest(root / "requests", args.simulate, daemon_config(args)) as daemon:
        requester = Requester(daemon.context, daemon.endpoint)
        try:
            for type_, (count, body) in plan.items():
                for _ in range(WARMUP_REQUESTS):
                    requester.request(type_, body())
                timed = [requester.request(type_, body()) for _ in range(count)]
                stats = ms_stats([rtt for _, rtt, _ in timed])
                size = int(np.median([n for _, _, n in timed]))
                out.update(
                    {
                        f"request_p50_ms_{type_}": stats["p50"],
                        f"request_p99_ms_{type_}": stats["p99"],
                        f"request_{type_}": {**stats, "reply_bytes": size},
                    }
                )
                rows.append([type_, count, stats["p50"], stats["p99"], stats["max"], size])
        finally:
            requester.close()
    out["request_reply_bytes_jobs"] = out["request_jobs"]["reply_bytes"]
    table(
        f"requests: round trip from one DEALER, {STORED_JOBS} stored jobs, ms (goal: gpus and job p99 <= 10)",
        ["request", "count", "p50", "p99", "max", "reply bytes"],
        rows,
    )
    return out


# ---- burn ------------------------------------------------------------------------------------------------


def rel(a: float | None, b: float | None) -> float | None:
    """(a - b) / b, or None."""
    return (a - b) / b if a is not None and b else None


def section_burn(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """A burn job under the daemon: counter and integrated energy of its measure window, beside nvidia-smi."""
    smi = NvidiaSmiPower(args.gpu, SMI_PERIOD_MS) if not args.simulate else None
    if smi is None or smi.field is None:
        why = "the GPU is simulated" if args.simulate else "nvidia-smi is missing or cannot read power"
        print(f"  nvidia-smi column skipped: {why}")
    reading = smi if smi is not None and smi.field else contextlib.nullcontext()
    with DaemonUnderTest(root / "burn", args.simulate, daemon_config(args)) as daemon, reading:
        job, _ = daemon.run_job(BURN, args.gpu, timeout_s=300)
    window = next(w for w in job["result"]["windows"] if w["name"] == "measure")
    t0, t1 = window["t_start_ns"], window["t_end_ns"]
    counter, integrated = window["energy_counter_j"], window["energy_integrated_j"]
    out: dict[str, Any] = {
        "burn_job": job["id"],
        "burn_window_s": (t1 - t0) / 1e9,
        "burn_counter_j": counter,
        "burn_integrated_j": integrated,
        "burn_integrated_vs_counter": rel(integrated, counter),
        "burn_mean_power_w": window["mean_power_w"],
        "burn_sm_clock_mhz": [window["sm_clock_min_mhz"], window["sm_clock_max_mhz"]],
        "burn_clock_event_reasons": window["clock_event_reasons"],
        "burn_daemon_samples": window["samples"],
    }
    rows = [
        [
            "daemon, energy counter",
            counter,
            None,
            f"{window['sm_clock_min_mhz']}-{window['sm_clock_max_mhz']}",
        ],
        ["daemon, integrated instant power", integrated, out["burn_integrated_vs_counter"], "-"],
    ]
    if smi is not None and smi.field:
        figures = smi.energy_j(t0, t1)
        smi_j = figures.get("energy_j")
        out.update(
            {
                "burn_nvidia_smi_field": smi.field,
                "burn_nvidia_smi": figures,
                "burn_nvidia_smi_j": smi_j,
                "burn_nvidia_smi_vs_counter": rel(smi_j, counter),
                "burn_nvidia_smi_vs_integrated": rel(smi_j, integrated),
                "burn_nvidia_smi_rate_hz": figures.get("rate_hz"),
            }
        )
        clocks = f"{figures.get('sm_clock_min_mhz')}-{figures.get('sm_clock_max_mhz')}"
        rows.append(
            [
                f"nvidia-smi {smi.field}, -lms {SMI_PERIOD_MS}",
                smi_j,
                out["burn_nvidia_smi_vs_counter"],
                clocks,
            ]
        )
    table(
        f"burn: {BURN['kind']} {BURN['dtype']} {BURN['size']}, measure window {out['burn_window_s']:.2f} s"
        + (" (SIMULATED)" if args.simulate else ""),
        ["source", "energy J", "vs counter", "SM MHz"],
        rows,
    )
    if "burn_nvidia_smi" in out:
        f = out["burn_nvidia_smi"]
        print(
            f"  nvidia-smi: {fmt(f.get('rate_hz'))} lines/s achieved (asked {1000 / SMI_PERIOD_MS:g}), "
            f"window covered {fmt(f.get('covered'))}, {f.get('bunched_reads')} bunched reads, "
            f"vs daemon integrated {fmt(out['burn_nvidia_smi_vs_integrated'])}"
        )
    return out


# ---- parallel --------------------------------------------------------------------------------------------


def section_parallel(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One burn job per GPU, all at once under one daemon: each job's integrated energy against its own GPU's
    energy counter, over its own measure window, and how long all the jobs' windows overlapped."""
    gpus = tuple(args.gpus)
    if len(set(gpus)) < 2:
        raise ValueError(f"parallel needs two or more distinct GPUs (--gpus), got {list(gpus)}")
    config = f"gpus = {list(gpus)}\nrate_hz = {SAMPLER_RATE_HZ}\nhistory_s = 60.0\n"
    with DaemonUnderTest(root / "parallel", args.simulate, config) as daemon:
        cpu_before, wall_before = daemon.cpu_s(), time.monotonic()
        ids = {gpu: daemon.submit_burn(BURN, gpu, timeout_s=300) for gpu in gpus}
        jobs = {gpu: daemon.wait_job(job_id, timeout_s=300) for gpu, job_id in ids.items()}
        daemon_cpu_pct = 100 * (daemon.cpu_s() - cpu_before) / (time.monotonic() - wall_before)
        sampler = daemon.request("stats")["sampler"]
    per_gpu: dict[str, Any] = {}
    rows = []
    for gpu, job in jobs.items():
        window = next(w for w in job["result"]["windows"] if w["name"] == "measure")
        counter, integrated = window["energy_counter_j"], window["energy_integrated_j"]
        entry = {
            "job": job["id"],
            "t_start_ns": window["t_start_ns"],
            "t_end_ns": window["t_end_ns"],
            "window_s": (window["t_end_ns"] - window["t_start_ns"]) / 1e9,
            "counter_j": counter,
            "counter_uncertainty_j": window.get("energy_counter_uncertainty_j"),
            "integrated_j": integrated,
            "integrated_uncertainty_j": window.get("energy_integrated_uncertainty_j"),
            "integrated_vs_counter": rel(integrated, counter),
            "mean_power_w": window["mean_power_w"],
            "sm_clock_mhz": [window["sm_clock_min_mhz"], window["sm_clock_max_mhz"]],
            "clock_event_reasons": window["clock_event_reasons"],
            "samples": window["samples"],
        }
        per_gpu[str(gpu)] = entry
        rows.append(
            [
                gpu,
                job["id"],
                entry["window_s"],
                counter,
                integrated,
                entry["integrated_vs_counter"],
                entry["mean_power_w"],
                f"{window['sm_clock_min_mhz']}-{window['sm_clock_max_mhz']}",
                window["samples"],
            ]
        )
    overlap_ns = min(e["t_end_ns"] for e in per_gpu.values()) - max(e["t_start_ns"] for e in per_gpu.values())
    differences = [
        abs(e["integrated_vs_counter"]) for e in per_gpu.values() if e["integrated_vs_counter"] is not None
    ]
    table(
        f"parallel: one burn job per GPU {list(gpus)} under one gpuprofd ({BURN['kind']} {BURN['dtype']} "
        f"{BURN['size']}, {BURN['seconds']} s)" + (" (SIMULATED)" if args.simulate else ""),
        [
            "GPU",
            "job",
            "window s",
            "counter J",
            "integrated J",
            "integ. vs counter",
            "mean W",
            "SM MHz",
            "samples",
        ],
        rows,
    )
    print(
        f"  measure windows overlapped {max(overlap_ns, 0) / 1e9:.2f} s; "
        f"the daemon used {daemon_cpu_pct:.1f}% of a core while they ran"
    )
    return {
        "parallel_gpus": list(gpus),
        "parallel_overlap_s": overlap_ns / 1e9,
        "parallel_max_abs_integrated_vs_counter": max(differences) if differences else None,
        "parallel_daemon_cpu_pct": daemon_cpu_pct,
        "parallel_per_gpu": per_gpu,
        "parallel_sampler_stats": sampler,
    }


# ---- run -------------------------------------------------------------------------------------------------


def daemon_config(args: argparse.Namespace) -> str:
    """TOML for the daemons under test: the given GPU only, at SAMPLER_RATE_HZ."""
    return f"gpus = [{args.gpu}]\nrate_hz = {SAMPLER_RATE_HZ}\nhistory_s = 60.0\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="daemons serve gpuprof's simulated GPU")
    parser.add_argument("--json", type=Path, help="results file (default out/daemon_bench_<date>.json)")
    parser.add_argument("--gpu", type=int, default=0, help="GPU index (default 0)")
    parser.add_argument(
        "--gpus", type=int, nargs="+", default=[0, 1], help="GPUs of the parallel section (default 0 1)"
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        # A private simulated node, inherited by the daemons and their workers.
        simulate_node(max(args.gpu, *args.gpus) + 1)
    lib = resolve(simulate=args.simulate)
    gpus = tuple(args.gpus) if args.only == ["parallel"] else (args.gpu,)  # the GPUs this run reads
    now = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "simulated": lib.simulated,
        "device": device_info(lib, gpus),
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "host": {"name": socket.gethostname(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "gpu": args.gpu,
        "goals": GOALS,
        "errors": {},
        "skipped": [],
        **dict.fromkeys(FLAT_KEYS),  # present (null) even when a section is skipped or fails
    }
    label = "SIMULATED GPU" if lib.simulated else "REAL GPU"
    named = f"GPUs {list(gpus)}" if len(gpus) > 1 else f"GPU {gpus[0]}"
    print(f"gpuprof daemon benchmark -- {label}: {result['device']['name']}, {named}")
    sections = {
        "live": section_live,
        "requests": section_requests,
        "burn": section_burn,
        "parallel": section_parallel,
    }
    root = Path(tempfile.mkdtemp(prefix="gpuprof-dbench-"))  # short: ipc paths are limited to ~100 bytes
    try:
        for name in args.only or DEFAULT_SECTIONS:
            if name == "burn" and args.simulate and not args.only:
                result["skipped"].append("burn (simulated GPU; ask for it with --only burn)")
                print("\n== burn: skipped on the simulated GPU (run it with --only burn)")
                continue
            started = time.monotonic()
            try:
                result.update(sections[name](args, root))
            except Exception as exc:  # one failed section must not cost the lead the others' GPU time
                traceback.print_exc()
                result["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name}: FAILED ({result['errors'][name]})")
            print(f"  ({name}: {time.monotonic() - started:.1f} s{', SIMULATED' if lib.simulated else ''})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = args.json or Path("out") / f"daemon_bench_{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
