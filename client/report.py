"""The study's analysis of an llm job: energy, latency, GPU power and EDP against clock with their intervals,
optima, the energy saved against the default clock within latency budgets and a quality tolerance, the
Pareto frontier, and how input features correlate with energy and latency.

``Report.from_job(job, requests)`` takes a finished job's map and its requests table (``Client.job`` and
``Client.requests``); every table is a DataFrame, and ``gpuprof report`` writes them as CSV with plots and
one HTML page (``report_page``). The rules, and how each interval is computed, are in docs/report.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .report_stats import (
    CONFIDENCE,
    NO_INTERVAL,
    Interval,
    bootstrap_interval,
    finite,
    median_interval,
    ratio_interval,
    spearman_interval,
    t_interval,
)
from .report_steady import steady_optima, steady_table
from .wire.llm_spec import ModelRef

__all__ = [
    "CONFIDENCE",
    "FEATURES",
    "LATENCY_BUDGETS",
    "QUALITY_TOLERANCE",
    "Report",
    "group_label",
    "median_interval",
    "ratio_interval",
    "t_interval",
]

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
QUALITY_TOLERANCE = 0.01  # mean quality allowed below the default clock's, in the metric's own units


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


def _keyed(requests: pd.DataFrame) -> pd.DataFrame:
    return with_engine(requests).assign(clock_mhz=_clock_column(requests))


def rows_of(frame: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal ``key``'s values, a missing value matching a missing one."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column].isna() if pd.isna(value) else (frame[column] == value).fillna(False)
    return frame[mask.astype(bool)]


def synthetic_models(job: dict[str, Any], requests: pd.DataFrame) -> frozenset[str]:
    """The models with synthetic (random) weights, whose quality measures nothing: ``arch:`` models of the
    spec (``ModelRef.synthetic``), and those the result or the requests say were loaded so."""
    names: set[str] = set()
    for one in job.get("jobs") or [job]:
        for entry in ((one.get("spec") or {}).get("llm") or {}).get("models") or []:
            kinds = [kind for kind in ("arch", "hf", "path") if isinstance(entry, dict) and kind in entry]
            if kinds and ModelRef(kinds[0], str(entry[kinds[0]])).synthetic:
                names.add(str(entry[kinds[0]]))
        for model in ((one.get("result") or {}).get("llm") or {}).get("models") or []:
            if model.get("model_source") == "arch" or str(model.get("weights") or "").startswith("synthetic"):
                names.add(str(model.get("model")))
    if "model" in requests:
        source = requests.get("model_source", pd.Series(index=requests.index, dtype=object))
        weights = requests.get("weights", pd.Series(index=requests.index, dtype=object))
        marked = (source == "arch").fillna(False) | weights.astype(str).str.startswith("synthetic")
        names |= set(requests.loc[marked.astype(bool), "model"].dropna().astype(str))
    return frozenset(names)


def point_power(job: dict[str, Any]) -> pd.DataFrame:
    """The GPU's measured mean power over each point's window (``point``, ``point_power_w``,
    ``point_window_s``): from the result's ``point`` windows, else the sweep points that carry it."""
    result = job.get("result") or {}
    windows = [w for w in result.get("windows") or [] if w.get("name") == "point" and w.get("attrs")]
    rows = [
        {
            "point": str(w["attrs"]["id"]),
            "point_power_w": w["mean_power_w"],
            "point_window_s": w["duration_s"],
        }
        for w in windows
        if w["attrs"].get("id") is not None and w.get("mean_power_w") is not None
    ]
    if not rows:
        rows = [
            {"point": str(p["point"]), "point_power_w": p["mean_power_w"], "point_window_s": p.get("seconds")}
            for p in (result.get("dvfs") or {}).get("points") or []
            if p.get("point") is not None and p.get("mean_power_w") is not None
        ]
    frame = pd.DataFrame(rows, columns=["point", "point_power_w", "point_window_s"])
    return frame.drop_duplicates("point").astype({"point_power_w": float, "point_window_s": float})


def with_point_power(job: dict[str, Any], requests: pd.DataFrame) -> pd.DataFrame:
    """The requests with their point's measured GPU power (NaN where the job does not have it)."""
    requests = requests.drop(columns=["point_power_w", "point_window_s"], errors="ignore")
    if "point" not in requests:
        return requests.assign(point_power_w=math.nan, point_window_s=math.nan)
    power = point_power(job)
    keys = requests["point"].astype(str)
    indexed = power.set_index("point")
    return requests.assign(
        point_power_w=keys.map(indexed["point_power_w"]).astype(float).to_numpy(),
        point_window_s=keys.map(indexed["point_window_s"]).astype(float).to_numpy(),
    )


def _gpu_power(group: pd.DataFrame) -> tuple[float, Interval]:
    """A row's GPU power (its points' window powers, weighted by their windows' length) and its interval:
    that power plus or minus the t half width of the mean over its batches of each batch's power."""
    if "point_power_w" not in group:
        return math.nan, NO_INTERVAL
    points = group.drop_duplicates([c for c in ("job", "point") if c in group]).dropna(
        subset=["point_power_w"]
    )
    if points.empty:
        return math.nan, NO_INTERVAL
    weights = points["point_window_s"].fillna(1.0).to_numpy(dtype=float)
    power = float(np.average(points["point_power_w"].to_numpy(dtype=float), weights=weights))
    if "batch" not in group:
        return power, NO_INTERVAL
    batches = group.groupby([c for c in ("job", "batch") if c in group], dropna=True)
    per_batch = batches["energy_j"].sum() / batches["latency_s"].first()
    low, high = t_interval(per_batch)
    half = (high - low) / 2
    return power, (power - half, power + half)


def _ci(name: str, interval: Interval) -> dict[str, float]:
    return {f"{name}_ci_low": interval[0], f"{name}_ci_high": interval[1]}


def _median(name: str, group: pd.DataFrame) -> dict[str, float]:
    values = finite(group[name]) if name in group else np.zeros(0)
    return {name: float(np.median(values)) if values.size else math.nan, **_ci(name, median_interval(values))}


def _figures(group: pd.DataFrame) -> dict[str, Any]:
    """One group x clock's figures, each with its interval (docs/report.md)."""
    energy = group["energy_j"].astype(float)
    latency = group["latency_s"].astype(float)
    quality = finite(group["quality"]) if "quality" in group else np.zeros(0)
    both = pd.DataFrame({"e": energy, "l": latency}).dropna()
    batch_keys = [c for c in ("job", "batch") if c in group]  # a batch id is its job's own
    edp = float(energy.mean() * latency.median())
    power, power_ci = _gpu_power(group)
    return {
        "requests": len(group),
        "batches": len(group[batch_keys].drop_duplicates()) if "batch" in group else pd.NA,
        "energy_j": float(energy.mean()),
        "energy_j_std": float(energy.std()),
        **_ci("energy_j", t_interval(energy)),
        "latency_s": float(latency.median()),
        **_ci("latency_s", median_interval(latency)),
        **_median("ttft_s", group),
        **_median("tpot_s", group),
        "observed_sm_clock_mhz": float(group["observed_sm_clock_mhz"].astype(float).median()),
        "quality": float(quality.mean()) if quality.size else math.nan,
        **_ci("quality", t_interval(quality)),
        "gpu_power_w": power,
        **_ci("gpu_power_w", power_ci),
        "edp_js": edp,
        **_ci(
            "edp_js",
            bootstrap_interval(
                (both["e"].to_numpy(), both["l"].to_numpy()),
                lambda e, lat, axis: np.mean(e, axis=axis) * np.median(lat, axis=axis),
                paired=True,
            ),
        ),
    }


def per_clock(
    requests: pd.DataFrame, sweep_points: list[dict[str, Any]], synthetic: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """One row per model x engine x task x batch size x clock: means and medians with their intervals, the
    GPU's measured power, EDP, whether the sweep flagged the point and whether the model's weights are
    synthetic."""
    frame = _keyed(requests)
    rows = [
        {**dict(zip([*GROUP, "clock_mhz"], key, strict=True)), **_figures(group)}
        for key, group in frame.groupby([*GROUP, "clock_mhz"], dropna=False)
    ]
    table = pd.DataFrame(rows).astype(frame[[*GROUP, "clock_mhz"]].dtypes.to_dict())
    table = table.astype({"requests": "Int64", "batches": "Int64"})
    keys = ("model", "engine", "task", "batch_size", "sm_clock_mhz")
    flagged = {
        tuple(p.get(k) or ("eager" if k == "engine" else None) for k in keys): p.get("flagged")
        for p in sweep_points
    }
    table["flagged"] = [
        bool(flagged.get((r.model, r.engine, r.task, r.batch_size, r.clock_mhz), False))
        for r in table.itertuples()
    ]
    table["synthetic_weights"] = table["model"].astype(object).isin(synthetic).astype(bool)
    return table.sort_values([*GROUP, "clock_mhz"]).reset_index(drop=True)


def _least(group: pd.DataFrame, column: str) -> pd.Series:
    """The row with the least ``column`` (the first of equals)."""
    return group.sort_values(column, kind="stable").iloc[0]


def _default(group: pd.DataFrame) -> pd.Series:
    """The default clock's row: the highest clock measured, what an unlocked GPU runs at."""
    return group.sort_values("clock_mhz").iloc[-1]


def optima(table: pd.DataFrame) -> pd.DataFrame:
    """Per group: the default clock and the energy- and EDP-optimal clocks among unflagged points."""
    rows = []
    for key, group in table.groupby(GROUP, dropna=False):
        default = _default(group)
        usable = group[~group["flagged"]]
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        row["default_clock_mhz"] = default["clock_mhz"]
        row["default_energy_j"] = default["energy_j"]
        row["default_latency_s"] = default["latency_s"]
        row["energy_optimal_mhz"] = _least(usable, "energy_j")["clock_mhz"] if len(usable) else None
        row["edp_optimal_mhz"] = _least(usable, "edp_js")["clock_mhz"] if len(usable) else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    clocks = [name for name in frame.columns if "_mhz" in str(name)]
    return frame.astype(dict.fromkeys(clocks, "Int64"))  # whole MHz; <NA> where no point qualifies


SYNTHETIC_QUALITY = "quality not checked: synthetic weights, whose answers measure nothing"
NO_QUALITY = "quality not checked: none measured (no gold answers)"


def _quality_rule(group: pd.DataFrame, default: pd.Series) -> tuple[pd.Series, str | None]:
    """Which clocks keep quality within the tolerance of the default's, and why it was not checked if not."""
    if bool(default["synthetic_weights"]):
        return pd.Series(True, index=group.index), SYNTHETIC_QUALITY
    if pd.isna(default["quality"]):
        return pd.Series(True, index=group.index), NO_QUALITY
    floor = default["quality"] - QUALITY_TOLERANCE - 1e-12  # a clock exactly at the tolerance passes
    return (group["quality"] >= floor).fillna(False).astype(bool), None


def _mhz_list(rows: pd.DataFrame) -> str:
    return ", ".join(f"{mhz:g}" for mhz in rows["clock_mhz"].astype(float)) + " MHz"


def savings(table: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """Per group and latency budget (and with no budget): the unflagged clock of least mean energy whose
    median latency is within the budget times the default clock's and whose mean quality is within
    QUALITY_TOLERANCE of the default's, the energy it saves against the default with Fieller's interval,
    and the latency it adds with a bootstrap interval; why no clock qualifies where none does."""
    frame = _keyed(requests)
    rows = []
    for key, group in table.groupby(GROUP, dropna=False):
        where = dict(zip(GROUP, key, strict=True))
        default = _default(group)
        usable = group[~group["flagged"]]
        passes, unchecked = _quality_rule(usable, default)
        samples = rows_of(frame, where)
        at_default = rows_of(samples, {"clock_mhz": default["clock_mhz"]})
        for budget in (*LATENCY_BUDGETS, math.inf):
            fast = usable[usable["latency_s"] <= budget * default["latency_s"]]
            within = fast[passes.loc[fast.index]]
            notes = [unchecked] if unchecked else []
            if default["flagged"]:
                notes.append(
                    "the default clock is flagged: the GPU ran below it; the saving is against what it gave"
                )
            row: dict[str, Any] = {
                **where,
                "latency_budget": budget,
                "quality_tolerance": QUALITY_TOLERANCE,
                "quality_checked": unchecked is None,
                "default_clock_mhz": default["clock_mhz"],
                "default_energy_j": default["energy_j"],
                "default_latency_s": default["latency_s"],
                "default_quality": default["quality"],
            }
            if within.empty:
                limit = "any latency" if math.isinf(budget) else f"{budget:g}x the default's latency"
                rule = "" if fast.empty else f" and quality within {QUALITY_TOLERANCE:g} of the default's"
                notes.append(f"no unflagged clock within {limit}{rule}")
                rows.append({**row, "note": "; ".join(notes)})
                continue
            best = _least(within, "energy_j")
            dropped = fast[~passes.loc[fast.index] & (fast["energy_j"] < best["energy_j"])]
            if len(dropped):
                notes.append(
                    f"quality excluded {_mhz_list(dropped)} (cheaper, but more than {QUALITY_TOLERANCE:g} "
                    f"below the default's {default['quality']:.3g})"
                )
            at_best = rows_of(samples, {"clock_mhz": best["clock_mhz"]})
            low, high = ratio_interval(at_best["energy_j"], at_default["energy_j"])
            slower = bootstrap_interval(
                (finite(at_best["latency_s"]), finite(at_default["latency_s"])),
                lambda mine, theirs, axis: np.median(mine, axis=axis) / np.median(theirs, axis=axis) - 1,
                paired=False,
            )
            rows.append({
                **row,
                "clock_mhz": best["clock_mhz"],
                "energy_j": best["energy_j"],
                "saving": 1 - best["energy_j"] / default["energy_j"],
                "saving_ci_low": 1 - high,
                "saving_ci_high": 1 - low,
                "latency_s": best["latency_s"],
                "latency_increase": best["latency_s"] / default["latency_s"] - 1,
                **_ci("latency_increase", slower),
                "quality": best["quality"],
                "note": "; ".join(notes),
            })  # fmt: skip
    columns = [
        *GROUP, "latency_budget", "quality_tolerance", "quality_checked", "default_clock_mhz", "clock_mhz",
        "default_energy_j", "energy_j", "saving", "saving_ci_low", "saving_ci_high", "default_latency_s",
        "latency_s", "latency_increase", "latency_increase_ci_low", "latency_increase_ci_high",
        "default_quality", "quality", "note",
    ]  # fmt: skip
    out = pd.DataFrame(rows).reindex(columns=columns).astype(table[GROUP].dtypes.to_dict())
    return out.astype({
        "latency_budget": float, "quality_tolerance": float, "quality_checked": bool,
        "default_clock_mhz": "Int64", "clock_mhz": "Int64", "note": "string",
        **dict.fromkeys(columns[columns.index("default_energy_j"):-1], float),
    })  # fmt: skip


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


def correlations(requests: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman correlation, with intervals, of each input feature with energy and latency,
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
                if n < 4 or pair[feature].nunique() < 2 or pair[target].nunique() < 2:
                    continue
                pearson = stats.pearsonr(pair[feature], pair[target])
                r = float(pearson.statistic)
                r_ci = NO_INTERVAL if abs(r) >= 1 else pearson.confidence_interval(CONFIDENCE)
                rho = float(stats.spearmanr(pair[feature], pair[target]).statistic)
                rho_ci = spearman_interval(rho, n)
                rows.append({
                    **scope, "feature": feature, "target": target, "n": n,
                    "pearson_r": r, "pearson_ci_low": float(r_ci[0]), "pearson_ci_high": float(r_ci[1]),
                    "pearson_significant": bool(r_ci[0] > 0 or r_ci[1] < 0),
                    "spearman_rho": rho, "spearman_ci_low": rho_ci[0], "spearman_ci_high": rho_ci[1],
                    "spearman_significant": bool(rho_ci[0] > 0 or rho_ci[1] < 0),
                })  # fmt: skip
    return pd.DataFrame(rows)


@dataclass
class Report:
    """The analysis tables of one job (or of several, side by side)."""

    job: dict[str, Any]
    requests: pd.DataFrame
    clocks: pd.DataFrame
    optima: pd.DataFrame
    pareto: pd.DataFrame
    correlations: pd.DataFrame
    savings: pd.DataFrame
    synthetic: frozenset[str] = field(default_factory=frozenset)
    steady: pd.DataFrame = field(default_factory=pd.DataFrame)  # report_steady: empty without steady state
    steady_optima: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def simulated(self) -> bool:
        return bool(self.job.get("simulated"))

    @classmethod
    def _build(cls, job: dict[str, Any], requests: pd.DataFrame, points: list[dict[str, Any]]) -> Report:
        synthetic = synthetic_models(job, requests)
        table = per_clock(requests, points, synthetic)
        steady = steady_table(job, requests)
        return cls(
            job, requests, table, optima(table), pareto(table), correlations(requests),
            savings(table, requests), synthetic, steady, steady_optima(steady),
        )  # fmt: skip

    @classmethod
    def from_job(cls, job: dict[str, Any], requests: pd.DataFrame) -> Report:
        if requests.empty:
            raise ValueError(f"job {job.get('id')} has no requests: only llm jobs can be reported on")
        sweep = ((job.get("result") or {}).get("dvfs") or {}).get("points") or []
        return cls._build(job, with_point_power(job, requests), sweep)

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
            [with_point_power(j, with_engine(r)).assign(job=str(j.get("id"))) for j, r in jobs],
            ignore_index=True,
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
            "jobs": [j for j, _ in jobs],
        }
        return cls._build(combined, requests, points)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by file name; the steady-state ones only where the sweep's points have them."""
        steady = {"steady": self.steady, "steady_optima": self.steady_optima} if len(self.steady) else {}
        return {
            "clocks": self.clocks,
            "optima": self.optima,
            "savings": self.savings,
            "pareto": self.pareto,
            "correlations": self.correlations,
            **steady,
        }
