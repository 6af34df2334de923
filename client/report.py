"""The study's analysis of an llm job: energy, latency, power and EDP against clock, optima, savings within
latency budgets, the Pareto frontier, and how input features correlate with energy and latency.

``Report.from_job(job, requests)`` takes a finished job's map and its requests table (``Client.job`` and
``Client.requests``); every table is a DataFrame, and ``gpuprof report`` writes them as CSV with plots and
one HTML page (``report_page``). The rules are in docs/report.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FEATURES", "LATENCY_BUDGETS", "Report", "group_label"]

GROUP = ["model", "engine", "task", "batch_size"]
FEATURES = (
    "input_tokens",
    "input_chars",
    "token_entropy",
    "unique_token_ratio",
    "entity_density",
    "reasoning_marker_density",
    "causal_question_score",
    "complexity_score",
)
TARGETS = ("energy_j", "latency_s")
LATENCY_BUDGETS = (1.0, 1.1, 1.25, 1.5)  # latency allowed, as a multiple of the default clock's


def _clock_column(requests: pd.DataFrame) -> pd.Series:
    """Each request's requested SM clock, or (outside a sweep) its observed one, rounded to the MHz."""
    requested = requests.get("sm_clock_mhz")
    observed = requests["observed_sm_clock_mhz"].round()
    return observed if requested is None else requested.astype("Float64").fillna(observed)


def group_label(model: Any, engine: Any, task: Any, batch_size: Any) -> str:
    """A group of requests by name, ``llama-3.2-1b (eager) / qa / batch 8``; what the job did not have (a
    command job's model, task and batch) is left out."""
    head = f"{model} ({engine})" if not pd.isna(model) else str(engine)
    rest = [str(task)] if not pd.isna(task) else []
    rest += [f"batch {batch_size}"] if not pd.isna(batch_size) else []
    return " / ".join([head, *rest])


def with_engine(requests: pd.DataFrame) -> pd.DataFrame:
    """The requests with their ``engine`` (jobs from before engines ran transformers' eager generate)."""
    if "engine" in requests:
        return requests.assign(engine=requests["engine"].fillna("eager"))
    return requests.assign(engine="eager")


def per_clock(requests: pd.DataFrame, sweep_points: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per model x engine x task x batch size x clock: the means and medians the plots and optima
    use."""
    frame = with_engine(requests).assign(clock_mhz=_clock_column(requests))
    grouped = frame.groupby([*GROUP, "clock_mhz"], dropna=False)
    table = grouped.agg(
        requests=("energy_j", "size"),
        energy_j=("energy_j", "mean"),
        energy_j_std=("energy_j", "std"),
        latency_s=("latency_s", "median"),
        ttft_s=("ttft_s", "median"),
        tpot_s=("tpot_s", "median"),
        observed_sm_clock_mhz=("observed_sm_clock_mhz", "median"),
        quality=("quality", "mean"),
    ).reset_index()
    table["energy_j_ci95"] = 1.96 * table["energy_j_std"] / np.sqrt(table["requests"].clip(lower=1))
    table["mean_power_w"] = table["energy_j"] / table["latency_s"]
    table["edp_js"] = table["energy_j"] * table["latency_s"]
    keys = ("model", "engine", "task", "batch_size", "sm_clock_mhz")
    flagged = {
        tuple(p.get(k) or ("eager" if k == "engine" else None) for k in keys): p.get("flagged")
        for p in sweep_points
    }
    table["flagged"] = [
        bool(flagged.get((r.model, r.engine, r.task, r.batch_size, r.clock_mhz), False))
        for r in table.itertuples()
    ]
    return table.sort_values([*GROUP, "clock_mhz"]).reset_index(drop=True)


def _least(group: pd.DataFrame, column: str) -> pd.Series:
    """The row with the least ``column`` (the first of equals)."""
    return group.sort_values(column, kind="stable").iloc[0]


def optima(table: pd.DataFrame) -> pd.DataFrame:
    """Per group: energy- and EDP-optimal clocks among unflagged points, and the savings against the
    default clock (the highest clock measured: what an unlocked GPU runs at) within each latency budget."""
    rows = []
    for key, group in table.groupby(GROUP, dropna=False):
        default = group.sort_values("clock_mhz").iloc[-1]
        usable = group[~group["flagged"]]
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        row["default_clock_mhz"] = default["clock_mhz"]
        row["default_energy_j"] = default["energy_j"]
        row["default_latency_s"] = default["latency_s"]
        row["energy_optimal_mhz"] = _least(usable, "energy_j")["clock_mhz"] if len(usable) else None
        row["edp_optimal_mhz"] = _least(usable, "edp_js")["clock_mhz"] if len(usable) else None
        for budget in LATENCY_BUDGETS:
            within = usable[usable["latency_s"] <= budget * default["latency_s"]]
            best = _least(within, "energy_j") if len(within) else None
            row[f"clock_mhz_at_{budget:g}x_latency"] = None if best is None else best["clock_mhz"]
            row[f"saving_at_{budget:g}x_latency"] = (
                None if best is None else 1 - best["energy_j"] / default["energy_j"]
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    clocks = [name for name in frame.columns if "_mhz" in str(name)]
    return frame.astype(dict.fromkeys(clocks, "Int64"))  # whole MHz; <NA> where no point qualifies


def pareto(table: pd.DataFrame) -> pd.DataFrame:
    """The points no other of their group beats in both energy and latency (unflagged points only)."""
    keep = []
    for _, group in table[~table["flagged"]].groupby(GROUP, dropna=False):
        ordered = group.sort_values(["latency_s", "energy_j"])
        best = math.inf
        for index, row in ordered.iterrows():
            if row["energy_j"] < best:
                keep.append(index)
                best = row["energy_j"]
    return table.loc[keep].reset_index(drop=True)


def _fisher_ci(r: float, n: int, se_scale: float = 1.0) -> tuple[float, float]:
    """A 95% interval for a correlation by Fisher's z (Spearman: Bonett and Wright's standard error)."""
    if n <= 3 or not math.isfinite(r) or abs(r) >= 1:
        return (math.nan, math.nan)
    z, se = math.atanh(r), se_scale / math.sqrt(n - 3)
    return (math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se))


def correlations(requests: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman correlation, with 95% intervals, of each input feature with energy and latency,
    over all requests and per model x task x clock (a feature varies within a group; clocks do not)."""
    from scipy import stats

    frame = requests.assign(clock_mhz=_clock_column(requests))
    scopes: list[tuple[dict[str, Any], pd.DataFrame]] = [
        ({"model": "all", "task": "all", "clock_mhz": None}, frame)
    ]
    for (model, task, clock), group in frame.groupby(["model", "task", "clock_mhz"], dropna=False):
        scopes.append(({"model": model, "task": task, "clock_mhz": clock}, group))
    rows = []
    for scope, group in scopes:
        for feature in FEATURES:
            for target in TARGETS:
                if feature not in group or target not in group:
                    continue
                pair = group[[feature, target]].astype(float).dropna()
                n = len(pair)
                if n < 3 or pair[feature].nunique() < 2 or pair[target].nunique() < 2:
                    continue
                pearson = float(stats.pearsonr(pair[feature], pair[target]).statistic)
                spearman = float(stats.spearmanr(pair[feature], pair[target]).statistic)
                rho_se = math.sqrt(1 + spearman**2 / 2)
                rows.append(
                    {
                        **scope,
                        "feature": feature,
                        "target": target,
                        "n": n,
                        "pearson_r": pearson,
                        "pearson_ci95": _fisher_ci(pearson, n),
                        "spearman_rho": spearman,
                        "spearman_ci95": _fisher_ci(spearman, n, rho_se),
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class Report:
    """The analysis tables of one job."""

    job: dict[str, Any]
    requests: pd.DataFrame
    clocks: pd.DataFrame
    optima: pd.DataFrame
    pareto: pd.DataFrame
    correlations: pd.DataFrame

    @property
    def simulated(self) -> bool:
        return bool(self.job.get("simulated"))

    @classmethod
    def from_job(cls, job: dict[str, Any], requests: pd.DataFrame) -> Report:
        if requests.empty:
            raise ValueError(f"job {job.get('id')} has no requests: only llm jobs can be reported on")
        sweep = ((job.get("result") or {}).get("dvfs") or {}).get("points") or []
        table = per_clock(requests, sweep)
        return cls(job, requests, table, optima(table), pareto(table), correlations(requests))

    @classmethod
    def from_jobs(cls, jobs: list[tuple[dict[str, Any], pd.DataFrame]]) -> Report:
        """One report of several llm jobs (engines or nodes compared as clocks are): their requests
        together, each with its ``job`` id; simulated if any job was."""
        if len(jobs) == 1:
            return cls.from_job(*jobs[0])
        for job, requests in jobs:
            if requests.empty:
                raise ValueError(f"job {job.get('id')} has no requests: only llm jobs can be reported on")
        requests = pd.concat(
            [with_engine(r).assign(job=str(j.get("id"))) for j, r in jobs], ignore_index=True
        )
        points = [p for j, _ in jobs for p in ((j.get("result") or {}).get("dvfs") or {}).get("points") or []]
        methods = {((j.get("result") or {}).get("llm") or {}).get("energy_method") for j, _ in jobs}
        combined = {
            "id": "+".join(str(j.get("id")) for j, _ in jobs),
            "name": " + ".join(str(j.get("name")) for j, _ in jobs),
            "simulated": any(bool(j.get("simulated")) for j, _ in jobs),
            "result": {
                "dvfs": {"points": points},
                "llm": {"energy_method": "; ".join(sorted(map(str, methods)))},
            },
        }
        table = per_clock(requests, points)
        return cls(combined, requests, table, optima(table), pareto(table), correlations(requests))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "clocks": self.clocks,
            "optima": self.optima,
            "pareto": self.pareto,
            "correlations": self.correlations,
        }
