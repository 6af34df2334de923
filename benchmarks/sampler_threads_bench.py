"""What the sampler's slow reads cost, side by side in one run under a steady GPU load: the 1 kHz loop's
missed slots with the clock-event reasons read in it (each tick) and on their own thread, and the energy
thread's reads, kept readings and CPU time (it also reads the driver's buffer of power samples).

    python benchmarks/sampler_threads_bench.py [--simulate] [--gpu 0] [--seconds 10] [--json OUT]

The load is benchmarks/gpu_load.py (bf16 matmuls; on the simulated GPU, 90% utilization). Nothing is set on
the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from gpuprof.sampler import SamplerConfig, open_sampler
from gpuprof.sampler.library import resolve

HERE = Path(__file__).resolve().parent


def run(library_simulate: bool, gpu: int, seconds: float, reasons_rate_hz: float) -> dict[str, object]:
    library = resolve(simulate=library_simulate)
    config = SamplerConfig((gpu,), rate_hz=1000.0, reasons_rate_hz=reasons_rate_hz)
    sampler = open_sampler(config, library)
    sampler.start()
    time.sleep(seconds)
    sampler.close()
    samples, energy = sampler.drain()
    stats = sampler.stats()
    return {
        "reasons": "each tick, in the 1 kHz loop"
        if reasons_rate_hz == 0
        else f"own thread, {reasons_rate_hz:g} Hz",
        "ticks": stats.ticks,
        "achieved_rate_hz": stats.achieved_rate_hz,
        "deadline_misses": stats.deadline_misses,
        "read_overrun_misses": stats.read_overrun_misses,
        "jitter_p99_us": stats.jitter_p99_us,
        "jitter_max_us": stats.jitter_max_us,
        "fast_loop_cpu_share": (stats.cpu_ns or 0) / 1e9 / stats.elapsed_s if stats.elapsed_s else None,
        "energy_reads_per_s": stats.energy_reads / stats.elapsed_s if stats.elapsed_s else None,
        "energy_kept_per_s": stats.energy_readings / stats.elapsed_s if stats.elapsed_s else None,
        "energy_thread_cpu_share": (stats.energy_cpu_ns or 0) / 1e9 / stats.elapsed_s
        if stats.elapsed_s
        else None,
        "driver_power_reads_per_s": stats.driver_power_reads / stats.elapsed_s if stats.elapsed_s else None,
        "driver_power_samples_per_s": stats.driver_power_samples / stats.elapsed_s
        if stats.elapsed_s
        else None,
        "samples": int(samples.size),
        "energy_records": int(energy.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    load_cmd = [sys.executable, str(HERE / "gpu_load.py"), "--seconds", str(2 * args.seconds + 30)]
    if args.simulate:
        load_cmd += ["--simulate", "--gpu", str(args.gpu), "--util", "90"]
    load = subprocess.Popen(load_cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert load.stdout is not None
        for line in load.stdout:
            if line.strip() == "warm":
                break
        rows = [run(args.simulate, args.gpu, args.seconds, rate) for rate in (0.0, 20.0)]
    finally:
        load.terminate()
        load.wait(timeout=30)
    result = {
        "simulated": args.simulate,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "runs": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    label = "SIMULATED GPU" if args.simulate else "NVIDIA driver"
    print(f"sampler threads under load ({label}), {args.seconds:g} s each")
    for row in rows:
        print(
            f"  reasons {row['reasons']:<30} misses {row['deadline_misses']:>5} "
            f"(NVML {row['read_overrun_misses']:>5})"
            f"  jitter p99 {row['jitter_p99_us']} us  energy: {row['energy_reads_per_s']:.0f} reads/s, "
            f"{row['energy_kept_per_s']:.1f} kept/s, driver power {row['driver_power_reads_per_s']:.1f} "
            f"reads/s ({row['driver_power_samples_per_s']:.1f} samples/s), "
            f"CPU {row['energy_thread_cpu_share']:.1%} of a core"
        )


if __name__ == "__main__":
    main()
