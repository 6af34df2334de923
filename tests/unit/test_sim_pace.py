"""The simulated GPU's pace (docs/simulated-gpu.md, "How work slows down with the clock"): once a phase shape
is paced, its time at a clock is the pace's, whatever the CPU took below it, so that a sweep's points follow
their clocks and not the CPU's jitter."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch", reason="the llm engine needs torch (pip install '.[test]')")

from gpuprof.daemon.worker.llm.engine import PACE_MARGIN, Device
from gpuprof.daemon.worker.workloads.target import GpuTarget
from gpuprof.sampler.sim import MEMORY_BOUND, SimConfig, SimulatedNvml, slowdown


def held(device: Device, phase: str, elapsed_s: float, units: int, rows: int) -> float:
    """How long ``stretch`` holds a phase that took ``elapsed_s`` on the CPU (s)."""
    started = time.monotonic()
    device.stretch(phase, elapsed_s, units, rows)
    return time.monotonic() - started + elapsed_s


def test_a_paced_phase_lasts_its_pace_at_the_clock_not_the_cpus_time() -> None:
    sim = SimulatedNvml()
    sim.configure(SimConfig(allow_unprivileged_control=True))
    device = Device(GpuTarget(simulated=True))
    mhz = sim.status()[0].sm_clock_mhz
    factor = slowdown(MEMORY_BOUND, 1980, mhz)
    # Three calls of 8 decode steps at batch 1, timed: the slowest sets the pace.
    for elapsed in (0.004, 0.006, 0.005):
        held(device, "decode", elapsed, 8, 1)
    assert device.paces == {("decode", 1): pytest.approx(PACE_MARGIN * 0.006 / 8)}
    want = PACE_MARGIN * 0.006 / 8 * 16 * factor  # 16 steps at that pace and clock
    # Paced: a fast and a slow CPU call last the same, the pace's time.
    assert held(device, "decode", 0.001, 16, 1) == pytest.approx(want, abs=0.004)
    assert held(device, "decode", 0.010, 16, 1) == pytest.approx(want, abs=0.004)
    # Another shape (batch 4) is paced apart; the one before is kept until the model is released.
    held(device, "decode", 0.003, 8, 4)
    assert ("decode", 4) not in device.paces and device.pace()[("decode", 4)] == pytest.approx(
        PACE_MARGIN * 0.003 / 8
    )
    device.release()
    assert device.paces == {}
