"""A clock sweep of the burn workload on the simulated GPU: a fixed amount of work per point costs what
the documented slowdown and power model say, and a search finds the optimum from part of the grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import locked, start
from test_daemon import FINAL, submit, wait_state

from gpuprof.client.wire.jobspec import BurnParams
from gpuprof.daemon.worker.workloads.burn import sim_op_seconds
from gpuprof.sampler.sim import COMPUTE_BOUND, MEMORY_BOUND, GpuSpec, SimulatedNvml, slowdown

SPEC = GpuSpec()
pytestmark = pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user


def model_power_w(mhz: float) -> float:
    """The simulated H100's mean power at full load and SM clock ``mhz`` (docs/simulated-gpu.md)."""
    span = SPEC.max_graphics_clock_mhz - SPEC.min_graphics_clock_mhz
    volts = (
        SPEC.min_voltage_v
        + (SPEC.max_voltage_v - SPEC.min_voltage_v) * (mhz - SPEC.min_graphics_clock_mhz) / span
    )
    core = SPEC.core_dynamic_power_w * mhz / SPEC.max_graphics_clock_mhz * (volts / SPEC.max_voltage_v) ** 2
    return SPEC.idle_power_w + core + SPEC.memory_dynamic_power_w


def model_op_j(kind: str, mhz: float) -> float:
    """Energy of one operation at ``mhz``: power x the operation's time there."""
    share = COMPUTE_BOUND if kind == "matmul" else MEMORY_BOUND
    op_s = sim_op_seconds(BurnParams(seconds=1, kind=kind, size=8192 if kind == "matmul" else 1024))
    return model_power_w(mhz) * op_s * slowdown(share, SPEC.max_graphics_clock_mhz, mhz)


def sweep(kind: str, clocks: Any, seconds: float, **dvfs: Any) -> dict[str, Any]:
    return {
        "workload": "burn",
        "timeout_s": 300,
        "burn": {"kind": kind, "seconds": seconds, "warmup_s": 0},
        "dvfs": {"sm_clocks": clocks, **dvfs},
    }


@pytest.mark.parametrize("kind", ["matmul", "memcpy"])
def test_each_point_costs_per_operation_what_the_simulated_gpu_models(
    tmp_path: Path, daemons: list[DaemonProcess], kind: str
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    log = SimulatedNvml()
    before = len(log.control_log())
    clocks = [600, 1005, 1680]
    done = wait_state(client, submit(client, sweep(kind, clocks, 1.0, order="sequential")), FINAL, 60)
    client.close()
    assert done["state"] == "succeeded", done.get("reason")
    dvfs = done["result"]["dvfs"]
    points = {p["sm_clock_mhz"]: p for p in dvfs["points"]}
    assert list(points) == clocks
    for mhz, point in points.items():
        assert point["unit"] == "operation" and point["ops"] > 0 and not point["flagged"]
        assert point["observed_sm_clock_mhz"] == mhz
        # The whole chain (sampler, integration, operations counted at the clock) against the model: the
        # ripple and the sensor's sampling of it leave about 1 %.
        assert point["energy_j"] == pytest.approx(model_op_j(kind, mhz), rel=0.03)
        assert 0 < point["energy_j_ci95"] < 0.03 * point["energy_j"]
    share = COMPUTE_BOUND if kind == "matmul" else MEMORY_BOUND
    top = SPEC.max_graphics_clock_mhz
    expected = slowdown(share, top, 600) / slowdown(share, top, 1680)  # 600 against 1680 MHz
    assert points[600]["latency_s"] / points[1680]["latency_s"] == pytest.approx(expected, rel=0.02)
    if kind == "matmul":  # compute-bound: the U's bottom lies between the ends
        assert points[1005]["energy_j"] < min(points[600]["energy_j"], points[1680]["energy_j"])
        assert dvfs["energy_optimal_mhz"] == 1005 and dvfs["edp_optimal_mhz"] == 1680
    else:  # memory-bound: a lower clock barely slows it, and saves power
        assert dvfs["energy_optimal_mhz"] == 600
    calls = [c.call for c in log.control_log()[before:] if c.result == 0]
    assert calls.count("nvmlDeviceSetGpuLockedClocks") == 3
    assert calls.count("nvmlDeviceResetGpuLockedClocks") >= 3
    assert locked() is None


def test_a_search_measures_a_third_of_the_grid_and_lands_within_two_percent_of_its_optimum(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    grid = list(range(600, 1951, 45))  # 31 clocks
    spec = sweep("matmul", {"range": [600, 1950, 45]}, 0.5, search="energy")
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=120)
    client.close()
    assert done["state"] == "succeeded", done.get("reason")
    (search,) = done["result"]["dvfs"]["searches"]
    assert search["grid"] == len(grid) and len(search["measured"]) <= len(grid) // 3
    truth = {mhz: model_op_j("matmul", mhz) for mhz in grid if model_power_w(mhz) * 1.03 <= 700}
    assert search["best_mhz"] in search["measured"]
    assert truth[search["best_mhz"]] <= 1.02 * min(truth.values())
    assert locked() is None
