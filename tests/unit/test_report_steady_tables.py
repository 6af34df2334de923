"""The report's steady-state part: a sweep point's energy per token per phase with its bound and its t
interval over windows, tokens per second and power with their intervals over windows, the per-request
figures beside them, the energy-optimal clock per phase and whether it stands apart from the top clock;
and a report without steady figures left as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.commands.report import write_job_report
from gpuprof.client.report import Report
from gpuprof.client.report_page import _plots, write_report

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

# Per clock: (prefill J/token, its bound, its windows' t half width), the same for decode; 1980 MHz ran
# capped (flagged). Decode's optimum (900) stands far apart from the top clock; prefill's (1410) within
# the bound of its neighbours.
STEADY = {
    900: ((0.50, 0.02, 0.01), (0.20, 0.002, 0.001)),
    1410: ((0.48, 0.03, 0.01), (0.26, 0.002, 0.003)),
    1980: ((0.49, 0.03, 0.02), (0.33, 0.003, 0.002)),
}
FLAGGED = {1980}
BATCH = 4


def point(mhz: int, index: int, steady: bool = True) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for phase, (value, bound, half) in zip(("prefill", "decode"), STEADY[mhz], strict=True):
        figures |= {
            f"{phase}_j_per_token": value,
            f"{phase}_j_per_token_uncertainty": bound,
            f"{phase}_j_per_token_ci95": half,
            f"{phase}_tokens_per_s": 1000.0 if phase == "prefill" else 100.0,
            f"{phase}_mean_power_w": mhz / 4,
            f"{phase}_windows": 3,
        }
    return {
        "point": f"p{index}", "model": "m", "engine": "eager", "task": "qa", "batch_size": BATCH,
        "sm_clock_mhz": mhz, "observed_sm_clock_mhz": mhz - 250 if mhz in FLAGGED else mhz,
        "flagged": mhz in FLAGGED, "unit": "request", "requests": 8, "energy_j": 5.0, "energy_j_ci95": 0.1,
        "latency_s": 0.5, "edp_js": 2.5, **(figures if steady else {}),
    }  # fmt: skip


def windows(index: int, mhz: int) -> list[dict[str, Any]]:
    """Three steady windows a phase at the point: tokens per second and power differ a little."""
    out = []
    for phase, tokens in (("prefill", 512), ("decode", 64)):
        for n, (seconds, watts) in enumerate([(0.50, mhz / 4 - 1), (0.52, mhz / 4), (0.54, mhz / 4 + 1)]):
            out.append({
                "name": f"steady_{phase}", "attrs": {"id": f"m0.bs{BATCH}.p{index}.s{n}", "tokens": tokens},
                "duration_s": seconds, "mean_power_w": watts,
            })  # fmt: skip
    return out


def requests(n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"model": "m", "engine": "eager", "task": "qa", "batch_size": BATCH, "point": f"p{index}",
         "batch": f"p{index}.b{i // BATCH}", "sm_clock_mhz": mhz, "observed_sm_clock_mhz": mhz,
         "energy_j": 5 + rng.normal(0, 0.2), "latency_s": 0.5 + rng.normal(0, 0.01), "ttft_s": 0.01,
         "tpot_s": 0.001, "quality": 0.0, "input_tokens": 20 + i, "output_tokens": 17,
         "prefill_energy_j": 0.3 * (20 + i) + rng.normal(0, 0.1), "decode_energy_j": 0.5 * 16,
         "short_window": i % 2 == 0}
        for index, mhz in enumerate(STEADY)
        for i in range(n)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def job(steady: bool = True) -> dict[str, Any]:
    return {
        "id": "01st", "name": "sweep", "state": "succeeded", "simulated": True,
        "result": {
            "llm": {"energy_method": "fused"},
            "windows": [w for index, mhz in enumerate(STEADY) for w in windows(index, mhz)] if steady else [],
            "dvfs": {"points": [point(mhz, index, steady) for index, mhz in enumerate(STEADY)]},
        },
    }  # fmt: skip


@pytest.fixture
def report() -> Report:
    return Report.from_job(job(), requests())


def test_the_steady_table_holds_each_points_figures_and_intervals(report: Report) -> None:
    from scipy import stats

    table = report.steady.set_index(["phase", "clock_mhz"])
    assert len(table) == 6 and set(table["job"]) == {"01st"}
    row = table.loc[("decode", 1410)]
    assert row["j_per_token"] == 0.26 and row["windows"] == 3 and not row["flagged"]
    assert (row["j_per_token_ci_low"], row["j_per_token_ci_high"]) == pytest.approx((0.257, 0.263))
    assert (row["j_per_token_bound_low"], row["j_per_token_bound_high"]) == pytest.approx((0.258, 0.262))
    assert (
        table.loc[("prefill", 1980), "flagged"]
        and table.loc[("prefill", 1980), "observed_sm_clock_mhz"] == 1730
    )
    # Tokens per second and power: the t interval over the point's three windows.
    rates = [64 / 0.50, 64 / 0.52, 64 / 0.54]
    expected = stats.t.interval(0.95, 2, loc=np.mean(rates), scale=stats.sem(rates))
    assert (row["tokens_per_s_ci_low"], row["tokens_per_s_ci_high"]) == pytest.approx(expected)
    assert row["tokens_per_s"] == 100.0 and row["mean_power_w"] == 1410 / 4
    power = [1410 / 4 - 1, 1410 / 4, 1410 / 4 + 1]
    expected = stats.t.interval(0.95, 2, loc=np.mean(power), scale=stats.sem(power))
    assert (row["mean_power_w_ci_low"], row["mean_power_w_ci_high"]) == pytest.approx(expected)
    # The per-request figures beside: prefill over input tokens, decode over the tokens after the first.
    frame = requests()
    mine = frame[frame["point"] == "p1"]
    assert row["requests"] == 8 and row["request_j_per_token"] == pytest.approx(0.5)  # 8 J over 16 tokens
    prefill = table.loc[("prefill", 1410)]
    per_token = mine["prefill_energy_j"] / mine["input_tokens"]
    assert prefill["request_j_per_token"] == pytest.approx(per_token.mean())
    low, high = stats.t.interval(0.95, 7, loc=per_token.mean(), scale=stats.sem(per_token))
    assert (prefill["request_j_per_token_ci_low"], prefill["request_j_per_token_ci_high"]) == pytest.approx(
        (low, high)
    )
    assert prefill["short_window_share"] == 0.5


def test_the_optimum_per_phase_says_whether_it_stands_apart_from_the_top_clock(report: Report) -> None:
    optima = report.steady_optima.set_index("phase")
    decode = optima.loc["decode"]
    assert decode["top_clock_mhz"] == 1980 and decode["top_flagged"]
    assert decode["energy_optimal_mhz"] == 900 and decode["separated"]
    assert decode["saving"] == pytest.approx(1 - 0.20 / 0.33)
    assert (decode["j_per_token_low"], decode["j_per_token_high"]) == pytest.approx((0.198, 0.202))
    prefill = optima.loc["prefill"]  # 0.48 ± 0.03 against 0.49 ± 0.03: the wider interval (the bound)
    assert prefill["energy_optimal_mhz"] == 1410 and not prefill["separated"]
    assert (prefill["j_per_token_low"], prefill["j_per_token_high"]) == pytest.approx((0.45, 0.51))
    (line,) = [line for line in _lines(report) if "steady state" in line]
    assert (
        "decode: energy-optimal 900 MHz (200 mJ/token), 39.4% less energy per token than the top clock 1980 "
        "MHz (flagged: the GPU ran below it), separated from it by more than their intervals"
    ) in line
    assert "prefill: energy-optimal 1410 MHz" in line and "not separated from the top clock" in line


def _lines(report: Report) -> list[str]:
    from gpuprof.client.report_steady_page import steady_lines

    return steady_lines(report)


def test_an_optimum_at_the_top_clock_is_said_so() -> None:
    data = job()
    for p in data["result"]["dvfs"]["points"]:
        p["flagged"] = False
        p["decode_j_per_token"] = 1.0 - p["sm_clock_mhz"] / 10_000  # cheaper as the clock rises
    report = Report.from_job(data, requests())
    decode = report.steady_optima.set_index("phase").loc["decode"]
    assert decode["energy_optimal_mhz"] == 1980 and pd.isna(decode["separated"])
    assert "decode: energy-optimal at the top clock, 1980 MHz (802 mJ/token)" in _lines(report)[0]


def test_the_files_page_and_command_carry_the_steady_figures(
    tmp_path: Path, report: Report, capsys: pytest.CaptureFixture[str]
) -> None:
    write_report(report, tmp_path)
    steady = pd.read_csv(tmp_path / "steady.csv")
    numeric = [c for c in steady.columns if c.startswith(("j_per_token", "tokens_per_s", "mean_power_w"))]
    assert len(numeric) == 11 and all(steady[c].dtype == "float64" for c in numeric)
    optima = pd.read_csv(tmp_path / "steady_optima.csv")
    assert list(optima["energy_optimal_mhz"]) == [1410, 900] and optima["j_per_token_low"].dtype == "float64"
    for name in ("energy_per_token", "tokens_per_s", "power"):
        assert (tmp_path / f"steady_{name}_vs_clock.png").stat().st_size > 0, name
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Energy-optimal clock per phase at steady state (SIMULATED)</h2>" in page
    assert "separated from it by more than their intervals" in page and "<h2>steady.csv</h2>" in page
    assert "Per-request figures at 3 point(s) include requests whose prefill or decode is shorter" in page

    jobs = [(job(), requests())]
    write_job_report(jobs, str(tmp_path / "again"), as_json=False)
    out = capsys.readouterr().out
    assert "m (eager) / qa / batch 4, steady state: prefill: energy-optimal 1410 MHz" in out
    write_job_report(jobs, str(tmp_path / "again"), as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["simulated"] is True  # the report's figures say where they come from, as its page does
    decode = printed["steady_optima"][1]
    assert decode["phase"] == "decode" and decode["separated"] is True
    assert isinstance(decode["j_per_token_low"], float) and decode["energy_optimal_mhz"] == 900


def test_every_steady_plot_has_intervals_and_readable_text(report: Report) -> None:
    from matplotlib.container import ErrorbarContainer
    from matplotlib.text import Text
    from test_report_page import RecordingPyplot

    recorder = RecordingPyplot()
    _plots(report, recorder)
    steady = [
        f for f in recorder.figures if "steady state" in (f._suptitle.get_text() if f._suptitle else "")
    ]
    assert len(steady) == 3
    for figure in steady:
        assert "SIMULATED" in figure._suptitle.get_text()
        assert min(t.get_fontsize() for t in figure.findobj(Text) if t.get_text()) >= 8
        for axes in figure.axes:  # prefill and decode
            bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
            assert bars and all(bar.has_yerr for bar in bars)
            assert any(len(segments.get_segments()) for bar in bars for segments in bar.lines[2])
    for figure in recorder.figures:
        recorder.plt.close(figure)


def test_a_sweep_without_steady_figures_reports_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = Report.from_job(job(steady=False), requests())
    assert plain.steady.empty and plain.steady_optima.empty
    assert list(plain.tables()) == ["clocks", "optima", "savings", "pareto", "correlations"]
    written = write_report(plain, tmp_path)
    assert not any("steady" in Path(path).name for path in written["plots"] + written["tables"])
    page = (tmp_path / "report.html").read_text()
    assert "steady" not in page.lower()
    write_job_report([(job(steady=False), requests())], str(tmp_path / "cli"), as_json=False)
    assert "steady" not in capsys.readouterr().out.replace(str(tmp_path), "")
    write_job_report([(job(steady=False), requests())], str(tmp_path / "cli"), as_json=True)
    assert set(json.loads(capsys.readouterr().out)) == {"tables", "plots", "page", "simulated"}


def test_points_without_steady_keys_give_no_steady_rows() -> None:
    burn_points = [{"point": "p0", "kind": "gemm", "size": 4096, "sm_clock_mhz": 900, "flagged": False}]
    assert Report.from_job({"id": "b", "result": {"dvfs": {"points": burn_points}}}, requests()).steady.empty
    older = job()  # a result from before steady figures joined the points
    for p in older["result"]["dvfs"]["points"]:
        for key in [k for k in p if k.startswith(("prefill_", "decode_"))]:
            del p[key]
    assert Report.from_job(older, requests()).steady.empty
