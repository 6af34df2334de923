"""The fused estimate's edge split checked against the energy counter itself: each update held out in turn.

A window's edge falls inside one of the counter's update periods, and the fused estimate splits that
period's energy at the edge by the shape of the power samples (sampler/energy.py). On a real GPU no tool
knows the true energy at an arbitrary instant, but the counter knows it exactly at each of its updates.
So: take update k away, as if the counter had skipped it, and ask the estimate for the energy from update
k - 3 to update k's instant. Update k's own value is the reference. The held-out edge lies ~100 ms from the
nearest update left, twice as far as a real window's edge can be (50 ms at most), so the errors here are
an upper bound on the split's, not a typical one.

Each update is held out alone, with the driver's power samples (as gpuprof measures), with the
instant-power field alone, and split evenly (the counter's energy over the two periods, in proportion to
time). The reference has its own uncertainty: update k's instant is known within the reads around it
(``half``), worth the period's mean power times that half-width; a bound covers the reference when the
error is within the bound plus that.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from gpuprof.sampler.energy import FusedEnergy

BACK = 3  # the estimate runs from update k - BACK, which stays, to update k's instant
METHODS = ("gpuprof", "field_fused", "even")


def _without(fused: FusedEnergy, k: int) -> FusedEnergy:
    """The same estimate as if the counter had not shown update ``k``."""
    held = copy.copy(fused)
    held.t, held.half, held.joules = (np.delete(a, k) for a in (fused.t, fused.half, fused.joules))
    return held


def holdout(
    samples: np.ndarray,
    energy: np.ndarray,
    driver_power: np.ndarray | None,
    gpu: int,
    t0: float,
    t1: float,
) -> dict[str, Any]:
    """Each counter update in [t0, t1] held out in turn: per method, the edge error's statistics."""
    driven = FusedEnergy(samples, energy, gpu, driver_power)
    field = FusedEnergy(samples, energy, gpu)
    t, half, joules = driven.t, driven.half, driven.joules
    ks = [k for k in np.flatnonzero((t >= t0) & (t <= t1)) if BACK <= k < t.size - 1]
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    bounds: dict[str, list[float]] = {m: [] for m in METHODS}
    gap_j, reference_j = [], []
    for k in ks:
        truth = joules[k] - joules[k - BACK]
        gap = joules[k + 1] - joules[k - 1]
        gap_j.append(gap)
        # what the held-out instant's own timing is worth: the two periods' mean power over its half-width
        reference_j.append(gap / ((t[k + 1] - t[k - 1]) / 1e9) * half[k] / 1e9)
        for name, fused in (("gpuprof", driven), ("field_fused", field)):
            got = _without(fused, k).window(round(float(t[k - BACK])), round(float(t[k])))
            errors[name].append(got[0] - truth if got else np.nan)
            bounds[name].append(got[1] if got else np.nan)
        even = joules[k - 1] - joules[k - BACK] + gap * (t[k] - t[k - 1]) / (t[k + 1] - t[k - 1])
        errors["even"].append(even - truth)
        bounds["even"].append(np.nan)
    out: dict[str, Any] = {
        "updates": len(ks),
        "gap_mean_j": float(np.mean(gap_j)) if ks else None,
        "reference_timing_j": float(np.median(reference_j)) if ks else None,
    }
    for name in METHODS:
        err, bound = np.array(errors[name], dtype=float), np.array(bounds[name], dtype=float)
        have = np.isfinite(err)
        if not have.any():
            out[name] = None
            continue
        e, b, r = err[have], bound[have], np.array(reference_j)[have]
        bounded = np.isfinite(b).all()
        out[name] = {
            "n": int(have.sum()),
            "bias_j": float(e.mean()),
            "rms_j": float(np.sqrt((e**2).mean())),
            "rms_of_gap": float(np.sqrt((e**2).mean()) / np.mean(np.array(gap_j)[have])),
            "p95_abs_j": float(np.percentile(np.abs(e), 95)),
            "coverage": float(np.mean(np.abs(e) <= b + r)) if bounded else None,
            "median_bound_j": float(np.median(b)) if bounded else None,
        }
    return out


def holdout_line(name: str, result: dict[str, Any]) -> str:
    """One line of a report: each method's rms error (J, % of the two periods' energy) and coverage."""
    if not result["updates"]:
        return f"  {name:<16} no update to hold out"
    parts = []
    for method in METHODS:
        m = result.get(method)
        if not m:
            parts.append(f"{method} -")
            continue
        covered = ""
        if m["coverage"] is not None:
            covered = f", covered {m['coverage']:.0%} (median bound {m['median_bound_j']:.1f} J)"
        rms = f"rms {m['rms_j']:.2f} J ({m['rms_of_gap']:.1%})"
        parts.append(f"{method} {rms}, bias {m['bias_j']:+.2f} J{covered}")
    gap = result["gap_mean_j"]
    return f"  {name:<16} {result['updates']:>4} updates, {gap:.0f} J over two periods: " + "; ".join(parts)
