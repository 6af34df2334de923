"""A clock sweep's result: each point at its requested and observed SM clock, flagged where they differ,
and the energy- and EDP-optimal clocks.

An llm job's point costs energy and time per request (its requests' mean); a burn job's per operation:
its window's energy (fused from the counter and the power where the counter was read, with its bound) over
the operations done in it. The window opens after the point settled at its clock, so the power sensor's lag
does not carry the previous point's power into it, and closes before the point's work stops, so that the
counter's update periods at both edges hold the point's steady work.

A GPU may run below a locked clock (power or thermal capping), so a point is reported at the clock it
was observed at: its median SM clock over its batches, with the 5th-95th percentile range and the
clock-event reasons of its window. A point whose median strays from the requested clock by more than
``max(CLOCK_TOLERANCE_MHZ, CLOCK_TOLERANCE_FRACTION x requested)`` is flagged and left out of the optima.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..markers import Marker
from .requests import HeldPower, request_rows
from .windows import PhaseWindow, windows

__all__ = [
    "CLOCK_TOLERANCE_MHZ",
    "burn_point",
    "burn_sweep_section",
    "command_sweep_section",
    "mark_capped",
    "point_energy",
    "point_steady_figures",
    "strays",
    "sweep_section",
]

CLOCK_TOLERANCE_MHZ = 30.0  # two of the H100's 15 MHz clock steps
CLOCK_TOLERANCE_FRACTION = 0.02
CAP_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


def t_half_width(values: np.ndarray, confidence: float = 0.95) -> float | None:
    """Half the width of the mean's ``confidence`` interval (Student's t, n - 1 degrees of freedom); None
    below two values."""
    from scipy import stats

    if values.size < 2:
        return None
    quantile = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1))
    return quantile * float(values.std(ddof=1)) / math.sqrt(values.size)


def _tolerance(mhz: float) -> float:
    return max(CLOCK_TOLERANCE_MHZ, CLOCK_TOLERANCE_FRACTION * mhz)


def strays(requested: float | None, observed: float | None) -> bool:
    """Whether a point observed at ``observed`` MHz cannot be reported as its ``requested`` clock."""
    return observed is None or requested is None or abs(observed - requested) > _tolerance(requested)


def mark_capped(
    summaries: Sequence[dict[str, Any]], windows: Sequence[PhaseWindow], power: HeldPower, top_mhz: int | None
) -> None:
    """Adds each point's clock-event reasons and ``capped``: it ran below its clock (the locked one, else
    the GPU's top clock) by more than the tolerance while a power or thermal cap was active. Also takes
    steady-state summaries (their reasons already given)."""
    point_windows = {str(w.attrs.get("id")): w for w in windows if w.name == "point"}
    for summary in summaries:
        window = point_windows.get(str(summary.get("point")))
        if window is not None:
            summary["clock_event_reasons"] = power.clock_event_reasons(window.t_start_ns, window.t_end_ns)
            if "prefill_clock_mhz" in window.attrs:  # two clocks: judged per phase (phase_clocks.py)
                summary["capped"] = False
                continue
        wanted = summary.get("sm_clock_mhz") or top_mhz
        observed = summary.get("observed_sm_clock_mhz_median")
        summary["capped"] = bool(
            wanted and observed is not None and observed < wanted - _tolerance(wanted)
            and any(reason in CAP_REASONS for reason in summary.get("clock_event_reasons") or [])
        )  # fmt: skip


def _point_row(
    summary: dict[str, Any], rows: list[dict[str, Any]], window: PhaseWindow, power: HeldPower
) -> dict[str, Any]:
    requested = summary.get("sm_clock_mhz")
    observed = summary.get("observed_sm_clock_mhz_median")
    energies = np.array([r["energy_j"] for r in rows if r["energy_j"] is not None], dtype=float)
    latencies = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    energy = float(energies.mean()) if energies.size else None
    half_width = t_half_width(energies)
    latency = float(np.median(latencies)) if latencies else None
    return {
        "point": summary["point"],
        "model": summary["model"],
        "engine": summary.get("engine"),
        "task": summary["task"],
        "batch_size": summary["batch_size"],
        **_clocks(requested, observed, window, power),
        "unit": "request",
        "requests": len(rows),
        "energy_j": energy,
        "energy_j_ci95": half_width,
        "latency_s": latency,
        "edp_js": energy * latency if energy is not None and latency is not None else None,
        "quality_mean": summary.get("quality_mean"),
    }


def _clocks(
    requested: int | None, observed: float | None, window: PhaseWindow, power: HeldPower
) -> dict[str, Any]:
    """A point's requested and observed clocks, its clock-event reasons, and whether it is flagged."""
    quantiles = power.clock_quantiles(window.t_start_ns, window.t_end_ns)
    return {
        "sm_clock_mhz": requested,
        "observed_sm_clock_mhz": observed,
        "observed_sm_clock_p5_p95_mhz": list(quantiles) if quantiles else None,
        "clock_event_reasons": power.clock_event_reasons(window.t_start_ns, window.t_end_ns),
        "flagged": strays(requested, observed),
    }


BURN_ENERGY_METHOD = "over the point's window, per operation"


def burn_point(window: PhaseWindow, power: HeldPower, unit: str = "operation") -> dict[str, Any]:
    """A burn sweep's point: energy and time per operation, with a 95% interval from the spread of the
    power sensor's updates in the window (its power is steady but for ripple) and the bound of the
    window's energy estimate (``energy_j_bound``: the counter's timing and the split at the edges).
    With ``unit="point"`` (a command job's), the whole window is one unit."""
    t0, t1 = window.t_start_ns, window.t_end_ns
    ops = 1 if unit == "point" else int(window.attrs.get("ops") or 0)
    joules, bound = power.energy(t0, t1)
    updates = power.updates(t0, t1)
    seconds = (t1 - t0) / 1e9
    half_width = None
    if updates.size > 1:  # of the window's energy: its mean power's interval over its length
        half_width = float(t_half_width(updates) or 0.0) * seconds

    def per_op(value: float | None) -> float | None:
        return value / ops if ops and value is not None else None

    energy, latency = per_op(joules), per_op(seconds)
    return {
        "point": window.attrs.get("id"),
        "kind": window.attrs.get("kind"),
        "size": window.attrs.get("size"),
        **_clocks(window.attrs.get("sm_clock_mhz"), power.median_clock(t0, t1), window, power),
        "unit": unit,
        "ops": ops,
        "seconds": seconds,
        "mean_power_w": joules / seconds if joules is not None and seconds > 0 else None,
        "energy_j": energy,
        "energy_j_ci95": per_op(half_width),
        "energy_j_bound": per_op(bound),
        "latency_s": latency,
        "edp_js": energy * latency if energy is not None and latency is not None else None,
        "energy_method": f"{power.method} {BURN_ENERGY_METHOD if unit == 'operation' else 'over the point'}",
    }


def burn_sweep_section(windows: Sequence[PhaseWindow], power: HeldPower) -> dict[str, Any] | None:
    """The ``dvfs`` section of a swept burn job's result, None when it ran no point."""
    points = [burn_point(w, power) for w in windows if w.name == "point"]
    return _section(points, ("kind", "size"), windows) if points else None


def command_sweep_section(windows: Sequence[PhaseWindow], power: HeldPower) -> dict[str, Any] | None:
    """The ``dvfs`` section of a swept command job that marked no request: each point (a run of the
    program, or a point it asked for) is one unit, its energy and time those of its window."""
    points = [burn_point(w, power, unit="point") for w in windows if w.name == "point"]
    return _section(points, ("kind", "size"), windows) if points else None


def _optimum(points: Sequence[dict[str, Any]], key: str) -> int | None:
    usable = [p for p in points if not p["flagged"] and p[key] is not None]
    return min(usable, key=lambda p: p[key])["sm_clock_mhz"] if usable else None


STEADY_KEYS = ("j_per_token", "j_per_token_uncertainty", "j_per_token_ci95", "tokens_per_s", "mean_power_w")


def point_steady_figures(steady: Sequence[dict[str, Any]], point: str) -> dict[str, Any]:
    """A point's steady-state figures at its clock, per phase (``prefill_j_per_token``, ...), where the
    job asked for steady state; empty otherwise."""
    out: dict[str, Any] = {}
    for summary in steady:
        if summary.get("point") == point:
            out |= {f"{summary['phase']}_{key}": summary.get(key) for key in STEADY_KEYS}
            out[f"{summary['phase']}_windows"] = summary.get("windows")
    return out


def sweep_section(
    summaries: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    windows: Sequence[PhaseWindow],
    power: HeldPower,
    steady: Sequence[dict[str, Any]] = (),
) -> dict[str, Any] | None:
    """The ``dvfs`` section of a swept llm job's result, None when no point had a clock of its own; with
    ``steady`` (the result's steady-state summaries), each point's steady figures at its clock."""
    point_windows = {str(w.attrs.get("id")): w for w in windows if w.name == "point"}
    by_point: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_point[str(row["point"])].append(row)
    points = [
        _point_row(s, by_point.get(str(s["point"]), []), point_windows[str(s["point"])], power)
        | point_steady_figures(steady, str(s["point"]))
        for s in summaries
        if s.get("sm_clock_mhz") is not None and str(s["point"]) in point_windows
    ]
    return _section(points, ("model", "task", "batch_size"), windows) if points else None


def _section(
    points: list[dict[str, Any]], keys: tuple[str, ...], windows: Sequence[PhaseWindow]
) -> dict[str, Any]:
    """Points with the optima per group (points alike in ``keys``), over the job, and of its searches."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        groups[tuple(point[key] for key in keys)].append(point)
    optima = [
        {
            **dict(zip(keys, group_key, strict=True)),
            "energy_optimal_mhz": _optimum(group, "energy_j"),
            "edp_optimal_mhz": _optimum(group, "edp_js"),
        }
        for group_key, group in groups.items()
    ]
    # Over the whole job: the clock whose points, summed over every group, cost least (clocks that
    # every group measured unflagged only).
    totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for group in groups.values():
        for point in group:
            if not point["flagged"] and point["energy_j"] is not None and point["edp_js"] is not None:
                total = totals[point["sm_clock_mhz"]]
                total[0] += point["energy_j"]
                total[1] += point["edp_js"]
                total[2] += 1
    complete = {mhz: t for mhz, t in totals.items() if t[2] == len(groups)}
    searches = [
        {k: w.attrs.get(k) for k in ("id", "objective", "grid", "best_mhz", "measured")}
        for w in windows
        if w.name == "search"
    ]
    return {
        "points": points,
        "optima": optima,
        "searches": searches,
        "energy_optimal_mhz": min(complete, key=lambda m: complete[m][0]) if complete else None,
        "edp_optimal_mhz": min(complete, key=lambda m: complete[m][1]) if complete else None,
        "flagged_points": sum(p["flagged"] for p in points),
        "clock_tolerance": f"max({CLOCK_TOLERANCE_MHZ:g} MHz, {CLOCK_TOLERANCE_FRACTION:.0%} of the clock)",
    }


def point_energy(
    workload: str, markers: Sequence[Marker], power: HeldPower, point: str, simulated: bool
) -> dict[str, Any]:
    """What a worker asks between repetitions of a point: its energy so far per request (per operation of
    a finished burn point), with its 95% CI half width, latency and whether it strayed from its clock."""
    if workload == "burn":
        found = [w for w in windows(markers) if w.name == "point" and str(w.attrs.get("id")) == point]
        if not found or found[-1].problem is not None:
            return {"ok": False, "error": f"no finished point {point!r}"}
        figures = burn_point(found[-1], power)
        return {
            "ok": True,
            "ops": figures["ops"],
            "mean_j": figures["energy_j"],
            "ci95_j": figures["energy_j_ci95"],
            "latency_s": figures["latency_s"],
            "flagged": figures["flagged"],
        }
    ours = [
        m
        for m in markers
        if m.attrs.get("point") == point or str(m.attrs.get("id", "")).startswith(f"{point}.")
    ]
    rows = request_rows(ours, windows(ours), power, simulated)
    energies = np.array([r["energy_j"] for r in rows if r["energy_j"] is not None], dtype=float)
    if energies.size < 2:
        return {"ok": True, "requests": int(energies.size), "mean_j": None, "ci95_j": None}
    half_width = t_half_width(energies)
    begins = (m for m in markers if m.name == "point" and m.attrs.get("id") == point)
    requested = next((m.attrs.get("sm_clock_mhz") for m in begins), None)
    observed = [r["observed_sm_clock_mhz"] for r in rows if r["observed_sm_clock_mhz"] is not None]
    return {
        "ok": True,
        "requests": int(energies.size),
        "mean_j": float(energies.mean()),
        "ci95_j": half_width,
        "latency_s": float(np.median([r["latency_s"] for r in rows])),
        "flagged": strays(requested, float(np.median(observed)) if observed else None),
    }


STEADY_PHASES = ("steady_prefill", "steady_decode")


def steady_energy(markers: Sequence[Marker], power: HeldPower, base: str, phase: str) -> dict[str, Any]:
    """What a worker asks between rounds of a steady phase: the energy per token of each finished window
    ``base.s<n>`` of ``phase``, their mean and the half width of its 95% interval (Student's t)."""
    if phase not in STEADY_PHASES:
        return {"ok": False, "error": f"phase must be one of {', '.join(STEADY_PHASES)}"}
    found = [
        w for w in windows(markers) if w.name == phase and str(w.attrs.get("id", "")).startswith(f"{base}.s")
    ]
    values = []
    for window in found:
        tokens = int(window.attrs.get("tokens") or 0)
        joules, _bound = power.energy(window.t_start_ns, window.t_end_ns)
        if tokens > 0 and joules is not None:
            values.append(joules / tokens)
    per_token = np.array(values, dtype=float)
    return {
        "ok": True,
        "windows": int(per_token.size),
        "mean_j_per_token": float(per_token.mean()) if per_token.size else None,
        "ci95_j_per_token": t_half_width(per_token),
    }
