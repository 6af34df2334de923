"""A clock sweep over an llm job's points: each at its clock, reset after each, healed after SIGKILL."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import locked, start
from test_daemon import FINAL, job, submit, wait_for, wait_state

from gpuprof.sampler.sim import SimulatedNvml

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")

CLOCKS = [600, 1005, 1410]  # supported by the simulated H100 (345 + k x 15 MHz)
pytestmark = pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user


def sweep_spec(clocks: Any, prompts: int = 4, **dvfs: Any) -> dict[str, Any]:
    return {
        "workload": "llm",
        "timeout_s": 300,
        "llm": {
            "model": {"arch": "llama-3.2-1b-tiny"}, "dtype": "float32", "prompts": prompts,
            "batch_sizes": [2], "max_new_tokens": 4, "ignore_eos": True, "warmup_requests": 1,
            "ner": "heuristic",
        },
        "dvfs": {"sm_clocks": clocks, **dvfs},
    }  # fmt: skip


@pytest.fixture
def sim_log() -> Iterator[SimulatedNvml]:
    yield SimulatedNvml()


def test_each_point_runs_at_its_clock_and_the_gpu_is_unlocked_between(
    tmp_path: Path, daemons: list[DaemonProcess], sim_log: SimulatedNvml
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    before = len(sim_log.control_log())
    done = wait_state(client, submit(client, sweep_spec(CLOCKS, order="sequential")), FINAL, timeout_s=120)
    assert done["state"] == "succeeded", done.get("reason")
    dvfs = done["result"]["dvfs"]
    assert [p["sm_clock_mhz"] for p in dvfs["points"]] == CLOCKS  # sequential: in the listed order
    for point in dvfs["points"]:
        assert point["observed_sm_clock_mhz"] == point["sm_clock_mhz"] and not point["flagged"]
        assert point["energy_j"] > 0 and point["latency_s"] > 0
    assert dvfs["energy_optimal_mhz"] in CLOCKS and dvfs["edp_optimal_mhz"] in CLOCKS
    assert dvfs["set"]["sweep_sm_clocks_mhz"] == CLOCKS and "after every point" in dvfs["reset"]
    calls = [c.call for c in sim_log.control_log()[before:] if c.result == 0]
    locks, resets = calls.count("nvmlDeviceSetGpuLockedClocks"), calls.count("nvmlDeviceResetGpuLockedClocks")
    assert locks == 3 and resets >= 3  # one lock per point, one reset after each (and at the end)
    assert locked() is None
    client.close()


@pytest.mark.parametrize("points_done", [0, 1, 2])
def test_a_daemon_killed_during_a_sweep_leaves_no_clock_locked_once_it_is_back(
    tmp_path: Path, daemons: list[DaemonProcess], points_done: int
) -> None:
    daemon = start(daemons, tmp_path, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    job_id = submit(client, sweep_spec(CLOCKS, prompts=64, order="sequential"))
    wait_for(lambda: locked() == CLOCKS[points_done], f"the lock of point {points_done}", timeout_s=120)
    client.close()
    daemon.kill(signal.SIGKILL)
    assert locked() == CLOCKS[points_done]  # the worker may still run; the clock stays locked
    back = start(daemons, tmp_path)  # DVFS now off: the journal alone says what to put back
    assert locked() is None
    client = RawClient(back.endpoint)
    assert job(client, job_id)["state"] == "interrupted"
    client.close()


def test_gpuprof_report_writes_tables_plots_and_one_page(
    tmp_path: Path, daemons: list[DaemonProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    from gpuprof.client.cli import main

    daemon = start(daemons, tmp_path, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    done = wait_state(client, submit(client, sweep_spec(CLOCKS, prompts=6)), FINAL, timeout_s=120)
    client.close()
    assert done["state"] == "succeeded", done.get("reason")
    out = tmp_path / "report"
    assert main(["report", done["id"], "-o", str(out), "--endpoint", daemon.endpoint]) == 0
    text = capsys.readouterr().out
    assert "llama-3.2-1b-tiny (eager) / qa / batch 2: energy-optimal" in text and "SIMULATED" in text
    for name in ("clocks.csv", "optima.csv", "pareto.csv", "correlations.csv", "energy_vs_clock.png",
                 "pareto.png", "report.html"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    clocks = pd.read_csv(out / "clocks.csv")
    assert sorted(clocks["clock_mhz"]) == CLOCKS and (clocks["requests"] == 6).all()
    page = (out / "report.html").read_text()
    assert "SIMULATED" in page and page.count("data:image/png;base64,") >= 5
    assert main(["report", done["id"], "-o", str(out), "--json", "--endpoint", daemon.endpoint]) == 0
    assert json.loads(capsys.readouterr().out)["page"] == [str(out / "report.html")]

    # The same report from the job's saved --json, with no daemon to ask.
    assert main(["show", done["id"], "--json", "--endpoint", daemon.endpoint]) == 0
    saved = tmp_path / "job.json"
    saved.write_text(capsys.readouterr().out)
    daemon.kill(signal.SIGTERM)
    again = tmp_path / "from-file"
    assert main(["report", str(saved), "-o", str(again), "--endpoint", daemon.endpoint]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    for name in ("clocks.csv", "optima.csv", "pareto.csv", "correlations.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(again / name), pd.read_csv(out / name), obj=name)
    assert re.search(r"energy-optimal \d+ MHz, EDP-optimal \d+ MHz", text), text  # whole MHz


def test_a_search_measures_part_of_the_grid_and_names_its_optimum(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    grid = {"range": [600, 1950, 75]}  # 19 clocks
    spec = sweep_spec(grid, prompts=4, search="energy")
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=240)
    client.close()
    assert done["state"] == "succeeded", done.get("reason")
    dvfs = done["result"]["dvfs"]
    (search,) = dvfs["searches"]
    assert search["objective"] == "energy" and search["grid"] == 19
    assert len(search["measured"]) < 19 and search["best_mhz"] in search["measured"]
    assert sorted(p["sm_clock_mhz"] for p in dvfs["points"]) == search["measured"]  # one point per clock
    assert locked() is None


def test_a_compiled_engine_sweep_loads_and_compiles_once_and_slows_down_at_a_low_clock(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    spec = sweep_spec([600, 1410], order="sequential")
    spec["llm"]["engine"] = "compiled"
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=240)
    assert done["state"] == "succeeded", done.get("reason")
    windows = done["result"]["windows"]
    names = [w["name"] for w in windows]
    assert names.count("load") == 1 and names.count("compile") == 1  # 4 prompts: batches of 2 only
    compile_end = next(w["t_end_ns"] for w in windows if w["name"] == "compile")
    points = {p["sm_clock_mhz"]: p for p in done["result"]["dvfs"]["points"]}
    assert all(p["engine"] == "compiled" and not p["flagged"] for p in points.values())
    point_starts = [w["t_start_ns"] for w in windows if w["name"] == "point"]
    assert len(point_starts) == 2 and min(point_starts) > compile_end  # compiled before the first point
    # The simulated GPU stretches each phase by its slowdown at the clock: decode is slower at 600 MHz.
    assert points[600]["latency_s"] > points[1410]["latency_s"]


def test_with_steady_state_each_point_has_its_phases_energy_per_token_at_its_clock(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    spec = sweep_spec([600, 1410], order="sequential")
    spec["llm"]["steady_state"] = {"seconds": 1.5, "context_tokens": 32, "decode_tokens": 4}
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=240)
    assert done["state"] == "succeeded", done.get("reason")
    points = {p["sm_clock_mhz"]: p for p in done["result"]["dvfs"]["points"]}
    steady = {s["point"]: s for s in done["result"]["llm"]["steady_state"] if s["point"] is not None}
    for mhz, point in points.items():
        for phase in ("prefill", "decode"):
            assert point[f"{phase}_j_per_token"] > 0 and point[f"{phase}_tokens_per_s"] > 0, point
            assert point[f"{phase}_j_per_token_uncertainty"] is not None
        # A phase's seconds in back-to-back windows (up to 4, fewer where a pass outlasts a quarter; their
        # interval is checked in tests/unit/test_requests.py).
        assert 1 <= point["prefill_windows"] <= 5 and 1 <= point["decode_windows"] <= 5, point
        assert steady[point["point"]]["observed_sm_clock_mhz_median"] == mhz  # at the point's clock
    # The simulated GPU's decode is memory-bound: at 600 MHz a token takes longer but costs less.
    assert points[600]["decode_tokens_per_s"] < points[1410]["decode_tokens_per_s"]
    assert points[600]["decode_j_per_token"] < points[1410]["decode_j_per_token"]
