"""The report's page and files: what was measured and on what, the savings stated, the notes a reader
needs (simulated, synthetic quality, no significant correlation, no power), numeric CSV intervals, and
readable tables and plots."""

from __future__ import annotations

import datetime as dt
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpuprof.client.report import Report, correlations
from gpuprof.client.report_page import FONT_PT, _plots, correlation_note, headline, write_report

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

CREATED_NS = int(dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC).timestamp() * 1e9)
CLOCKS = {600: (10.0, 1.00), 900: (7.0, 0.70), 1200: (6.0, 0.55), 1500: (6.5, 0.50), 1980: (8.0, 0.45)}
SPEC_TEXT = "name: sweep\nworkload: llm\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n"


def requests(model: str, quality: dict[int, float] | None = None, n: int = 16) -> pd.DataFrame:
    """A sweep's requests; input features drawn independently of energy (no correlation to find)."""
    rng = np.random.default_rng(0)
    rows = [
        {"model": model, "engine": "eager", "task": "qa", "batch_size": 1, "point": f"p{mhz}",
         "batch": f"p{mhz}.b{i}", "sm_clock_mhz": mhz, "observed_sm_clock_mhz": mhz,
         "energy_j": energy + rng.normal(0, 0.3), "latency_s": latency * (1 + rng.normal(0, 0.01)),
         "ttft_s": 0.01, "tpot_s": 0.001, "quality": (quality or {}).get(mhz, 0.0),
         "input_tokens": float(rng.integers(10, 100)), "token_entropy": rng.normal(3, 1)}
        for mhz, (energy, latency) in CLOCKS.items()
        for i in range(n)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def job(model: dict[str, str], simulated: bool = True, windows: bool = True) -> dict[str, Any]:
    name = next(iter(model.values()))
    weights = "synthetic (random, made on the device)" if "arch" in model else "pretrained"
    return {
        "id": "01abc", "name": "sweep", "state": "succeeded", "gpu": 0, "simulated": simulated,
        "created_ns": CREATED_NS, "started_ns": CREATED_NS + 10**9, "finished_ns": CREATED_NS + 60 * 10**9,
        "spec": {"llm": {"models": [model]}}, "spec_text": SPEC_TEXT,
        "result": {
            "result_version": 1,
            "llm": {
                "energy_method": "fused",
                "models": [{"model": name, "weights": weights, "dtype": "bfloat16",
                            "parameters": 1_235_814_400, "engine": "eager", "attention": "sdpa",
                            "device": "NVIDIA H100 80GB HBM3", "torch_version": "2.9.0"}],
            },
            "windows": [
                {"name": "point", "attrs": {"id": f"p{mhz}"}, "mean_power_w": 100 + mhz / 4,
                 "duration_s": 1.0}
                for mhz in CLOCKS
            ] if windows else [],
        },
    }  # fmt: skip


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Report, str]:
    report = Report.from_job(job({"arch": "llama-3.2-1b-tiny"}), requests("llama-3.2-1b-tiny"))
    write_report(report, tmp_path)
    return report, (tmp_path / "report.html").read_text()


def test_the_page_names_the_gpu_driver_dates_version_and_spec(synthetic: tuple[Report, str]) -> None:
    _, page = synthetic
    assert "NVIDIA H100 80GB HBM3" in page and "GPU 0" in page
    assert "driver" in page and "simulated" in page
    assert "2026-03-04 05:06:07 UTC" in page and "2026-03-04 05:07:07 UTC" in page  # created, finished
    assert f"gpuprof {metadata.version('gpuprof')}" in page
    assert "name: sweep\nworkload: llm" in page  # the spec as submitted
    assert "torch 2.9.0" in page and "1,235.8 M parameters" in page
    assert page.index("class=sim>SIMULATED") < page.index("What was measured")  # first, and prominent


def test_a_real_gpu_s_page_says_what_it_does_not_know(tmp_path: Path) -> None:
    report = Report.from_job(job({"hf": "org/real"}, simulated=False), requests("org/real"))
    write_report(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "SIMULATED" not in page and "<td>driver</td><td>not recorded by the job</td>" in page


def test_synthetic_quality_is_explained_not_plotted(tmp_path: Path, synthetic: tuple[Report, str]) -> None:
    _, page = synthetic
    assert "Quality is not plotted for llama-3.2-1b-tiny: synthetic (random) weights" in page
    assert not (tmp_path / "quality_vs_clock.png").exists()
    assert "quality not checked: synthetic weights" in page
    real = tmp_path / "real"
    quality = {600: 0.7, 900: 0.72, 1200: 0.74, 1500: 0.75, 1980: 0.75}
    write_report(Report.from_job(job({"hf": "org/real"}), requests("org/real", quality)), real)
    assert (real / "quality_vs_clock.png").exists()
    assert "Quality is not plotted" not in (real / "report.html").read_text()


def test_no_significant_correlation_is_said_on_the_page_and_chart(synthetic: tuple[Report, str]) -> None:
    report, page = synthetic
    overall = report.correlations[report.correlations["model"] == "all"]
    assert len(overall) and not overall["spearman_significant"].any()  # the features are noise here
    assert "is significant: every 95% interval spans zero" in page
    figures = recorded_figures(report)
    titles = [ax.get_title() for fig in figures for ax in fig.axes]
    for figure in figures:
        RecordingPyplot().plt.close(figure)
    assert any("none significant: every interval spans zero" in title for title in titles)


def test_a_significant_correlation_is_named() -> None:
    frame = requests("m")
    frame["token_entropy"] = frame["energy_j"] * 2 + np.random.default_rng(1).normal(0, 0.1, len(frame))
    report = Report.from_job({"id": "x"}, frame)
    note = correlation_note(report)
    assert note is not None and "token_entropy with energy_j" in note and "input_tokens" not in note


def test_pearson_intervals_are_fisher_s_z_in_two_numeric_columns() -> None:
    frame = requests("m")
    row = correlations(frame).query("model == 'all' and feature == 'input_tokens' and target == 'energy_j'")
    r, n = row["pearson_r"].item(), row["n"].item()
    half = 1.959963984540054 / math.sqrt(n - 3)
    expected = (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))
    assert (row["pearson_ci_low"].item(), row["pearson_ci_high"].item()) == pytest.approx(expected)
    assert not any(isinstance(v, tuple) for v in row.iloc[0].tolist())


def test_the_csv_files_hold_numeric_intervals(tmp_path: Path, synthetic: tuple[Report, str]) -> None:
    for name in ("clocks", "savings", "correlations"):
        table = pd.read_csv(tmp_path / f"{name}.csv")
        lows = [c for c in table.columns if c.endswith("_ci_low")]
        assert lows and all(table[c].dtype == "float64" for c in lows), name
        assert all(table[c.replace("_low", "_high")].dtype == "float64" for c in lows), name
        assert not table.astype(str).apply(lambda col: col.str.startswith("(")).any().any(), name
        assert table["simulated"].all(), name  # a CSV read without the page still says so


def test_the_gpu_s_power_is_plotted_only_where_it_was_measured(tmp_path: Path) -> None:
    report = Report.from_job(job({"arch": "m"}, windows=False), requests("m"))
    write_report(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "GPU power: not available" in page and not (tmp_path / "power_vs_clock.png").exists()
    measured = Report.from_job(job({"arch": "m"}), requests("m"))
    assert measured.clocks.set_index("clock_mhz")["gpu_power_w"].to_dict() == {
        mhz: 100 + mhz / 4 for mhz in CLOCKS
    }


def test_the_headline_states_the_largest_saving_with_its_interval(synthetic: tuple[Report, str]) -> None:
    report, page = synthetic
    lines = headline(report.savings)
    (any_latency,) = [line for line in lines if line.startswith("At any latency")]
    row = report.savings[np.isinf(report.savings["latency_budget"])].iloc[0]
    assert f"up to {row['saving']:.1%} less energy (95% CI {row['saving_ci_low']:.1%} to" in any_latency
    assert "at 1200 MHz" in any_latency and "against 1980 MHz" in any_latency
    assert any_latency.replace("'", "&#x27;") in page
    assert "llama-3.2-1b-tiny (eager) / qa / batch 1, against 1980 MHz" in page  # the group's sentence


def test_tables_keep_identifiers_on_one_line_and_scroll(synthetic: tuple[Report, str]) -> None:
    _, page = synthetic
    assert "white-space:nowrap" in page and ".scroll{overflow-x:auto" in page
    assert page.count("<div class=scroll>") >= 6  # what was measured, and each table
    assert "<td>llama-3.2-1b-tiny</td>" in page


class RecordingPyplot:
    """pyplot, keeping the figures it makes open so that a test can read them."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.figures = plt, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plt, name)

    def subplots(self, *args: Any, **kwargs: Any) -> Any:
        figure, axes = self.plt.subplots(*args, **kwargs)
        self.figures.append(figure)
        return figure, axes

    def close(self, figure: Any) -> None:
        pass


def recorded_figures(report: Report) -> list[Any]:
    recorder = RecordingPyplot()
    _plots(report, recorder)
    return recorder.figures


def test_every_plot_has_error_bars_and_text_of_at_least_8_pt(synthetic: tuple[Report, str]) -> None:
    from matplotlib.container import BarContainer, ErrorbarContainer
    from matplotlib.text import Text

    report, _ = synthetic
    figures = recorded_figures(report)
    assert FONT_PT >= 8 and len(figures) == 6  # energy, latency, power, EDP, Pareto, correlations
    for figure in figures:
        sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_text()]
        assert min(sizes) >= 8, figure.axes[0].get_title()
        containers = figure.axes[0].containers
        bars = [c for c in containers if isinstance(c, ErrorbarContainer)]
        bars += [c.errorbar for c in containers if isinstance(c, BarContainer) and c.errorbar is not None]
        assert bars and all(bar.has_yerr or bar.has_xerr for bar in bars), figure.axes[0].get_title()
    for figure in figures:
        figure.clear()
        RecordingPyplot().plt.close(figure)
