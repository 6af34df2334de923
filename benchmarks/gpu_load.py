"""A steady GPU load for the energy benchmark: a bf16 matmul loop, or a busy simulated GPU.

    python benchmarks/gpu_load.py --seconds 20               # real GPU: the one CUDA_VISIBLE_DEVICES names
    python benchmarks/gpu_load.py --seconds 20 --simulate --gpu 0 --util 90

Prints ``warm`` on its own line once the load is steady, and runs until the time is up or it is
terminated (SIGTERM). The simulated load sets the GPU's utilization and restores it on the way out.
Changes no GPU setting: it only runs work (real) or moves the simulation's utilization (simulated).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

WARMUP_S = 1.0  # matmuls before "warm": lets clocks and power settle after the first kernels
MATRIX_SIZE = 8192
MATMULS_PER_CHECK = 10


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks (restoring the simulation) run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def real_load(seconds: float) -> None:
    """Multiply bf16 matrices on cuda:0 for ``seconds``; prints ``warm`` after WARMUP_S."""
    import torch

    a = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda", dtype=torch.bfloat16)
    start = time.monotonic()
    end = start + seconds
    warm = False
    count = 0
    while time.monotonic() < end:
        for _ in range(MATMULS_PER_CHECK):
            torch.mm(a, b)
        torch.cuda.synchronize()
        count += MATMULS_PER_CHECK
        if not warm and time.monotonic() - start >= WARMUP_S:
            print(f"warm {torch.cuda.get_device_name(0)}", flush=True)
            warm = True
    elapsed = time.monotonic() - start
    print(f"done {count} matmuls, {2 * MATRIX_SIZE**3 * count / elapsed / 1e12:.0f} TFLOP/s", flush=True)


def simulated_load(seconds: float, gpu: int, util_pct: float) -> None:
    """Hold the simulated GPU ``gpu`` at ``util_pct`` for ``seconds``, then restore its utilization."""
    from gpuprof.sampler.sim import SimulatedNvml

    sim = SimulatedNvml()
    before = sim.status()[gpu]
    sim.set_utilization(gpu, util_pct)
    try:
        print(f"warm simulated GPU {gpu} at {util_pct:g}%", flush=True)
        time.sleep(seconds)
    finally:
        sim.set_utilization(gpu, before.util_pct, before.memory_util_pct)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    parser.add_argument("--simulate", action="store_true", help="load gpuprof's simulated GPU instead")
    parser.add_argument("--gpu", type=int, default=0, help="simulated GPU index (real: CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--util", type=float, default=90.0, help="simulated utilization in %% (default 90)")
    args = parser.parse_args(argv)
    _exit_on_sigterm()
    if args.simulate:
        simulated_load(args.seconds, args.gpu, args.util)
    else:
        real_load(args.seconds)


if __name__ == "__main__":
    main()
