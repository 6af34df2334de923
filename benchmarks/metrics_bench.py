"""What Prometheus costs gpuprofd: the metrics request's time with many GPUs and stored jobs, and the
exporter's CPU at a given scrape interval.

    python3 benchmarks/metrics_bench.py [--gpus 8] [--jobs 1000] [--requests 500] [--scrape-s 1]
                                        [--scrape-seconds 30] [--json OUT]

A gpuprofd on the simulated GPU (``--gpus`` of them, a node of our own) over a state directory holding
``--jobs`` stored jobs (finished, made through the job store before the daemon starts). Then:

1. ``--requests`` ``metrics`` requests back to back through the Python client: p50, p99 and max of each
   round trip, and of the daemon's own time to answer (its ``stats``).
2. ``gpuprof exporter`` scraped over HTTP every ``--scrape-s`` for ``--scrape-seconds``: each scrape's time,
   and the exporter's CPU time (from /proc) as a share of one core.

Goal (docs/metrics.md): p99 <= 50 ms per scrape with 8 GPUs and 1,000 stored jobs. The simulated GPU stands in
for real ones: the request reads only gpuprofd's memory and its job store, never NVML.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sampler_bench import simulate_node, table  # benchmarks/, beside this file

from gpuprof.client import Client
from gpuprof.daemon.server.store import JobStore


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": ordered[-1],
    }


def _fill(state: Path, jobs: int, gpus: int) -> None:
    store = JobStore(str(state))
    spec = {"name": "stored", "workload": "burn", "timeout_s": 60, "burn": {"seconds": 1.0}}
    for index in range(jobs):
        record = store.create(spec, "", "bench", os.getuid(), index % gpus, True)
        store.set_state(record.id, "running", None)
        store.set_state(record.id, "succeeded", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--scrape-s", type=float, default=1.0)
    parser.add_argument("--scrape-seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    simulate_node(args.gpus)
    with tempfile.TemporaryDirectory(prefix="gpuprof-metrics-") as tmp:
        state, endpoint = Path(tmp) / "state", f"ipc://{tmp}/d.sock"
        _fill(state, args.jobs, args.gpus)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gpuprof.daemon.cli", "serve", "--simulate", "--endpoint", endpoint,
             "--state-dir", str(state)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        exporter = None
        try:
            with Client(endpoint, timeout_s=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.hello()
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                time.sleep(2.0)  # some history in every GPU's ring
                rounds = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    answer = client.request("metrics", {})
                    rounds.append((time.perf_counter() - started) * 1e3)
                served = client.request("stats", {})["requests"].get("metrics", {})
            assert len(answer["gpus"]) == args.gpus
            port = _free_port()
            exporter = subprocess.Popen(
                [sys.executable, "-m", "gpuprof.client.cli", "exporter", "--listen", f"127.0.0.1:{port}",
                 "--endpoint", endpoint], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(3.0)
            cpu_before, wall_before = _cpu_s(exporter.pid), time.monotonic()
            scrapes, size = [], 0
            next_at = time.monotonic()
            while time.monotonic() - wall_before < args.scrape_seconds:
                started = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    size = len(response.read())
                scrapes.append((time.perf_counter() - started) * 1e3)
                next_at += args.scrape_s
                time.sleep(max(0.0, next_at - time.monotonic()))
            cpu_share = (_cpu_s(exporter.pid) - cpu_before) / (time.monotonic() - wall_before)
        finally:
            for process in (exporter, daemon):
                if process is not None:
                    process.terminate()
                    process.wait(30)
    request = _quantiles(rounds)
    scrape = _quantiles(scrapes)
    rows = [
        ["metrics request, round trip", len(rounds), *request.values()],
        ["metrics request, gpuprofd's time", served.get("count"), *(served.get(k) for k in request)],
        [f"exporter scrape, every {args.scrape_s:g} s", len(scrapes), *scrape.values()],
    ]
    table(f"metrics with {args.gpus} simulated GPUs and {args.jobs} stored jobs (SIMULATED GPUs)",
          ["what", "n", "p50 ms", "p99 ms", "max ms"], rows)  # fmt: skip
    every = f"one scrape every {args.scrape_s:g} s"
    print(f"exporter CPU: {cpu_share:.2%} of a core at {every}; /metrics is {size} B")
    print(f"goal: scrape p99 <= 50 ms: {'met' if scrape['p99_ms'] <= 50 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "gpus": args.gpus, "jobs": args.jobs, "request": request,
            "daemon_time": served, "scrape": scrape, "exporter_cpu_share": cpu_share, "metrics_bytes": size,
        }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
