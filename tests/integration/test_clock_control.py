"""Clock changes through gpuprofd on the simulated GPU: refused unless allowed, journaled, always undone."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_daemon import FINAL, burn, job, submit, wait_for, wait_state

from gpuprof.sampler.sim import SimulatedNvml

SUPPORTED = 1410  # one of the simulated H100's supported SM clocks (its default list)
pytestmark = pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user


def start(daemons: list[DaemonProcess], root: Path, config: str = "") -> DaemonProcess:
    daemon = DaemonProcess(root, config)
    daemons.append(daemon)
    return daemon.start()


def locked() -> int | None:
    return SimulatedNvml().status()[0].locked_sm_clock_mhz


def test_an_allowed_job_runs_at_its_clock_and_the_gpu_is_reset_after(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    job_id = submit(client, burn(1.5, dvfs={"sm_clocks": SUPPORTED}))
    wait_state(client, job_id, ("running",))
    assert wait_for(lambda: locked() == SUPPORTED, "the SM clock lock")
    done = wait_state(client, job_id, FINAL)
    assert done["state"] == "succeeded", done
    assert done["result"]["dvfs"]["set"]["sm_clock_mhz"] == SUPPORTED
    assert locked() is None
    assert json.loads((tmp_path / "state" / "clocks.json").read_text()) == {}

    # An unsupported clock names the nearest supported ones; snap takes the nearest.
    reply = client.request("submit", {"spec": burn(0.5, dvfs={"sm_clocks": SUPPORTED + 3})})
    assert not reply.ok and reply.code == "invalid_spec"
    assert f"nearest supported: {SUPPORTED}, " in str(reply.message) and "dvfs.snap" in str(reply.message)
    snapped = wait_state(
        client, submit(client, burn(0.5, dvfs={"sm_clocks": SUPPORTED + 3, "snap": True})), FINAL
    )
    assert snapped["result"]["dvfs"]["set"]["sm_clock_mhz"] == SUPPORTED
    client.close()


def _kill_while_locked(daemons: list[DaemonProcess], root: Path) -> str:
    daemon = start(daemons, root, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    job_id = submit(client, burn(20.0, dvfs={"sm_clocks": SUPPORTED, "power_limit_w": 500}))
    wait_for(lambda: locked() == SUPPORTED, "the SM clock lock")
    client.close()
    daemon.kill(signal.SIGKILL)
    assert locked() == SUPPORTED  # nothing ran after SIGKILL
    return job_id


def test_a_sigkilled_daemon_heals_the_gpu_when_it_comes_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    default_limit = SimulatedNvml().status()[0].power_limit_w
    job_id = _kill_while_locked(daemons, tmp_path)
    assert SimulatedNvml().status()[0].power_limit_w == 500
    daemon = start(daemons, tmp_path)  # even with DVFS now off: the journal is what was changed
    assert locked() is None and SimulatedNvml().status()[0].power_limit_w == default_limit
    client = RawClient(daemon.endpoint)
    assert job(client, job_id)["state"] == "interrupted"
    assert "clocks left changed by the previous gpuprofd" in daemon.log.read_text()
    client.close()


def test_reset_clocks_puts_back_what_a_dead_daemon_changed(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    _kill_while_locked(daemons, tmp_path)
    command = [sys.executable, "-m", "gpuprof.daemon.cli", "reset-clocks", "--simulate"]
    command += ["--state-dir", str(tmp_path / "state")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "SM clock unlocked" in done.stdout and "power limit back to" in done.stdout
    assert locked() is None
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "nothing to reset" in again.stdout


def test_systemd_is_told_when_the_sockets_are_ready(
    tmp_path: Path, daemons: list[DaemonProcess], monkeypatch: Any
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    daemon = start(daemons, tmp_path)
    message = notify.recv(4096).decode()
    assert message.startswith("READY=1\n") and "simulated GPU(s)" in message
    daemon.kill(signal.SIGTERM)
    assert notify.recv(4096).decode() == "STOPPING=1"
    notify.close()


def test_a_range_lock_is_set_and_reset(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    job_id = submit(client, burn(3.0, dvfs={"sm_clock_range": [1005, SUPPORTED]}))
    wait_for(
        lambda: SimulatedNvml().status()[0].locked_sm_clock_range_mhz == (1005, SUPPORTED), "the range lock"
    )
    done = wait_state(client, job_id, FINAL, timeout_s=30)
    assert done["result"]["dvfs"]["set"]["sm_clock_range_mhz"] == [1005, SUPPORTED]
    assert SimulatedNvml().status()[0].locked_sm_clock_range_mhz is None
    reply = client.request("submit", {"spec": burn(1.0, dvfs={"sm_clock_range": [1000, SUPPORTED]})})
    assert not reply.ok and "nearest supported: 990, 1005 MHz" in str(reply.message)
    client.close()
