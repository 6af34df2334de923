"""The README's clock sweep (examples/sweep-sim.yaml) on the simulated GPU: its curves mean something. Each
point's energy per request is known well enough that the energy-optimal clock stands apart from the top
clock by more than both intervals, and the point's latency follows its clock (docs/simulated-gpu.md, "How
work slows down with the clock")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpuprof.client.cli import main

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep-sim.yaml"


def test_the_sweep_examples_energy_optimum_stands_apart_from_the_top_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gpuprof.sampler.sim import SimConfig, SimulatedNvml

    SimulatedNvml().configure(SimConfig(allow_unprivileged_control=True))  # clocks as any user
    endpoint = ["--endpoint", f"ipc://{tmp_path}/none.sock"]
    code = main(["run", str(EXAMPLE), "--simulate", "--allow-dvfs", "--json", *endpoint])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"running .* \d+% ~\d+:\d\d left", err), err  # the progress line's share and time left
    summary = json.loads(out)
    points = summary["dvfs"]["points"]
    assert {p["batch_size"] for p in points} == {1, 4}
    for batch in (1, 4):
        usable = sorted(
            (p for p in points if p["batch_size"] == batch and not p["flagged"]),
            key=lambda p: p["sm_clock_mhz"],
        )
        assert len(usable) >= 3, points
        best = min(usable, key=lambda p: p["energy_j"])
        top = usable[-1]
        report = [(p["sm_clock_mhz"], round(p["energy_j"], 2), round(p["energy_j_ci95"], 2)) for p in usable]
        assert best["sm_clock_mhz"] < top["sm_clock_mhz"], report
        assert best["energy_j"] + best["energy_j_ci95"] < top["energy_j"] - top["energy_j_ci95"], report
        assert usable[0]["latency_s"] > 1.3 * top["latency_s"], report  # 600 MHz is slower by far
    # The simulated GPU's pace, fixed before anything was measured, is in the result.
    pace = summary["llm"]["models"][0]["simulated_pace"]
    assert pace["scale"] > 0 and "H100" in pace["model"]
