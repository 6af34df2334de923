"""The simulated GPUs across processes: one shared state, lock-free readers beside a writer, root control."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprof.sampler.library import simulated_library_path
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

SUCCESS, NO_PERMISSION = 0, 4
NOBODY = 65534


def run_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def nvml() -> Iterator[ctypes.CDLL]:
    lib = ctypes.CDLL(simulated_library_path())
    assert lib.nvmlInit_v2() == SUCCESS
    yield lib
    lib.nvmlShutdown()


def handle(lib: ctypes.CDLL, index: int) -> ctypes.c_void_p:
    out = ctypes.c_void_p()
    assert lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(out)) == SUCCESS
    return out


def test_a_change_made_by_another_process_is_seen_at_once(nvml: ctypes.CDLL) -> None:
    util = (ctypes.c_uint * 2)()
    run_python("from gpuprof.sampler.sim import SimulatedNvml; SimulatedNvml().set_utilization(0, 73)")
    assert nvml.nvmlDeviceGetUtilizationRates(handle(nvml, 0), util) == SUCCESS
    assert util[0] == 73  # through this process's own mapping, made before the change
    assert SimulatedNvml().status()[0].sm_clock_mhz == 1980


def test_readers_never_see_a_torn_state_while_another_process_writes(nvml: ctypes.CDLL) -> None:
    SimulatedNvml().configure(SimConfig(gpus=(GpuSpec(energy_call_latency_us=0),)))
    gpu = handle(nvml, 0)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from gpuprof.sampler.sim import SimulatedNvml\n"
            "sim = SimulatedNvml()\n"
            "for i in range(1000): sim.set_utilization(0, 100 * (i % 2)); time.sleep(0.0002)\n",
        ]
    )
    clock, energy, last_energy, seen = ctypes.c_uint(), ctypes.c_ulonglong(), 0, set()
    while writer.poll() is None:
        assert nvml.nvmlDeviceGetClockInfo(gpu, 1, ctypes.byref(clock)) == SUCCESS
        assert nvml.nvmlDeviceGetTotalEnergyConsumption(gpu, ctypes.byref(energy)) == SUCCESS
        seen.add(clock.value)
        assert energy.value >= last_energy
        last_energy = energy.value
    assert writer.returncode == 0
    assert seen <= {345, 1725} and len(seen) == 2


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can write to (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="gpuprof-sim-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def lock_clocks_as_nobody(state: Path) -> int:
    """NVML's answer to nvmlDeviceSetGpuLockedClocks from a child process running as uid 65534."""
    lib = ctypes.CDLL(simulated_library_path())
    pid = os.fork()
    if pid == 0:  # the child: drop root, then make the call through the library already loaded
        code = 99
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.environ["GPUPROF_SIM_STATE"] = str(state)
            if lib.nvmlInit_v2() == SUCCESS:
                code = lib.nvmlDeviceSetGpuLockedClocks(handle(lib, 0), 1200, 1500)
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_a_non_root_process_may_control_clocks_only_where_the_config_allows(shared_dir: Path) -> None:
    assert lock_clocks_as_nobody(shared_dir / "default") == NO_PERMISSION
    denied = SimulatedNvml(state_path=str(shared_dir / "default"))
    assert denied.status()[0].locked_sm_clock_mhz is None
    [call] = denied.control_log()
    assert (call.uid, call.result) == (NOBODY, NO_PERMISSION) and call.pid != os.getpid()

    allowed = SimulatedNvml(state_path=str(shared_dir / "allowed"))
    allowed.configure(SimConfig(allow_unprivileged_control=True))
    os.chown(allowed.state_path, NOBODY, NOBODY)
    assert lock_clocks_as_nobody(shared_dir / "allowed") == SUCCESS
    assert allowed.status()[0].locked_sm_clock_range_mhz == (1200, 1500)
    assert [(c.uid, c.result) for c in allowed.control_log()] == [(NOBODY, SUCCESS)]
