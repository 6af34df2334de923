"""Optimal-clock search against the full grid, side by side on the simulated GPU.

    python3 benchmarks/search_bench.py [--json OUT] [--prompts 16] [--objective energy]

Runs one llm job that measures every clock of a grid, then one that searches the same grid
(``dvfs.search``), each through its own private gpuprofd on the simulated GPU (the only GPU whose clocks
may be changed here; every figure is SIMULATED). The search's pick is judged by the grid job's
measurement at that clock: its energy per request against the grid optimum's, and the share of the
grid it measured.
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


def run_job(spec: Path, dvfs: str, prompts: int) -> tuple[dict[str, Any], float]:
    spec.write_text(
        "name: search-bench\nworkload: llm\ntimeout_s: 3600\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n"
        f"  dtype: float32\n  prompts: {prompts}\n  batch_sizes: [4]\n  max_new_tokens: 32\n"
        "  ignore_eos: true\n"
        f"  warmup_requests: 4\n  ner: heuristic\ndvfs:\n  sm_clocks: {json.dumps(GRID)}\n{dvfs}"
    )
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "gpuprof.client.cli",
        "run",
        str(spec),
        "--simulate",
        "--allow-dvfs",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"gpuprof run failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--objective", choices=["energy", "edp"], default="energy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpuprof-search-bench-") as tmp:
        grid_job, grid_s = run_job(Path(tmp) / "grid.yaml", "", args.prompts)
        search_job, search_s = run_job(
            Path(tmp) / "search.yaml", f"  search: {args.objective}\n", args.prompts
        )
    key = "energy_j" if args.objective == "energy" else "edp_js"
    grid = {p["sm_clock_mhz"]: p for p in grid_job["dvfs"]["points"] if not p["flagged"]}
    grid_best = min(grid, key=lambda mhz: grid[mhz][key])
    (search,) = search_job["dvfs"]["searches"]
    pick = search["best_mhz"]
    excess = grid[pick][key] / grid[grid_best][key] - 1 if pick in grid else None
    rows = [
        ["full grid", len(grid_job["dvfs"]["points"]), grid_best, grid[grid_best][key], 0.0, grid_s],
        [
            "search",
            len(search["measured"]),
            pick,
            grid[pick][key] if pick in grid else None,
            excess,
            search_s,
        ],
    ]
    table(f"Optimal {args.objective} clock, SIMULATED GPU (judged by the grid's measurement at each pick)",
          ["method", "clocks measured", "pick MHz", f"grid's {key} at pick", "over grid optimum", "wall s"],
          rows)  # fmt: skip
    report = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "simulated": True,
        "grid_clocks": len(grid_job["dvfs"]["points"]),
        "grid_best_mhz": grid_best,
        "search": search,
        "search_pick_excess": excess,
        "grid_points": grid_job["dvfs"]["points"],
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
