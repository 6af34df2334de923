"""Fixtures of the tests that run gpuprofd processes on the simulated GPU."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from daemon_harness import DaemonProcess

from gpuprof.sampler.sim import SimConfig, SimulatedNvml


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test started (``start`` in test_clock_control appends them); SIGKILLed if still running."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill(signal.SIGKILL)


@pytest.fixture
def control_without_root() -> None:
    """The simulated GPU refuses control calls from non-root processes, as the driver does; tests of
    gpuprofd's own rules let an unprivileged test daemon through (as root this changes nothing)."""
    SimulatedNvml().configure(SimConfig(allow_unprivileged_control=True))
