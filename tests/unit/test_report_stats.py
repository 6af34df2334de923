"""The report's numbers: t, order-statistics, bootstrap and Fieller intervals, the GPU's measured power, and
the energy saved against the default clock under latency and quality constraints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.report import QUALITY_TOLERANCE, Report, per_clock, savings
from gpuprof.client.report_stats import bootstrap_interval, median_interval, ratio_interval, t_interval

stats = pytest.importorskip("scipy.stats")

N = 16
SPREAD = np.linspace(-0.3, 0.3, N)  # mean zero: each clock's mean energy is exactly as given


def sweep(points: dict[int, tuple[float, float, float]], model: str = "m") -> pd.DataFrame:
    """N requests per clock of one group: energy around the mean given, latency and quality as given."""
    rows = [
        {"model": model, "engine": "eager", "task": "qa", "batch_size": 1, "point": f"p{mhz}",
         "batch": f"p{mhz}.b{i}", "sm_clock_mhz": mhz, "observed_sm_clock_mhz": mhz,
         "energy_j": energy + SPREAD[i], "latency_s": latency, "ttft_s": latency / 4, "tpot_s": 0.01,
         "quality": quality}
        for mhz, (energy, latency, quality) in points.items()
        for i in range(N)
    ]  # fmt: skip
    return pd.DataFrame(rows)


# Energy U-shaped, latency falling with the clock; 1980 MHz, the highest, is the default.
POINTS = {
    600: (10.0, 1.00, 0.80),
    900: (7.0, 0.70, 0.80),
    1200: (6.0, 0.55, 0.80),
    1500: (6.5, 0.50, 0.80),
    1980: (8.0, 0.45, 0.80),
}
CAPPED = [{"model": "m", "task": "qa", "batch_size": 1, "sm_clock_mhz": 1980, "flagged": True}]


def test_a_mean_s_interval_uses_student_s_t_not_1_96() -> None:
    x = np.arange(16.0)
    low, high = t_interval(x)
    half = 2.131449545559323 * x.std(ddof=1) / 4  # t(0.975, 15), tabulated
    assert (low, high) == pytest.approx((7.5 - half, 7.5 + half))
    assert high - 7.5 > 1.96 * x.std(ddof=1) / 4  # wider than the normal approximation
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0) and all(map(math.isnan, t_interval([1.0])))


def test_a_median_s_interval_is_the_order_statistics_that_cover_it() -> None:
    values = np.random.default_rng(1).permutation(np.arange(16.0) * 1.5)
    assert median_interval(values) == (4.5, 18.0)  # x(4) and x(13): P(B <= 3) = 0.0106 <= 0.025 < P(B <= 4)
    assert 1 - 2 * stats.binom.cdf(3, 16, 0.5) >= 0.95
    assert median_interval([5.0, 1.0, 4.0, 2.0, 3.0, 6.0]) == (1.0, 6.0)  # n = 6: the extremes, 96.9%
    assert all(map(math.isnan, median_interval([1.0, 2.0, 3.0, 4.0, 5.0])))  # n = 5 cannot reach 95%


def test_fieller_s_interval_solves_its_equation_and_covers_the_ratio() -> None:
    rng = np.random.default_rng(2)
    num, den = rng.normal(6, 0.5, 16), rng.normal(8, 0.6, 12)
    low, high = ratio_interval(num, den)
    a, b = num.mean(), den.mean()
    va, vb = num.var(ddof=1) / 16, den.var(ddof=1) / 12
    r = a / b
    df = (va + r**2 * vb) ** 2 / (va**2 / 15 + (r**2 * vb) ** 2 / 11)
    t = stats.t.ppf(0.975, df)
    assert low < r < high
    for edge in (low, high):  # at each end, mean(num) - R mean(den) is exactly t standard errors from zero
        assert abs(a - edge * b) == pytest.approx(t * math.sqrt(va + edge**2 * vb))
    # With a precise denominator it is the delta method's interval.
    big_num, big_den = rng.normal(6, 0.5, 20000), rng.normal(8, 0.01, 20000)
    low, high = ratio_interval(big_num, big_den)
    r, se = big_num.mean() / big_den.mean(), big_num.std(ddof=1) / math.sqrt(20000) / big_den.mean()
    assert (low, high) == pytest.approx((r - 1.96 * se, r + 1.96 * se), rel=1e-3)
    assert all(map(math.isnan, ratio_interval([1.0, 2.0], [-1.0, 1.1])))  # the denominator may be zero
    covered = 0
    for _ in range(2000):
        low, high = ratio_interval(rng.normal(6, 1, 16), rng.normal(8, 1, 16))
        covered += low <= 0.75 <= high
    assert 0.93 < covered / 2000 < 0.97


def test_a_bootstrap_interval_is_reproducible_and_matches_t_for_a_mean() -> None:
    energy = np.random.default_rng(3).normal(10, 2, 400)
    latency = np.full(400, 0.5)

    def edp(e: np.ndarray, lat: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(e, axis=axis) * np.median(lat, axis=axis)

    first = bootstrap_interval((energy, latency), edp, paired=True)
    assert first == bootstrap_interval((energy, latency), edp, paired=True)  # a fixed seed
    low, high = t_interval(energy)
    assert first == pytest.approx((0.5 * low, 0.5 * high), rel=0.01)


def test_every_plotted_figure_has_two_numeric_interval_columns() -> None:
    table = per_clock(sweep(POINTS), [])
    for name in ("energy_j", "latency_s", "ttft_s", "tpot_s", "quality", "gpu_power_w", "edp_js"):
        assert table[f"{name}_ci_low"].dtype == "float64" and table[f"{name}_ci_high"].dtype == "float64"
    row = table.set_index("clock_mhz").loc[1200]
    energies = 6.0 + SPREAD
    assert (row["energy_j_ci_low"], row["energy_j_ci_high"]) == pytest.approx(t_interval(energies))
    assert row["energy_j_ci_high"] - 6.0 == pytest.approx(stats.t.ppf(0.975, 15) * energies.std(ddof=1) / 4)
    assert row["latency_s_ci_low"] == row["latency_s_ci_high"] == 0.55  # every request took 0.55 s
    assert row["edp_js"] == pytest.approx(6.0 * 0.55)
    assert row["edp_js_ci_low"] < 6.0 * 0.55 < row["edp_js_ci_high"]
    assert (row["edp_js_ci_low"], row["edp_js_ci_high"]) == pytest.approx(
        (0.55 * t_interval(energies)[0], 0.55 * t_interval(energies)[1]), rel=0.02
    )


def power_job(windows: list[tuple[str, float, float]]) -> dict[str, object]:
    return {
        "id": "j1",
        "result": {
            "windows": [
                {"name": "point", "attrs": {"id": point}, "mean_power_w": watts, "duration_s": seconds}
                for point, watts, seconds in windows
            ]
        },
    }


def test_the_gpu_s_power_is_the_point_window_s_with_the_batches_spread() -> None:
    requests = sweep({1200: (6.0, 0.5, 0.8)})
    batch_power = 300 + np.array([-10, 10, -6, 6, 0, 0, -2, 2, -4, 4, -8, 8, 1, -1, 3, -3])
    requests["energy_j"] = batch_power * 0.5  # one request per batch: its energy over 0.5 s
    report = Report.from_job(power_job([("p1200", 290.0, 2.0)]), requests)
    (row,) = report.clocks.to_dict("records")
    half = stats.t.ppf(0.975, 15) * batch_power.std(ddof=1) / 4
    assert row["gpu_power_w"] == 290.0  # the window's measurement, not the batches' mean (300 W)
    assert (row["gpu_power_w_ci_low"], row["gpu_power_w_ci_high"]) == pytest.approx((290 - half, 290 + half))
    # A burn or command sweep's points carry their window's power; a study table has none.
    burn = {"id": "j2", "result": {"dvfs": {"points": [{"point": "p1200", "mean_power_w": 250.0}]}}}
    assert Report.from_job(burn, requests).clocks["gpu_power_w"].item() == 250.0
    assert math.isnan(Report.from_job({"id": "j3"}, requests).clocks["gpu_power_w"].item())


def test_two_points_at_one_clock_weigh_their_window_powers_by_length() -> None:
    requests = pd.concat([sweep({1200: (6.0, 0.5, 0.8)}), sweep({1200: (6.0, 0.5, 0.8)}).assign(point="q")])
    report = Report.from_job(power_job([("p1200", 300.0, 3.0), ("q", 400.0, 1.0)]), requests)
    assert report.clocks["gpu_power_w"].item() == pytest.approx(325.0)


def by_budget(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("latency_budget")


def test_savings_against_the_default_clock_within_each_latency_budget() -> None:
    requests = sweep(POINTS)
    rows = by_budget(savings(per_clock(requests, []), requests))
    assert list(rows.index) == [1.0, 1.1, 1.25, 1.5, math.inf]
    assert (rows["default_clock_mhz"] == 1980).all() and rows["quality_checked"].all()
    assert rows.loc[1.0, "clock_mhz"] == 1980 and rows.loc[1.0, "saving"] == 0  # the default is the fastest
    assert rows.loc[1.1, "clock_mhz"] == 1980  # 1500 MHz takes 0.50 s > 1.1 x 0.45 s
    assert rows.loc[1.25, "clock_mhz"] == 1200 and rows.loc[1.25, "saving"] == pytest.approx(0.25)
    assert rows.loc[1.25, "latency_increase"] == pytest.approx(0.55 / 0.45 - 1)
    assert rows.loc[math.inf, "clock_mhz"] == 1200
    low, high = ratio_interval(6.0 + SPREAD, 8.0 + SPREAD)
    assert (rows.loc[1.25, "saving_ci_low"], rows.loc[1.25, "saving_ci_high"]) == pytest.approx(
        (1 - high, 1 - low)
    )
    assert rows.loc[1.25, "saving_ci_low"] < 0.25 < rows.loc[1.25, "saving_ci_high"]
    assert rows["saving_ci_low"].dtype == "float64" and rows["note"].fillna("").eq("").all()


def test_the_quality_tolerance_excludes_the_cheapest_clock() -> None:
    points = {**POINTS, 1200: (6.0, 0.55, 0.70), 1500: (6.5, 0.50, 0.80 - QUALITY_TOLERANCE)}
    requests = sweep(points)
    rows = by_budget(savings(per_clock(requests, []), requests))
    assert rows.loc[1.25, "clock_mhz"] == 1500  # 1200 MHz is cheaper but loses 0.1 of quality
    assert rows.loc[1.25, "saving"] == pytest.approx(1 - 6.5 / 8.0)
    assert "quality excluded 1200 MHz" in rows.loc[1.25, "note"]
    assert rows.loc[math.inf, "clock_mhz"] == 1500  # 6.5 J, then 7.0 J at 900 MHz


def test_no_clock_meets_the_budget_when_the_default_is_capped() -> None:
    points = {**POINTS, 1500: (6.5, 0.50, 0.5)}
    requests = sweep(points)
    rows = by_budget(savings(per_clock(requests, CAPPED), requests))
    for budget in (1.0, 1.1):
        assert pd.isna(rows.loc[budget, "clock_mhz"]) and pd.isna(rows.loc[budget, "saving"])
        assert f"no unflagged clock within {budget:g}x the default's latency" in rows.loc[budget, "note"]
    assert "the default clock is flagged" in rows.loc[1.0, "note"]
    # At 1.25x, 1200 and 1500 MHz are fast enough, but 1500 MHz fails the quality and 1200 MHz passes.
    assert rows.loc[1.25, "clock_mhz"] == 1200
    worse = sweep({**points, 1200: (6.0, 0.55, 0.5)})
    rows = by_budget(savings(per_clock(worse, CAPPED), worse))
    assert pd.isna(rows.loc[1.25, "clock_mhz"])
    assert (
        "no unflagged clock within 1.25x the default's latency and quality within" in rows.loc[1.25, "note"]
    )


def test_quality_cannot_be_checked_for_synthetic_weights_or_without_quality() -> None:
    points = {**POINTS, 1200: (6.0, 0.55, 0.0)}  # a collapse the tolerance would catch on real weights
    requests = sweep(points)
    rows = by_budget(savings(per_clock(requests, [], frozenset({"m"})), requests))
    assert rows.loc[1.25, "clock_mhz"] == 1200 and not rows["quality_checked"].any()
    assert rows["note"].str.startswith("quality not checked: synthetic weights").all()
    blank = sweep(POINTS).assign(quality=math.nan)
    rows = by_budget(savings(per_clock(blank, []), blank))
    assert rows.loc[1.25, "clock_mhz"] == 1200 and rows["note"].str.contains("none measured").all()


def test_a_job_says_which_models_have_synthetic_weights() -> None:
    job = {"id": "j", "spec": {"llm": {"models": [{"arch": "m"}, {"hf": "org/real"}]}}}
    requests = pd.concat([sweep(POINTS), sweep(POINTS, model="org/real")])
    report = Report.from_job(job, requests)
    assert report.synthetic == frozenset({"m"})
    assert report.clocks.groupby("model")["synthetic_weights"].all().to_dict() == {
        "m": True,
        "org/real": False,
    }


def test_gpuprofds_intervals_use_students_t() -> None:
    from gpuprof.daemon.analysis.sweep import t_half_width

    values = np.array([10.0, 12.0, 11.0, 13.0])  # n = 4: t(0.975, 3) = 3.182, not 1.96
    assert t_half_width(values) == pytest.approx(3.1824 * values.std(ddof=1) / 2, rel=1e-4)
    assert t_half_width(np.array([5.0])) is None
