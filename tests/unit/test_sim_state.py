"""The simulated GPUs' state file and the Python control API: where the state lives, and how it survives."""

from __future__ import annotations

import ctypes
import os
import stat
import time
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import DeviceNotFound, NvmlError, UsageError
from gpuprof.sampler.library import simulated_library_path
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

MS = 1_000_000


def gpu_count_seen_by_nvml() -> int:
    lib = ctypes.CDLL(simulated_library_path())
    count = ctypes.c_uint()
    assert lib.nvmlInit_v2() == 0
    try:
        assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0
    finally:
        lib.nvmlShutdown()
    return count.value


def test_the_state_file_is_created_private_with_the_defaults(isolated_sim_state: Path) -> None:
    sim = SimulatedNvml()
    assert sim.state_path == str(isolated_sim_state)
    [gpu] = sim.status()
    assert (gpu.name, gpu.util_pct, gpu.power_limit_w) == ("NVIDIA H100 80GB HBM3 (simulated)", 0.0, 700.0)
    assert stat.S_IMODE(isolated_sim_state.stat().st_mode) == 0o600


def test_the_default_state_path_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GPUPROF_SIM_STATE")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert SimulatedNvml().state_path == str(tmp_path / "gpuprof-sim.state")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert SimulatedNvml().state_path == f"/tmp/gpuprof-sim-{os.geteuid()}.state"
    assert SimulatedNvml(state_path=str(tmp_path / "x")).state_path == str(tmp_path / "x")


def test_nvml_init_maps_the_state_named_at_that_moment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    SimulatedNvml(state_path=str(tmp_path / "two")).configure(SimConfig(gpus=(GpuSpec(),) * 2))
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(tmp_path / "two"))
    assert gpu_count_seen_by_nvml() == 2
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(tmp_path / "fresh"))
    assert gpu_count_seen_by_nvml() == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"not a state file", id="short"),
        pytest.param(lambda data: b"\xff" * len(data), id="garbage"),
        pytest.param(lambda data: data[:64] + b"\xff" * (len(data) - 64), id="valid-header-garbage-body"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_a_damaged_state_file_is_reinitialized(isolated_sim_state: Path, damage: object) -> None:
    sim = SimulatedNvml()
    sim.configure(SimConfig(gpus=(GpuSpec(),) * 3))
    isolated_sim_state.write_bytes(damage(isolated_sim_state.read_bytes()))  # type: ignore[operator]
    assert [g.index for g in sim.status()] == [0]  # the defaults again
    assert gpu_count_seen_by_nvml() == 1


def test_the_library_defaults_are_the_python_defaults() -> None:
    assert SimulatedNvml().default_config() == SimConfig()


def test_control_api_errors_name_the_problem() -> None:
    sim = SimulatedNvml()
    sim.configure(SimConfig(), manual_clock_ns=1000 * MS)
    with pytest.raises(DeviceNotFound, match="GPU 3 not found"):
        sim.set_utilization(3, 50)
    with pytest.raises(UsageError, match=r"\[0, 100\]"):
        sim.set_utilization(0, 101)
    with pytest.raises(NvmlError, match="gpuprofSimSetClock failed: NVML_ERROR_INVALID_ARGUMENT"):
        sim.set_clock(999 * MS)  # the model's clock never runs backwards
    sim.set_clock(1001 * MS)
    assert sim.status()[0].time_ns == 1001 * MS
    sim.set_clock(None)
    assert sim.status()[0].time_ns != 1001 * MS


def test_a_state_from_before_a_reboot_restarts_idle_with_its_configuration() -> None:
    # A state whose history lies ahead of CLOCK_MONOTONIC was written before a reboot: the model would
    # otherwise pin every change to that future time and ignore loads.
    sim = SimulatedNvml()
    future = time.monotonic_ns() + 3600 * 10**9
    sim.configure(SimConfig(gpus=(GpuSpec(), GpuSpec())), manual_clock_ns=future)
    sim.set_utilization(1, 100)
    sim.set_clock(None)  # back to the real clock: the history is now an hour ahead
    status = sim.status()
    assert len(status) == 2
    assert status[1].util_pct == 0
    assert abs(status[1].time_ns - time.monotonic_ns()) < 10**9
    sim.set_utilization(1, 100)
    assert sim.status()[1].sm_clock_mhz > 345  # a load takes effect again
