"""Study a window_bench run again from its saved records, without the GPU.

    python3 benchmarks/window_records.py sensor RECORDS.npz RESULT.json
    python3 benchmarks/window_records.py reeval RECORDS.npz RESULT.json [NAME=VALUE ...]
    python3 benchmarks/window_records.py holdout RECORDS.npz RESULT.json [NAME=VALUE ...]

``window_bench.py --records R.npz --json R.json`` saves the sampler's records (every power sample, every
energy-counter reading kept and the driver's total-power samples) beside the windows' edges and every
method's figures.

- ``sensor`` fits how the instant-power field (field 186) follows the load: on the front-loaded cells, where
  the host timed each busy span, each distinct reading is modelled as the mean of a busy/idle step over a span
  of ``window`` ms ending ``delay`` ms before the reading was first seen; it prints the (delay, window) of
  least squared error per cell. ``sampler/energy.py`` assumes a 25 ms span ending when the reading appears.
- ``reeval`` recomputes gpuprof's fused figure for every window and prints, per cell, its bias, CV, Zeus's
  window CV from the same run, the share of windows whose bound covers the reference (the exact energy on
  the simulated GPU, else the cell's mean), the median bound and how the counter's own periods drifted over
  the cell (``window_bench.counter_drift``), first as shipped (with the instant-power
  field alone, then with the driver's samples where the records have them) and then with each
  ``NAME=VALUE`` of ``sampler/energy.py`` set in turn (cumulatively), e.g. ``INSTANT_WINDOW_NS=40e6``.
- ``holdout`` checks the edge split against the counter's own updates, each held out in turn
  (``update_holdout.py``), per cell, as shipped and then with each ``NAME=VALUE`` in turn.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
from update_holdout import holdout, holdout_line  # benchmarks/, beside this file
from window_bench import counter_drift

import gpuprof.sampler.energy as energy

DELAYS_MS = np.arange(-30, 82, 2)
WINDOWS_MS = (5, 10, 15, 20, 25, 35, 50, 75, 100)


def readings(samples: np.ndarray, gpu: int) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct power reading once: (when it was first seen, midway from the sample before; watts)."""
    own = samples[samples["gpu"] == gpu]
    t, watts = own["t_ns"].astype(np.float64), own["power_mw"].astype(np.float64) / 1000
    moved = np.flatnonzero(np.diff(watts, prepend=np.nan) != 0)
    seen = np.where(moved > 0, (t[moved] + t[np.maximum(moved - 1, 0)]) / 2, t[moved])
    return seen, watts[moved]


def sensor(records: Any, result: dict[str, Any], gpu: int) -> None:
    seen, watts = readings(records["samples"], gpu)
    duty = float(result.get("duty", 0.4))
    for cell in (c for c in result["cells"] if c["shape"] == "front"):
        edges = np.array(cell["edges_ns"], dtype=np.float64)
        busy = [(e, e + duty * cell["length_s"] * 1e9) for e in edges[:-1]]
        inside = (seen > edges[0] + 0.2e9) & (seen < edges[-1] - 0.1e9)
        at, value = seen[inside], watts[inside]
        best: tuple[float, int, int, np.ndarray] | None = None
        for delay in DELAYS_MS:
            for window in WINDOWS_MS:
                end = at - delay * 1e6
                share = sum(
                    np.clip(np.minimum(end, b) - np.maximum(end - window * 1e6, a), 0, None) for a, b in busy
                )
                model = np.column_stack([share / (window * 1e6), 1 - share / (window * 1e6)])
                coef, *_ = np.linalg.lstsq(model, value, rcond=None)
                rms = float(np.sqrt(((model @ coef - value) ** 2).mean()))
                if best is None or rms < best[0]:
                    best = (rms, int(delay), window, coef)
        assert best is not None
        print(
            f"front {cell['length_s']:g} s: {at.size} readings; least error at a {best[2]} ms span ending "
            f"{best[1]} ms before it is seen: rms {best[0]:.1f} W "
            f"(busy {best[3][0]:.0f} W, idle {best[3][1]:.0f} W)"
        )


def measured_span(cell: dict[str, Any]) -> tuple[int, int]:
    """A saved cell's measured windows: its first edge and its last."""
    edges = cell["edges_ns"]
    return edges[cell["warmup_windows"]], edges[cell["warmup_windows"] + cell["windows_n"]]


def reeval(records: Any, result: dict[str, Any], gpu: int, label: str, field_only: bool = False) -> None:
    driver = records["driver_power"] if "driver_power" in records and not field_only else None
    fused = energy.FusedEnergy(records["samples"], records["energy"], gpu, driver)
    print(label)
    for cell in result["cells"]:
        windows = cell["windows"]
        figures = [fused.window(w["t0_ns"], w["t1_ns"]) or (np.nan, np.nan) for w in windows]
        est, bound = np.array(figures, dtype=np.float64).T
        zeus = np.array([(w["methods"].get("zeus_window") or {}).get("j") for w in windows], dtype=float)
        truth = np.array([np.nan if w["truth_j"] is None else w["truth_j"] for w in windows], dtype=float)
        ref = truth if np.isfinite(truth).all() else np.full(len(windows), cell["reference"]["mean_j"])
        zeus_cv = np.nanstd(zeus, ddof=1) / np.nanmean(zeus) if np.isfinite(zeus).sum() > 1 else np.nan
        zeus_text = "-" if np.isnan(zeus_cv) else f"{zeus_cv:.2%}"
        drift = counter_drift(records["energy"], gpu, *measured_span(cell), cell["length_s"])
        drift_text = "-" if drift is None else f"{drift['cv']:.2%}"
        print(
            f"  {cell['shape']:8} {cell['length_s']:<5g} bias {np.mean(est) / np.mean(ref) - 1:+6.2%}  "
            f"CV {np.std(est, ddof=1) / np.mean(est):7.2%}  "
            f"Zeus CV {zeus_text:>7}  covered {np.mean(np.abs(est - ref) <= bound):5.0%}  "
            f"median bound {np.median(bound) / np.mean(est):6.2%}  counter drift {drift_text:>6}"
        )


def held_out(records: Any, result: dict[str, Any], gpu: int, label: str) -> None:
    driver = records.get("driver_power")
    print(label)
    for cell in result["cells"]:
        found = holdout(records["samples"], records["energy"], driver, gpu, *measured_span(cell))
        print(holdout_line(f"{cell['shape']} {cell['length_s']:g} s", found))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=["sensor", "reeval", "holdout"])
    parser.add_argument("records", help="window_bench.py --records file (.npz)")
    parser.add_argument("result", help="window_bench.py --json file of the same run")
    parser.add_argument(
        "settings", nargs="*", help="reeval, holdout: NAME=VALUE of sampler/energy.py, in turn"
    )
    parser.add_argument("--gpu", type=int, help="NVML index (default: the run's)")
    args = parser.parse_args()
    with open(args.result) as file:
        result = json.load(file)
    records = np.load(args.records)
    gpu = result.get("gpu", 0) if args.gpu is None else args.gpu
    if args.what == "sensor":
        sensor(records, result, gpu)
        return 0
    settings = [setting.partition("=")[::2] for setting in args.settings]
    for name, value in settings:
        if not hasattr(energy, name) or not value:
            parser.error(f"not NAME=VALUE of a constant of sampler/energy.py: {name}={value}")
    if args.what == "holdout":
        held_out(records, result, gpu, "as shipped")
        for name, value in settings:
            setattr(energy, name, type(getattr(energy, name))(float(value)))
            held_out(records, result, gpu, f"{name}={value}")
        return 0
    if "driver_power" in records:
        reeval(records, result, gpu, "as shipped, the instant-power field alone", field_only=True)
    reeval(records, result, gpu, "as shipped")
    for name, value in settings:
        setattr(energy, name, type(getattr(energy, name))(float(value)))
        reeval(records, result, gpu, f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
