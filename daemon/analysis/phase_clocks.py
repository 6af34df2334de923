"""Phase-aware clocks: each (prefill, decode) clock pair's cost, its switches, and its optimum against the
best single clock within the same latency budget.

A pair's point runs its requests' prefill at one SM clock and their decode at another, the lock switched at
each phase edge (docs/llm.md, "Phase-aware clocks"). A switch is a ``clock_switch`` window from the worker's
request to gpuprofd's answer, with the instant the NVML call returned (``applied_ns``); it took effect at
the first sample that shows the new clock: its **latency** runs from the request to that sample, its
**settle** time from the call's return to it (the GPU's own part), and its **energy** is the GPU's over the
request-to-effect interval (tens of milliseconds: far shorter than the power sensor's 100 ms update, so its
bound is wide).

Single clocks are the sweep's ordinary points and the pairs whose two clocks are equal (no switch). The
**reference** latency is that of the fastest single clock measured unflagged (the highest); the budget is
``latency_budget`` times it. Within it, the phase-aware optimum is the pair of least mean energy per
request and the single-clock one the single clock of least; the saving is their difference, with the 95%
interval of a difference of two means (Welch's t).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .sweep import strays, t_half_width
from .windows import PhaseWindow

__all__ = [
    "MAX_SWITCH_S",
    "compare",
    "mean_ci",
    "phase_clocks_section",
    "reaches",
    "switch_rows",
    "welch_half_width",
]

MAX_SWITCH_S = 1.0  # a switch not seen in this long (or before the next one) is reported unseen
GROUP_KEYS = ("model", "task", "batch_size")


class ClockTrace(Protocol):
    """What the analysis reads of a GPU's trace (``requests.HeldPower``): its sampled SM clocks and the
    energy of an interval with its bound."""

    clock_t: np.ndarray
    clock_mhz: np.ndarray

    def energy(self, t0: int, t1: int) -> tuple[float | None, float | None]: ...

    def median_clock(self, t0: int, t1: int) -> float | None: ...


def mean_ci(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """The mean of the known values and the half width of its 95% interval (Student's t; None below two)."""
    known = np.array([v for v in values if v is not None], dtype=float)
    if known.size == 0:
        return None, None
    return float(known.mean()), t_half_width(known)


def welch_half_width(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> float | None:
    """Half the width of the ``confidence`` interval of mean(a) - mean(b), the two samples independent and
    of unequal variances (Welch's t, Welch-Satterthwaite degrees of freedom); None below two values each."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return None
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return 0.0
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, dof)) * se


def reaches(observed: float, to_mhz: float, from_mhz: float | None) -> bool:
    """Whether an observed SM clock is the one switched to: within the sweep's tolerance of it and nearer
    to it than to the clock switched from."""
    near = not strays(to_mhz, observed)
    return near and (from_mhz is None or abs(observed - to_mhz) < abs(observed - from_mhz))


def _first_seen(trace: ClockTrace, t0: int, t1: int, to_mhz: float, from_mhz: float | None) -> int | None:
    """The time of the first clock sample in [t0, t1] that shows the clock switched to."""
    lo, hi = np.searchsorted(trace.clock_t, [t0, t1], side="left")
    for k in range(int(lo), int(hi)):
        if reaches(float(trace.clock_mhz[k]), to_mhz, from_mhz):
            return int(trace.clock_t[k])
    return None


def switch_rows(windows: Sequence[PhaseWindow], trace: ClockTrace) -> list[dict[str, Any]]:
    """One row per ``clock_switch`` window: its clocks, how long gpuprofd took to answer (``call_s``), when
    the new clock was first sampled after the request (``latency_s``) and after the call returned
    (``settle_s``), and the GPU's energy from the request to then, with its bound (None where not seen)."""
    switches = sorted((w for w in windows if w.name == "clock_switch"), key=lambda w: w.t_start_ns)
    rows = []
    for index, window in enumerate(switches):
        t0, answered = window.t_start_ns, window.t_end_ns
        applied = window.attrs.get("applied_ns")
        applied = min(max(int(applied), t0), answered) if isinstance(applied, int) else answered
        limit = t0 + int(MAX_SWITCH_S * 1e9)
        if index + 1 < len(switches):
            limit = min(limit, switches[index + 1].t_start_ns)
        to_mhz, from_mhz = window.attrs.get("to_mhz"), window.attrs.get("from_mhz")
        seen = None
        if isinstance(to_mhz, (int, float)):
            previous = from_mhz if isinstance(from_mhz, (int, float)) else None
            seen = _first_seen(trace, t0, limit, float(to_mhz), previous)
        joules, bound = trace.energy(t0, seen) if seen is not None else (None, None)
        switch_id = str(window.attrs.get("id", ""))
        rows.append(
            {
                "id": switch_id,
                "point": switch_id.split(".")[0] or None,
                "phase": window.attrs.get("phase"),
                "from_mhz": from_mhz,
                "to_mhz": to_mhz,
                "call_s": (answered - t0) / 1e9,
                "latency_s": (seen - t0) / 1e9 if seen is not None else None,
                "settle_s": max(0, seen - applied) / 1e9 if seen is not None else None,
                "energy_j": joules,
                "energy_bound_j": bound,
                "seen": seen is not None,
            }
        )
    return rows


def _switch_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Count, mean latency (with its interval), settle and call time, and energy of some switches."""
    latency, latency_ci = mean_ci([r["latency_s"] for r in rows])
    energy, energy_ci = mean_ci([r["energy_j"] for r in rows])
    return {
        "switches": len(rows),
        "unseen": sum(not r["seen"] for r in rows),
        "latency_s": latency,
        "latency_s_ci95": latency_ci,
        "settle_s": mean_ci([r["settle_s"] for r in rows])[0],
        "call_s": mean_ci([r["call_s"] for r in rows])[0],
        "energy_j": energy,
        "energy_j_ci95": energy_ci,
        "energy_bound_j": mean_ci([r["energy_bound_j"] for r in rows])[0],
    }


def _phase_clock(
    point: str, phase: str, mhz: int, windows: Sequence[PhaseWindow], trace: ClockTrace
) -> dict[str, Any]:
    """A pair point's observed clock in one phase's windows: the median of their medians, and the share of
    the clock samples in them that show the phase's clock (the rest ran before a switch took effect)."""
    own = [w for w in windows if w.name == phase and str(w.attrs.get("id", "")).startswith(f"{point}.")]
    medians = [trace.median_clock(w.t_start_ns, w.t_end_ns) for w in own]
    known = [m for m in medians if m is not None]
    at, total = 0, 0
    for window in own:
        lo, hi = np.searchsorted(trace.clock_t, [window.t_start_ns, window.t_end_ns], side="left")
        clocks = trace.clock_mhz[int(lo) : int(hi)]
        total += clocks.size
        at += int(sum(not strays(mhz, float(c)) for c in clocks))
    return {
        f"observed_{phase}_clock_mhz": float(np.median(known)) if known else None,
        f"{phase}_at_clock_share": at / total if total else None,
    }


def _candidate(point: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A point's energy per request and per token and its latency, each a mean with its 95% interval,
    and its requests' energies (for the saving's interval)."""
    energies = [float(r["energy_j"]) for r in rows if r["energy_j"] is not None]
    energy, energy_ci = mean_ci(energies)
    per_token, per_token_ci = mean_ci([r["j_per_token"] for r in rows])
    latency, latency_ci = mean_ci([r["latency_s"] for r in rows])
    return {
        **point,
        "requests": len(rows),
        "energy_j": energy,
        "energy_j_ci95": energy_ci,
        "j_per_token": per_token,
        "j_per_token_ci95": per_token_ci,
        "latency_s": latency,
        "latency_s_ci95": latency_ci,
        "ttft_s": mean_ci([r["ttft_s"] for r in rows])[0],
        "tpot_s": mean_ci([r["tpot_s"] for r in rows])[0],
        "energies": energies,
    }


def _brief(candidate: dict[str, Any] | None) -> dict[str, Any] | None:
    keys = ("point", "sm_clock_mhz", "prefill_clock_mhz", "decode_clock_mhz", "energy_j", "energy_j_ci95")
    if candidate is None:
        return None
    return {k: candidate.get(k) for k in (*keys, "latency_s", "latency_s_ci95") if k in candidate}


def compare(
    pairs: Sequence[dict[str, Any]], singles: Sequence[dict[str, Any]], latency_budget: float
) -> dict[str, Any]:
    """One group's phase-aware optimum against its best single clock within the latency budget.

    ``pairs`` and ``singles`` are candidates (``_candidate``: ``energy_j``, ``latency_s``, ``energies``,
    ``flagged``; a single has ``sm_clock_mhz``). The budget is ``latency_budget`` x the mean latency of the
    highest single clock measured unflagged."""
    usable_singles = [s for s in singles if not s["flagged"] and s["latency_s"] is not None]
    reference = max(usable_singles, key=lambda s: s["sm_clock_mhz"], default=None)
    budget = reference["latency_s"] * latency_budget if reference is not None else None

    def best(candidates: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        within = [
            c for c in candidates
            if not c["flagged"] and c["energy_j"] is not None and c["latency_s"] is not None
            and budget is not None and c["latency_s"] <= budget
        ]  # fmt: skip
        return min(within, key=lambda c: c["energy_j"], default=None)

    phase, single = best(pairs), best(usable_singles)
    saving = saving_ci = fraction = None
    if phase is not None and single is not None:
        saving = single["energy_j"] - phase["energy_j"]
        saving_ci = welch_half_width(single["energies"], phase["energies"])
        fraction = saving / single["energy_j"] if single["energy_j"] else None
    return {
        "reference_sm_clock_mhz": reference["sm_clock_mhz"] if reference is not None else None,
        "reference_latency_s": reference["latency_s"] if reference is not None else None,
        "latency_budget": latency_budget,
        "latency_budget_s": budget,
        "phase_aware": _brief(phase),
        "single_clock": _brief(single),
        "saving_j": saving,
        "saving_j_ci95": saving_ci,
        "saving_fraction": fraction,
    }


def phase_clocks_section(
    rows: Sequence[dict[str, Any]],
    windows: Sequence[PhaseWindow],
    trace: ClockTrace,
    latency_budget: float,
    simulated: bool,
    steady: Sequence[dict[str, Any]] = (),
) -> dict[str, Any] | None:
    """The ``dvfs.phase_clocks`` section of an llm job's result; None when it ran no pair point. ``rows``:
    its requests table; ``steady``: its steady-state summaries (a pair's steady figures join it)."""
    from .sweep import point_steady_figures

    by_point: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_point[str(row["point"])].append(row)
    switches = switch_rows(windows, trace)
    switches_by_point: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for switch in switches:
        switches_by_point[str(switch["point"])].append(switch)
    pairs, singles = [], []
    for window in (w for w in windows if w.name == "point"):
        attrs, point = window.attrs, str(window.attrs.get("id"))
        where = {"point": point, **{key: attrs.get(key) for key in GROUP_KEYS}}
        prefill, decode = attrs.get("prefill_clock_mhz"), attrs.get("decode_clock_mhz")
        if isinstance(prefill, int) and isinstance(decode, int):
            clocks = {
                **_phase_clock(point, "prefill", prefill, windows, trace),
                **_phase_clock(point, "decode", decode, windows, trace),
            }
            flagged = strays(prefill, clocks["observed_prefill_clock_mhz"]) or (
                strays(decode, clocks["observed_decode_clock_mhz"])
            )
            pair = {**where, "prefill_clock_mhz": prefill, "decode_clock_mhz": decode, **clocks}
            pair = _candidate({**pair, "flagged": flagged}, by_point.get(point, []))
            batches = len({r["batch"] for r in by_point.get(point, [])})
            own = switches_by_point.get(point, [])
            pair["switch"] = _switch_summary(own) | {"per_batch": len(own) / batches if batches else None}
            pairs.append(pair | point_steady_figures(steady, point))
            if prefill == decode:
                singles.append({**pair, "sm_clock_mhz": prefill})
        elif isinstance(attrs.get("sm_clock_mhz"), int):
            requested = attrs["sm_clock_mhz"]
            point_rows = by_point.get(point, [])
            observed = [
                r["observed_sm_clock_mhz"] for r in point_rows if r["observed_sm_clock_mhz"] is not None
            ]
            flagged = strays(requested, float(np.median(observed)) if observed else None)
            singles.append(_candidate({**where, "sm_clock_mhz": requested, "flagged": flagged}, point_rows))
    if not pairs:
        return None
    groups: dict[tuple[Any, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = defaultdict(
        lambda: ([], [])
    )
    for pair in pairs:
        groups[tuple(pair[k] for k in GROUP_KEYS)][0].append(pair)
    for single in singles:
        groups[tuple(single[k] for k in GROUP_KEYS)][1].append(single)
    comparisons = [
        dict(zip(GROUP_KEYS, key, strict=True)) | compare(group_pairs, group_singles, latency_budget)
        for key, (group_pairs, group_singles) in groups.items()
        if group_pairs
    ]
    return {
        "pairs": [{k: v for k, v in pair.items() if k != "energies"} for pair in pairs],
        "switches": _switch_summary(switches),
        "comparisons": comparisons,
        "latency_budget": latency_budget,
        "max_switch_s": MAX_SWITCH_S,
        "simulated": simulated,
    }
