"""What an in-process gpuprof.Monitor costs a GPU-bound loop: iterations per second with a Monitor sampling
at 1 kHz and windows ending every few hundred milliseconds, against the same loop without one.

    python benchmarks/monitor_bench.py [--simulate] [--gpu 0] [--seconds 5] [--rounds 4] [--window-s 0.5]
                                       [--rate 1000] [--json OUT]

The loop, on a real GPU: bf16 ``torch.mm`` of two 8192x8192 matrices into a third on cuda:0 (the NVML GPU
``--gpu``: CUDA_VISIBLE_DEVICES is set to it, PCI bus order), synchronized every N iterations, N chosen
from the warm-up's pace so that N iterations last ``--window-s``. With ``--simulate`` the loop is CPU-bound
instead (numpy sin and cos over 256 Ki doubles, one thread) and the Monitor samples gpuprof's simulated GPU;
every figure is then labelled SIMULATED and says what the sampler costs a CPU-bound thread of this machine.

Blocks of ``--seconds`` run in the order ON OFF OFF ON, ``--rounds`` times. ON: a Monitor on ``--gpu``,
opened before the block's timing starts and closed after it ends; at each synchronization the block ends
its window and begins the next (``end_window(wait=False)``: waiting for the energy counter is a pause the
caller chooses, not the sampler's cost). OFF: the same loop and synchronizations, no Monitor. Each round
gives one paired slowdown, ``1 - (on1 + on2) / (off1 + off2)`` in iterations per second, so that drift
within a round cancels; the median over rounds is reported with its interquartile range.

Goal: a median slowdown <= 0.5 %. Changes no GPU setting: it only runs work and reads NVML.
Prints one table and writes one JSON (default out/monitor_bench_<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sampler_bench import device_info, finite, run_info, simulate_node, table  # benchmarks/, beside this file

from gpuprof.sampler.library import resolve
from gpuprof.sampler.monitor import Measurement, Monitor

GOAL_PCT = 0.5
MATRIX_SIZE = 8192
CPU_ELEMENTS = 1 << 18
WARMUP_S = 2.0


class TorchLoop:
    """bf16 matmuls on cuda:0; ``sync`` waits for the GPU to finish them."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.a = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda:0", dtype=torch.bfloat16)
        self.b = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda:0", dtype=torch.bfloat16)
        self.c = torch.empty(MATRIX_SIZE, MATRIX_SIZE, device="cuda:0", dtype=torch.bfloat16)
        self.description = (
            f"{torch.cuda.get_device_name(0)} (cuda:0), torch {torch.__version__}: bf16 "
            f"{MATRIX_SIZE}x{MATRIX_SIZE} torch.mm"
        )

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            self.torch.mm(self.a, self.b, out=self.c)

    def sync(self) -> None:
        self.torch.cuda.synchronize()


class NumpyLoop:
    """CPU work in this thread (numpy ufuncs run one thread): what a simulated run can load."""

    def __init__(self) -> None:
        self.a = np.random.default_rng(0).random(CPU_ELEMENTS)
        self.b = np.empty_like(self.a)
        self.description = f"CPU: numpy sin and cos over {CPU_ELEMENTS} float64 (one thread), SIMULATED GPU"

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            np.sin(self.a, out=self.b)
            np.cos(self.b, out=self.a)

    def sync(self) -> None:
        pass


def pace(loop: TorchLoop | NumpyLoop, seconds: float) -> float:
    """Seconds per iteration, after ``seconds`` of warm-up (clocks up, kernels loaded)."""
    iterations, n = 0, 1
    loop.sync()
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        loop.run(n)
        loop.sync()
        iterations += n
        n = min(n * 2, 64)
    return (time.perf_counter() - began) / iterations


def block(loop: TorchLoop | NumpyLoop, every: int, seconds: float, monitor: Monitor | None) -> dict[str, Any]:
    """Run the loop for ``seconds``, synchronized every ``every`` iterations; with ``monitor``, a window
    between each two synchronizations. Iterations per second, and what the windows cost and saw."""
    iterations, windows, costs = 0, 0, []
    measurements: list[Measurement] = []
    loop.sync()
    began = time.perf_counter()
    if monitor is not None:
        monitor.begin_window("w0")
    while True:
        loop.run(every)
        loop.sync()
        iterations += every
        if monitor is not None:
            edge = time.perf_counter()
            measurements.append(monitor.end_window(f"w{windows}", wait=False))
            windows += 1
            monitor.begin_window(f"w{windows}")
            costs.append(time.perf_counter() - edge)
        if time.perf_counter() - began >= seconds:
            break
    elapsed = time.perf_counter() - began
    if monitor is not None:
        monitor.end_window(f"w{windows}", wait=False)
    power = [m.gpus[g].mean_power_w for m in measurements for g in m.gpus if m.gpus[g].mean_power_w]
    methods = sorted({str(m.gpus[g].method) for m in measurements for g in m.gpus})
    return {
        "iterations": iterations,
        "seconds": elapsed,
        "rate": iterations / elapsed,
        "windows": len(measurements),
        "window_cost_us": [c * 1e6 for c in costs],
        "mean_power_w": statistics.mean(power) if power else None,
        "methods": methods,
    }


def run_rounds(args: argparse.Namespace, loop: TorchLoop | NumpyLoop, every: int) -> dict[str, Any]:
    """ON OFF OFF ON blocks, ``args.rounds`` times; each ON block under a Monitor of its own."""
    blocks: list[dict[str, Any]] = []
    sampler: list[dict[str, Any]] = []
    for index, kind in enumerate(["on", "off", "off", "on"] * args.rounds):
        if kind == "on":
            with Monitor([args.gpu], simulate=args.simulate, rate_hz=args.rate) as monitor:
                result = block(loop, every, args.seconds, monitor)
                sampler.append(monitor.stats().as_dict())
        else:
            result = block(loop, every, args.seconds, None)
        blocks.append({"kind": kind, **result})
        print(f"  block {index + 1:2d} {kind:3}: {result['rate']:.2f} it/s")
    on = [b["rate"] for b in blocks if b["kind"] == "on"]
    off = [b["rate"] for b in blocks if b["kind"] == "off"]
    per_round = [
        (1 - (on[2 * r] + on[2 * r + 1]) / (off[2 * r] + off[2 * r + 1])) * 100 for r in range(args.rounds)
    ]
    q1, _, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
    costs = [c for b in blocks for c in b["window_cost_us"]]
    return {
        "blocks": [{k: v for k, v in b.items() if k != "window_cost_us"} for b in blocks],
        "on_rate_median": statistics.median(on),
        "off_rate_median": statistics.median(off),
        "slowdown_pct_per_round": per_round,
        "slowdown_pct_median": statistics.median(per_round),
        "slowdown_pct_iqr": [q1, q3],
        "window_edge_cost_us_median": statistics.median(costs) if costs else None,
        "window_edge_cost_us_p99": float(np.percentile(costs, 99)) if costs else None,
        "windows": sum(b["windows"] for b in blocks),
        "sampler_stats": sampler,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="CPU loop, gpuprof's simulated GPU")
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (default 0)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each block's length, s (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="ON OFF OFF ON rounds (default 4)")
    parser.add_argument("--window-s", type=float, default=0.5, help="window length, s (default 0.5)")
    parser.add_argument("--rate", type=float, default=1000.0, help="Monitor's sampling rate, Hz (1000)")
    parser.add_argument("--json", type=Path, help="results file (default out/monitor_bench_<date>.json)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.window_s <= 0:
        parser.error("--seconds and --window-s must be > 0, --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        simulate_node(args.gpu + 1)
    else:  # one GPU, the same to NVML (the Monitor) and to CUDA (cuda:0)
        os.environ.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(args.gpu))
    library = resolve(simulate=args.simulate)
    label = "SIMULATED GPU" if library.simulated else "REAL GPU"
    device = device_info(library, (args.gpu,))
    now = datetime.datetime.now(datetime.UTC)
    loop: TorchLoop | NumpyLoop = NumpyLoop() if args.simulate else TorchLoop()
    seconds_per_iteration = pace(loop, WARMUP_S)
    every = max(1, round(args.window_s / seconds_per_iteration))
    print(
        f"gpuprof Monitor overhead -- {label}: {device['name']}, GPU {args.gpu}; {loop.description}, "
        f"{seconds_per_iteration * 1e3:.3f} ms an iteration, a window every {every} "
        f"({every * seconds_per_iteration:.2f} s); {args.rounds} rounds of {args.seconds:g} s blocks"
    )
    figures = run_rounds(args, loop, every)
    iqr = figures["slowdown_pct_iqr"]
    table(
        f"Monitor overhead ({label}; {args.rate:g} Hz sampling; medians of blocks)",
        ["loop", "it/s Monitor on", "it/s off", "slowdown (median)", "IQR", "rounds", "window edge"],
        [
            [
                "bf16 matmul" if not args.simulate else "numpy (CPU)",
                figures["on_rate_median"],
                figures["off_rate_median"],
                f"{figures['slowdown_pct_median']:+.3f} %",
                f"[{iqr[0]:+.2f}, {iqr[1]:+.2f}] %",
                args.rounds,
                f"{figures['window_edge_cost_us_median']:.0f} us",
            ]
        ],
    )
    met = figures["slowdown_pct_median"] <= GOAL_PCT
    where = " (a GPU-bound loop's goal; this SIMULATED run loads the CPU)" if library.simulated else ""
    print(f"\ngoal: median slowdown <= {GOAL_PCT} %{where}: {'met' if met else 'NOT met'}")
    print(
        f"window edge: end_window(wait=False) + begin_window, median "
        f"{figures['window_edge_cost_us_median']:.0f} us, p99 {figures['window_edge_cost_us_p99']:.0f} us "
        f"({figures['windows']} windows)"
    )
    result = {
        "simulated": library.simulated,
        "device": device,
        "date": now.isoformat(timespec="seconds"),
        **run_info(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loop": loop.description,
        "seconds_per_iteration": seconds_per_iteration,
        "iterations_per_window": every,
        "goal": {"slowdown_pct_median_at_most": GOAL_PCT, "met": met},
        **figures,
    }
    out = args.json or Path("out") / f"monitor_bench_{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=1) + "\n")
    print(f"wrote {out}{' (SIMULATED)' if library.simulated else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
