"""Read-only probe of NVML call durations: which fast-loop reads stall, how long, how often, and whether
a stall in one thread holds up the instant-power read in another.

    python benchmarks/nvml_call_probe.py [--simulate] [--gpu 0] [--seconds 2] [--json OUT]

Builds benchmarks/nvml_stall_probe.c with the machine's C compiler and runs it; nothing is set on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuprof.sampler.library import resolve

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent / "sampler" / "include"


def build(workdir: str) -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        sys.exit("no C compiler (cc or gcc) found")
    binary = os.path.join(workdir, "nvml_stall_probe")
    subprocess.run(
        [
            compiler,
            "-O2",
            f"-I{INCLUDE}",
            str(HERE / "nvml_stall_probe.c"),
            "-o",
            binary,
            "-ldl",
            "-lpthread",
        ],
        check=True,
    )
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    library = resolve(simulate=args.simulate)
    with tempfile.TemporaryDirectory() as workdir:
        done = subprocess.run(
            [build(workdir), library.path, str(args.gpu), str(args.seconds)],
            check=True,
            capture_output=True,
            text=True,
        )
    result = json.loads(done.stdout)
    result |= {
        "simulated": library.simulated,
        "library": library.path,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
    }
    label = "SIMULATED GPU" if library.simulated else "NVIDIA driver"
    print(f"NVML call durations ({label}), each read back to back for {args.seconds:g} s")
    print(f"{'call':<22}{'p50 us':>9}{'p99 us':>9}{'max us':>10}{'stalls':>8}{'mean us':>10}{'every ms':>10}")
    for name, row in result["alone"].items():
        print(
            f"{name:<22}{row['p50_us']:>9.2f}{row['p99_us']:>9.2f}{row['max_us']:>10.0f}"
            f"{row['stalls_over_1ms']:>8}{row['stall_mean_us']:>10.0f}{row['stall_period_mean_ms']:>10.1f}"
        )
    print("instant-power read (field 186) while a second thread calls:")
    for name, row in result["power_field_186_beside"].items():
        print(
            f"  {name:<20}{row['p50_us']:>9.2f}{row['p99_us']:>9.2f}{row['max_us']:>10.0f}"
            f"{row['stalls_over_1ms']:>8}{row['stall_mean_us']:>10.0f}{row['stall_period_mean_ms']:>10.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
