"""The simulated GPU's pace (docs/simulated-gpu.md, "How work slows down with the clock"): once a model is
paced, a phase lasts the model's work on an H100 times one scale, at the clock's slowdown, whatever the CPU
took below it; so a sweep's points follow their clocks and the model, not the CPU's jitter."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch", reason="the llm engine needs torch (pip install '.[test]')")

from gpuprof.daemon.worker.llm.engine import (
    FORWARD_S,
    H100_PEAK_BYTES_S,
    H100_PEAK_FLOPS,
    PACE_MARGIN,
    PACE_OUTLIER,
    Device,
)
from gpuprof.daemon.worker.workloads.target import GpuTarget
from gpuprof.sampler.sim import COMPUTE_BOUND, MEMORY_BOUND, SimConfig, SimulatedNvml, slowdown

PARAMETERS, WEIGHTS = 1_000_000, 2_000_000  # a tiny model: 1 M parameters, 2 MB of weights


def held(device: Device, phase: str, elapsed_s: float, units: int, rows: int) -> float:
    """How long ``stretch`` holds a phase that took ``elapsed_s`` on the CPU (s)."""
    started = time.monotonic()
    device.stretch(phase, elapsed_s, units, rows)
    return time.monotonic() - started + elapsed_s


def test_a_paced_phase_lasts_its_work_at_the_clock_not_the_cpus_time() -> None:
    sim = SimulatedNvml()
    sim.configure(SimConfig(allow_unprivileged_control=True))
    device = Device(GpuTarget(simulated=True))
    device.model_work(PARAMETERS, WEIGHTS)
    mhz = sim.status()[0].sm_clock_mhz
    step = (
        FORWARD_S + WEIGHTS / H100_PEAK_BYTES_S + 2 * PARAMETERS / H100_PEAK_FLOPS
    )  # a decode step, batch 1
    # Timed calls: 8 decode steps in 4 ms, and in 6 ms: the slower sets the scale.
    for elapsed in (0.004, 0.006):
        held(device, "decode", elapsed, 8, 1)
    scale = device.pace()
    assert scale == pytest.approx(PACE_MARGIN * 0.006 / (8 * step))
    want = scale * 16 * step * slowdown(MEMORY_BOUND, 1980, mhz)  # 16 steps at that scale and clock
    # Paced: a fast and a slow CPU call last the same, the model's time.
    assert held(device, "decode", 0.001, 16, 1) == pytest.approx(want, abs=0.004)
    assert held(device, "decode", 0.010, 16, 1) == pytest.approx(want, abs=0.004)
    # A prefill is the model's FLOPs at the same scale: its share of the time is the model's, not the CPU's.
    prefill = (
        scale * (FORWARD_S + 2 * PARAMETERS * 4096 / H100_PEAK_FLOPS) * slowdown(COMPUTE_BOUND, 1980, mhz)
    )
    assert held(device, "prefill", 0.001, 4096, 4) == pytest.approx(prefill, abs=0.004)
    device.release()
    assert device.scale is None and device.work is None


def test_a_call_the_cpu_was_taken_from_does_not_pace_the_model() -> None:
    """One timed call far slower than the rest of its phase (the CPU busy elsewhere for a moment) would slow
    every later phase of the job by as much: it is left out, and the phase's slowest ordinary call paces."""
    SimulatedNvml().configure(SimConfig(allow_unprivileged_control=True))
    device = Device(GpuTarget(simulated=True))
    device.model_work(PARAMETERS, WEIGHTS)
    step = FORWARD_S + WEIGHTS / H100_PEAK_BYTES_S + 2 * PARAMETERS / H100_PEAK_FLOPS
    calls = (0.004, 0.005, 0.006, 0.005, 0.004, 0.080)  # 8 decode steps each; the last one held up
    assert calls[-1] > PACE_OUTLIER * 0.005  # far slower than the median call
    for elapsed in calls:
        held(device, "decode", elapsed, 8, 1)
    assert device.pace() == pytest.approx(PACE_MARGIN * 0.006 / (8 * step))
    device.release()
