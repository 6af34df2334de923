"""A clock sweep's steady-state figures at each point: energy per prefill and per decode token from seconds
of back-to-back windows at the point's clock, each with its measurement bound and the t interval over its
windows, the phase's tokens per second and measured power, and the per-request figures of the same phase
beside them; per phase, the energy-optimal clock and whether it stands apart from the top clock by more
than their intervals.

A request's phase lasts tens of milliseconds against the power sensor's 100 ms update, so its energy per
token cannot resolve a point's curve; the steady windows can. docs/report.md, "Steady state".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .report_stats import NO_INTERVAL, Interval, finite, t_interval

__all__ = ["PHASES", "STEADY_KEY", "energy_unit", "steady_optima", "steady_table", "steady_verdict"]

PHASES = ("prefill", "decode")
GROUP = ["model", "engine", "task", "batch_size"]
STEADY_KEY = [*GROUP, "job"]  # a job's points apart from another's: their windows are not pooled


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _spread(value: float, half: float) -> Interval:
    return (value - half, value + half) if math.isfinite(value) and math.isfinite(half) else NO_INTERVAL


def _windows_of(job: dict[str, Any], point: str, phase: str) -> list[dict[str, Any]]:
    """The point's steady windows of ``phase`` in the job's result (ids ``m<i>.bs<b>.<point>.s<n>``)."""
    found = []
    for window in (job.get("result") or {}).get("windows") or []:
        parts = str((window.get("attrs") or {}).get("id", "")).split(".")
        if window.get("name") == f"steady_{phase}" and len(parts) >= 4 and parts[2] == point:
            found.append(window)
    return found


def _per_window(windows: list[dict[str, Any]]) -> dict[str, Interval]:
    """The t intervals over the windows of their tokens per second and measured mean power."""
    rates = [
        int((w.get("attrs") or {}).get("tokens") or 0) / w["duration_s"]
        for w in windows
        if isinstance(w.get("duration_s"), int | float) and w["duration_s"] > 0
    ]
    return {
        "tokens_per_s": t_interval(rates),
        "mean_power_w": t_interval(w.get("mean_power_w") for w in windows),
    }


def _request_figures(requests: pd.DataFrame, phase: str) -> dict[str, Any]:
    """The phase's per-request energy per token (prefill: over the input tokens; decode: over the tokens
    after the first), its t interval over requests, and the share of requests in short windows."""
    if requests.empty or f"{phase}_energy_j" not in requests:
        return {"requests": len(requests)}
    energy = pd.to_numeric(requests[f"{phase}_energy_j"], errors="coerce")
    tokens = pd.to_numeric(
        requests["input_tokens" if phase == "prefill" else "output_tokens"], errors="coerce"
    )
    tokens = tokens if phase == "prefill" else tokens - 1
    per_token = finite((energy / tokens.where(tokens > 0)).astype(float))
    low, high = t_interval(per_token)
    short = requests["short_window"].astype("boolean") if "short_window" in requests else None
    return {
        "requests": len(requests),
        "request_j_per_token": float(per_token.mean()) if per_token.size else math.nan,
        "request_j_per_token_ci_low": low,
        "request_j_per_token_ci_high": high,
        "short_window_share": float(short.mean()) if short is not None and short.notna().any() else math.nan,
    }


def _row(job: dict[str, Any], point: dict[str, Any], phase: str, requests: pd.DataFrame) -> dict[str, Any]:
    value = _number(point.get(f"{phase}_j_per_token"))
    bound = _spread(value, _number(point.get(f"{phase}_j_per_token_uncertainty")))
    ci = _spread(value, _number(point.get(f"{phase}_j_per_token_ci95")))
    windows = _per_window(_windows_of(job, str(point.get("point")), phase))
    return {
        "model": point.get("model"),
        "engine": point.get("engine") or "eager",
        "task": point.get("task"),
        "batch_size": point.get("batch_size"),
        "job": str(job.get("id")),
        "clock_mhz": point.get("sm_clock_mhz"),
        "phase": phase,
        "point": str(point.get("point")),
        "observed_sm_clock_mhz": _number(point.get("observed_sm_clock_mhz")),
        "flagged": bool(point.get("flagged")),
        "windows": point.get(f"{phase}_windows"),
        "j_per_token": value,
        "j_per_token_ci_low": ci[0],
        "j_per_token_ci_high": ci[1],
        "j_per_token_bound_low": bound[0],
        "j_per_token_bound_high": bound[1],
        "tokens_per_s": _number(point.get(f"{phase}_tokens_per_s")),
        "tokens_per_s_ci_low": windows["tokens_per_s"][0],
        "tokens_per_s_ci_high": windows["tokens_per_s"][1],
        "mean_power_w": _number(point.get(f"{phase}_mean_power_w")),
        "mean_power_w_ci_low": windows["mean_power_w"][0],
        "mean_power_w_ci_high": windows["mean_power_w"][1],
        **_request_figures(requests, phase),
    }


COLUMNS = [
    *STEADY_KEY, "clock_mhz", "phase", "point", "observed_sm_clock_mhz", "flagged", "windows", "j_per_token",
    "j_per_token_ci_low", "j_per_token_ci_high", "j_per_token_bound_low", "j_per_token_bound_high",
    "tokens_per_s", "tokens_per_s_ci_low", "tokens_per_s_ci_high", "mean_power_w", "mean_power_w_ci_low",
    "mean_power_w_ci_high", "requests", "request_j_per_token", "request_j_per_token_ci_low",
    "request_j_per_token_ci_high", "short_window_share",
]  # fmt: skip


def _own_requests(requests: pd.DataFrame, job: dict[str, Any], point: dict[str, Any]) -> pd.DataFrame:
    """The point's requests (of its job, where the report holds several)."""
    if "point" not in requests:
        return requests.iloc[0:0]
    mine = requests["point"].astype(str) == str(point.get("point"))
    if "job" in requests:
        mine &= requests["job"].astype(str) == str(job.get("id"))
    return requests[mine.fillna(False).astype(bool)]


def steady_table(job: dict[str, Any], requests: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep point and phase with steady figures: energy per token with its t interval over
    windows and its bound, tokens per second and mean power with their t intervals over windows, and the
    same phase's per-request energy per token beside them. Empty (no columns) where no point has them."""
    rows = []
    for one in job.get("jobs") or [job]:
        for point in ((one.get("result") or {}).get("dvfs") or {}).get("points") or []:
            for phase in PHASES:
                if point.get(f"{phase}_j_per_token") is not None and point.get("sm_clock_mhz") is not None:
                    rows.append(_row(one, point, phase, _own_requests(requests, one, point)))
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table = table.astype({"clock_mhz": "Int64", "windows": "Int64", "requests": "Int64", "flagged": bool})
    floats = [c for c in COLUMNS[COLUMNS.index("j_per_token") :] if c != "requests"]
    table = table.astype({**dict.fromkeys(floats, float), "observed_sm_clock_mhz": float})
    order = {phase: i for i, phase in enumerate(PHASES)}
    table = table.sort_values([*STEADY_KEY, "phase", "clock_mhz"], key=_phase_order(order), kind="stable")
    return table.reset_index(drop=True)


def _phase_order(order: dict[str, int]) -> Any:
    return lambda column: column.map(order) if column.name == "phase" else column


def widest(frame: pd.DataFrame | pd.Series) -> tuple[Any, Any]:
    """The wider of each row's two energy-per-token intervals (bound and t): both are centred on the value,
    so the wider holds the other; NaN where it has neither."""
    low = np.fmin(frame["j_per_token_ci_low"].astype(float), frame["j_per_token_bound_low"].astype(float))
    high = np.fmax(frame["j_per_token_ci_high"].astype(float), frame["j_per_token_bound_high"].astype(float))
    return low, high


def _separated(best: pd.Series, top: pd.Series) -> Any:
    """Whether the optimum's interval lies wholly below the top clock's (NA where either has none)."""
    best_high, top_low = widest(best)[1], widest(top)[0]
    if not (math.isfinite(best_high) and math.isfinite(top_low)):
        return pd.NA
    return bool(best_high < top_low)


def steady_optima(table: pd.DataFrame) -> pd.DataFrame:
    """Per group and phase: the top clock (the highest measured) and the unflagged clock of least steady
    energy per token, each with the wider of its two intervals, the saving, and whether the optimum is
    separated from the top clock by more than their intervals."""
    if table.empty:
        return pd.DataFrame()
    rows = []
    for key, group in table.dropna(subset=["j_per_token"]).groupby([*STEADY_KEY, "phase"], dropna=False):
        top = group.sort_values("clock_mhz").iloc[-1]
        usable = group[~group["flagged"]]
        row: dict[str, Any] = dict(zip([*STEADY_KEY, "phase"], key, strict=True))
        top_low, top_high = widest(top)
        row |= {"top_clock_mhz": top["clock_mhz"], "top_flagged": bool(top["flagged"])}
        row |= {"top_j_per_token": top["j_per_token"]}
        row |= {"top_j_per_token_low": top_low, "top_j_per_token_high": top_high}
        if len(usable):
            best = usable.sort_values("j_per_token", kind="stable").iloc[0]
            low, high = widest(best)
            row |= {
                "energy_optimal_mhz": best["clock_mhz"],
                "j_per_token": best["j_per_token"],
                "j_per_token_low": low,
                "j_per_token_high": high,
                "saving": 1 - best["j_per_token"] / top["j_per_token"],
                "separated": pd.NA if best["clock_mhz"] == top["clock_mhz"] else _separated(best, top),
            }
        rows.append(row)
    columns = [
        *STEADY_KEY, "phase", "top_clock_mhz", "top_flagged", "top_j_per_token", "top_j_per_token_low",
        "top_j_per_token_high", "energy_optimal_mhz", "j_per_token", "j_per_token_low", "j_per_token_high",
        "saving", "separated",
    ]  # fmt: skip
    out = pd.DataFrame(rows).reindex(columns=columns)
    out = out.astype({
        "top_clock_mhz": "Int64", "top_flagged": bool, "energy_optimal_mhz": "Int64", "separated": "boolean"
    })  # fmt: skip
    numbers = [c for c in columns if "j_per_token" in c or c == "saving"]
    out = out.astype(dict.fromkeys(numbers, float))
    order = {phase: i for i, phase in enumerate(PHASES)}
    return out.sort_values([*STEADY_KEY, "phase"], key=_phase_order(order), kind="stable").reset_index(
        drop=True
    )


def energy_unit(values: pd.Series) -> tuple[float, str]:
    """The scale and unit that show these energies per token best: mJ below a joule, else J."""
    largest = float(np.nanmax(np.abs(values.to_numpy(dtype=float)))) if values.notna().any() else 0.0
    return (1e3, "mJ") if largest < 1 else (1.0, "J")


def steady_verdict(row: dict[str, Any]) -> str:
    """One group's phase in words: its energy-optimal clock at steady state and whether it stands apart
    from the top clock by more than their intervals."""
    phase, top = row["phase"], row["top_clock_mhz"]
    if pd.isna(row["energy_optimal_mhz"]):
        return f"{phase}: no unflagged clock has steady figures"
    best = row["energy_optimal_mhz"]
    scale, unit = energy_unit(pd.Series([row["j_per_token"]]))
    per_token = f"{row['j_per_token'] * scale:.4g} {unit}/token"
    if best == top:
        return f"{phase}: energy-optimal at the top clock, {top} MHz ({per_token})"
    capped = " (flagged: the GPU ran below it)" if row.get("top_flagged") else ""
    head = (
        f"{phase}: energy-optimal {best} MHz ({per_token}), {row['saving']:.1%} less energy per token than "
        f"the top clock {top} MHz{capped}"
    )
    if pd.isna(row["separated"]):
        return f"{head}; no interval to tell whether that is more than the measurement's"
    if row["separated"]:
        return f"{head}, separated from it by more than their intervals"
    return f"{head}, but within their intervals: not separated from the top clock"
