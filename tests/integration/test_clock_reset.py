"""However a swept job ends mid-point (cancelled, its worker killed, gpuprofd stopped or killed), the
simulated GPU ends at its default clocks and power limit, and the journal is empty."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import start
from test_daemon import FINAL, job, submit, the_worker, wait_for, wait_state

from gpuprof.daemon.server.clocks import ClockJournal
from gpuprof.sampler.sim import SimGpuStatus, SimulatedNvml

CLOCKS = [1005, 1410]
MEMORY_MHZ = 1593  # the simulated H100's lower memory clock
POWER_LIMIT_W = 500
pytestmark = pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user


def gpu() -> SimGpuStatus:
    return SimulatedNvml().status()[0]


def changed(status: SimGpuStatus) -> dict[str, Any]:
    """What differs from an untouched GPU: an SM or memory clock lock, a power limit off its default."""
    out: dict[str, Any] = {}
    if status.locked_sm_clock_range_mhz is not None:
        out["sm"] = status.locked_sm_clock_mhz
    if status.locked_mem_clock_range_mhz is not None:
        out["memory"] = status.locked_mem_clock_mhz
    if status.power_limit_w != status.default_power_limit_w:
        out["power_limit_w"] = status.power_limit_w
    return out


def sweep_spec() -> dict[str, Any]:
    """A burn sweep whose points last long enough to be caught in the second one."""
    return {
        "workload": "burn",
        "timeout_s": 300,
        "burn": {"kind": "matmul", "seconds": 4, "warmup_s": 0},
        "dvfs": {
            "sm_clocks": CLOCKS, "order": "sequential", "memory_clock": MEMORY_MHZ,
            "power_limit_w": POWER_LIMIT_W,
        },
    }  # fmt: skip


def in_second_point(daemons: list[DaemonProcess], root: Path) -> tuple[DaemonProcess, RawClient, str]:
    """A daemon running the sweep, caught while its second point holds the GPU with every change made."""
    daemon = start(daemons, root, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    job_id = submit(client, sweep_spec())
    wait_for(lambda: changed(gpu()).get("sm") == CLOCKS[1], "the second point's lock", timeout_s=120)
    assert changed(gpu()) == {"sm": CLOCKS[1], "memory": MEMORY_MHZ, "power_limit_w": POWER_LIMIT_W}
    return daemon, client, job_id


def journal(root: Path) -> dict[str, Any]:
    """What the daemon's clock journal still holds to put back."""
    return ClockJournal(root / "state").load()


def test_a_cancelled_sweep_puts_every_setting_back(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    _daemon, client, job_id = in_second_point(daemons, tmp_path)
    assert client.request("cancel", {"id": job_id}).ok
    done = wait_state(client, job_id, FINAL, timeout_s=30)
    assert done["state"] == "cancelled", done
    assert changed(gpu()) == {} and journal(tmp_path) == {}
    client.close()


def test_a_sweep_whose_worker_dies_puts_every_setting_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon, client, job_id = in_second_point(daemons, tmp_path)
    os.killpg(the_worker(daemon, []), signal.SIGKILL)  # the worker and all it started
    done = wait_state(client, job_id, FINAL, timeout_s=30)
    assert done["state"] == "failed" and "SIGKILL" in done["reason"], done
    assert changed(gpu()) == {} and journal(tmp_path) == {}
    assert done["result"]["dvfs"]["set"]["power_limit_w"] == POWER_LIMIT_W  # what was changed, on record
    client.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_daemon_stopped_mid_sweep_puts_every_setting_back_before_it_exits(
    tmp_path: Path, daemons: list[DaemonProcess], signum: int
) -> None:
    daemon, client, job_id = in_second_point(daemons, tmp_path)
    client.close()
    assert daemon.kill(signum) == 0
    assert changed(gpu()) == {} and journal(tmp_path) == {}  # done before exiting, not left to the next start
    back = RawClient(start(daemons, tmp_path).endpoint)
    assert job(back, job_id)["state"] == "interrupted"
    back.close()


def test_a_daemon_killed_mid_sweep_heals_every_setting_when_it_comes_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon, client, job_id = in_second_point(daemons, tmp_path)
    client.close()
    daemon.kill(signal.SIGKILL)
    assert changed(gpu()) == {"sm": CLOCKS[1], "memory": MEMORY_MHZ, "power_limit_w": POWER_LIMIT_W}
    assert set(journal(tmp_path)) == {gpu().uuid}
    back = RawClient(start(daemons, tmp_path).endpoint)  # DVFS off now: the journal alone says what to undo
    assert changed(gpu()) == {} and journal(tmp_path) == {}
    assert job(back, job_id)["state"] == "interrupted"
    back.close()
