"""The study's analysis: optima, savings within latency budgets, the Pareto frontier, feature correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.report import Report, correlations, optima, pareto, per_clock, savings

pytest.importorskip("scipy")


def requests_at(clocks: dict[int, tuple[float, float]], per_clock_n: int = 4) -> pd.DataFrame:
    """Requests of one group: at each clock, energy and latency as given (plus a feature tracking energy)."""
    rows = []
    for mhz, (energy, latency) in clocks.items():
        for i in range(per_clock_n):
            rows.append({
                "model": "m", "task": "qa", "batch_size": 1,
                "sm_clock_mhz": mhz, "observed_sm_clock_mhz": mhz,
                "energy_j": energy + 0.1 * (i - 1.5), "latency_s": latency, "ttft_s": 0.01, "tpot_s": 0.001,
                "quality": 0.5, "input_tokens": 10 + i, "input_chars": 50 + 5 * i, "token_entropy": 2.0 + i,
            })  # fmt: skip
    return pd.DataFrame(rows)


# U-shaped energy, latency falling with the clock; 1980 MHz was power-capped (flagged).
CLOCKS = {600: (10.0, 1.0), 900: (7.0, 0.70), 1200: (6.0, 0.55), 1500: (6.5, 0.50), 1980: (8.0, 0.45)}
SWEEP = [{"model": "m", "task": "qa", "batch_size": 1, "sm_clock_mhz": 1980, "flagged": True}]


def test_optima_skip_flagged_points_and_savings_respect_the_latency_budget() -> None:
    table = per_clock(requests_at(CLOCKS), SWEEP)
    assert list(table["clock_mhz"]) == [600, 900, 1200, 1500, 1980]
    assert list(table["flagged"]) == [False, False, False, False, True]
    assert table.loc[2, "energy_j"] == pytest.approx(6.0)
    assert table["gpu_power_w"].isna().all()  # no point windows here: not made up from energy over latency
    (row,) = optima(table).to_dict("records")
    assert row["default_clock_mhz"] == 1980 and row["energy_optimal_mhz"] == 1200
    assert row["edp_optimal_mhz"] == 1500  # 6.5 x 0.50 = 3.25 < 6.0 x 0.55 = 3.3
    by_budget = savings(table, requests_at(CLOCKS)).set_index("latency_budget")
    assert pd.isna(by_budget.loc[1.0, "clock_mhz"])  # nothing unflagged is as fast as 0.45 s
    assert by_budget.loc[1.25, "clock_mhz"] == 1200 and by_budget.loc[1.25, "saving"] == pytest.approx(0.25)
    assert pd.isna(by_budget.loc[1.1, "clock_mhz"])  # 1500 MHz takes 0.50 s > 1.1 x 0.45 s
    assert by_budget.loc[1.5, "clock_mhz"] == 1200


def test_the_pareto_frontier_keeps_only_undominated_points() -> None:
    table = per_clock(requests_at(CLOCKS), SWEEP)
    front = pareto(table)
    assert list(front["clock_mhz"]) == [1500, 1200]  # 600 and 900 are slower and costlier than 1200


def test_correlations_carry_intervals_and_find_a_tracking_feature() -> None:
    frame = requests_at({1200: (6.0, 0.55)}, per_clock_n=30)
    frame["token_entropy"] = np.arange(30, dtype=float)
    frame["energy_j"] = 1.0 + 0.5 * frame["token_entropy"]
    table = correlations(frame)
    row = table.query("model == 'all' and feature == 'token_entropy' and target == 'energy_j'")
    assert row["n"].item() == 30 and row["spearman_rho"].item() == pytest.approx(
        1.0
    )  # energy follows entropy
    noisy = frame.assign(energy_j=frame["energy_j"] + np.random.default_rng(0).normal(0, 2, 30))
    row = correlations(noisy).query("model == 'all' and feature == 'token_entropy' and target == 'energy_j'")
    low, high = row["pearson_ci_low"].item(), row["pearson_ci_high"].item()
    assert low < row["pearson_r"].item() < high and low > 0 and row["pearson_significant"].item()


def test_a_job_without_requests_cannot_be_reported() -> None:
    with pytest.raises(ValueError, match="only llm jobs"):
        Report.from_job({"id": "j1"}, pd.DataFrame())


def test_several_jobs_compare_engines_as_clocks_are_compared() -> None:
    eager = requests_at(CLOCKS)  # a job from before engines: no engine column, so eager
    compiled = requests_at({mhz: (energy / 2, latency / 3) for mhz, (energy, latency) in CLOCKS.items()})
    compiled["engine"] = "compiled"
    jobs = [
        ({"id": "a1", "name": "eager", "result": {"dvfs": {"points": SWEEP}}}, eager),
        ({"id": "b2", "name": "compiled", "simulated": True, "result": {"dvfs": {"points": []}}}, compiled),
    ]
    report = Report.from_jobs(jobs)
    assert report.job["id"] == "a1+b2" and report.simulated  # simulated if any job was
    assert set(report.requests["job"]) == {"a1", "b2"}
    best = optima(report.clocks).set_index("engine")
    assert best.loc["eager", "energy_optimal_mhz"] == best.loc["compiled", "energy_optimal_mhz"] == 1200
    flagged = report.clocks[report.clocks["flagged"]]
    assert list(flagged["engine"]) == ["eager"]  # the eager job's capped point, not the compiled one's
    compiled_rows = report.clocks[report.clocks["engine"] == "compiled"].set_index("clock_mhz")
    assert compiled_rows.loc[1200, "energy_j"] == pytest.approx(3.0)


def test_a_group_is_named_by_what_its_job_had() -> None:
    from gpuprof.client.report import group_label

    assert group_label("llama-3.2-1b", "eager", "qa", 8) == "llama-3.2-1b (eager) / qa / batch 8"
    assert group_label(None, "command", pd.NA, float("nan")) == "command"  # a command job's requests
