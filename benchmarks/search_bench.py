"""Optimal-clock search against the full grid, side by side on the simulated GPU.

    python3 benchmarks/search_bench.py [--json OUT] [--seconds 2] [--kinds matmul memcpy]

Per burn kind (matmul: compute-bound; memcpy: memory-bound), one job measures every clock of a grid and
then one job per objective (energy, EDP) searches the same grid (``dvfs.search``), each through its own
private gpuprofd on the simulated GPU (the only GPU whose clocks may be changed here; every figure is
SIMULATED). A fixed amount of work slows down with the clock there as docs/simulated-gpu.md says, so
energy per operation against the clock is U-shaped. The search's pick is judged by the grid job's
measurement at that clock: its energy (or EDP) per operation against the grid optimum's, and the share of
the grid it measured. Each point's 95% interval says how well the grid itself knows its optimum.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sampler_bench import table  # benchmarks/, beside this file

GRID = {"range": [600, 1950, 45]}  # 31 clocks of the simulated H100
KEYS = {"energy": "energy_j", "edp": "edp_js"}


def run_job(spec: Path, kind: str, seconds: float, search: str | None) -> tuple[dict[str, Any], float]:
    spec.write_text(
        f"name: search-bench-{kind}\nworkload: burn\ntimeout_s: 3600\n"
        f"burn: {{kind: {kind}, seconds: {seconds}, warmup_s: 2}}\n"
        f"dvfs:\n  sm_clocks: {json.dumps(GRID)}\n" + (f"  search: {search}\n" if search else "")
    )
    started = time.monotonic()
    command = [sys.executable, "-m", "gpuprof.client.cli", "run", str(spec), "--simulate", "--allow-dvfs",
               "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"gpuprof run failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per point")
    parser.add_argument("--kinds", nargs="+", default=["matmul", "memcpy"], choices=["matmul", "memcpy"])
    args = parser.parse_args()
    rows: list[list[Any]] = []
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "simulated": True,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="gpuprof-search-bench-") as tmp:
        for kind in args.kinds:
            grid_job, grid_s = run_job(Path(tmp) / f"{kind}-grid.yaml", kind, args.seconds, None)
            grid = {p["sm_clock_mhz"]: p for p in grid_job["dvfs"]["points"] if not p["flagged"]}
            for objective, key in KEYS.items():
                best = min(grid, key=lambda mhz: grid[mhz][key])
                job, search_s = run_job(Path(tmp) / f"{kind}-{objective}.yaml", kind, args.seconds, objective)
                (search,) = job["dvfs"]["searches"]
                pick = search["best_mhz"]
                excess = grid[pick][key] / grid[best][key] - 1 if pick in grid else None
                ci = grid[best]["energy_j_ci95"] / grid[best]["energy_j"]
                measured = len(search["measured"])
                rows.append([kind, objective, f"{len(grid)} of {len(grid_job['dvfs']['points'])}", best,
                             f"±{ci:.2%}", f"{measured} ({measured / len(grid_job['dvfs']['points']):.0%})",
                             pick, "-" if excess is None else f"{excess:+.2%}",
                             f"{grid_s:.0f} / {search_s:.0f}"])  # fmt: skip
                report["runs"].append({
                    "kind": kind, "objective": objective, "grid_best_mhz": best, "search": search,
                    "search_pick_excess": excess, "grid_points": grid_job["dvfs"]["points"],
                    "search_points": job["dvfs"]["points"], "grid_s": grid_s, "search_s": search_s,
                })  # fmt: skip
    table("Optimal clock by search and by the full grid, SIMULATED GPU (judged by the grid's measurement)",
          ["kind", "objective", "grid clocks (unflagged)", "grid optimum MHz", "its energy CI95",
           "search measured", "search pick MHz", "over grid optimum", "wall s grid / search"],
          rows)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
