"""The README's clock sweep (examples/sweep-sim.yaml) with steady state, on the simulated GPU, reported by
``gpuprof run --report``: the page, files and output carry each point's steady figures per phase."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from gpuprof.client.cli import main

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
pytest.importorskip("matplotlib")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep-sim.yaml"
CLOCKS = [600, 1200, 1980]  # 1980 MHz runs into the simulated GPU's power cap: flagged


def test_the_sweep_examples_report_shows_steady_figures_per_phase(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gpuprof.sampler.sim import SimConfig, SimulatedNvml

    SimulatedNvml().configure(SimConfig(allow_unprivileged_control=True))  # clocks as any user
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["llm"] |= {
        "prompts": 8, "batch_sizes": [4], "ner": "heuristic",
        "steady_state": {"seconds": 1, "context_tokens": 128, "decode_tokens": 32},
    }  # fmt: skip
    spec["dvfs"]["sm_clocks"] = CLOCKS  # fewer points than the example's, each with steady state
    path = tmp_path / "sweep-steady.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "report"
    endpoint = ["--endpoint", f"ipc://{tmp_path}/none.sock"]
    code = main(["run", str(path), "--simulate", "--allow-dvfs", "--report", str(out), *endpoint])
    printed, err = capsys.readouterr()
    assert code == 0, err
    said = printed + err
    assert "llama-3.2-1b-tiny (eager) / qa / batch 4, steady state: prefill: energy-optimal" in said, said
    assert "; decode: energy-optimal" in said and "SIMULATED" in said

    steady = pd.read_csv(out / "steady.csv")
    assert sorted(steady["phase"].unique()) == ["decode", "prefill"]
    for phase, rows in steady.groupby("phase"):
        assert sorted(rows["clock_mhz"]) == CLOCKS, phase
        assert (rows["j_per_token"] > 0).all() and (rows["tokens_per_s"] > 0).all(), phase
        assert (rows["j_per_token_bound_low"] < rows["j_per_token"]).all(), phase  # every point has its bound
        assert (rows["mean_power_w"] > 0).all() and (rows["request_j_per_token"] > 0).all(), phase
        assert rows.set_index("clock_mhz").loc[1980, "flagged"], phase  # capped
        power = rows.set_index("clock_mhz")["mean_power_w"]
        assert power[600] < power[1200], phase  # the GPU draws less at a lower clock
    optima = pd.read_csv(out / "steady_optima.csv")
    assert set(optima["phase"]) == {"prefill", "decode"} and set(optima["energy_optimal_mhz"]) <= {600, 1200}
    assert optima["separated"].dropna().isin([True, False]).all()
    for name in ("energy_per_token", "tokens_per_s", "power"):
        assert (out / f"steady_{name}_vs_clock.png").stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert "<h2>Energy-optimal clock per phase at steady state (SIMULATED)</h2>" in page
    assert "<h2>steady energy per token vs clock</h2>" in page and "<h2>steady_optima.csv</h2>" in page
