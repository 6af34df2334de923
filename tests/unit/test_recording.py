"""Recording loop: duration, draining, and Ctrl-C keeping what was recorded, with a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from gpuprof.sampler.backend import SamplerConfig, SamplerStats
from gpuprof.sampler.recording import record
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE
from gpuprof.sampler.summary import summarize


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeSampler:
    """Hands out 10 samples and one driver power sample per drain; can raise KeyboardInterrupt on the Nth
    drain."""

    def __init__(self, interrupt_on_drain: int | None = None) -> None:
        self.config = SamplerConfig()
        self.library_path = "fake"
        self.simulated = True
        self.drains = 0
        self.started = self.stopped = False
        self.interrupt_on_drain = interrupt_on_drain

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.started and not self.stopped

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        self.drains += 1
        if self.drains == self.interrupt_on_drain:
            raise KeyboardInterrupt
        samples = np.zeros(10, SAMPLE_DTYPE)
        samples["t_ns"] = np.arange(10) * 1_000_000 + (self.drains - 1) * 10_000_000
        samples["power_mw"] = 100_000
        return samples, np.zeros(0, ENERGY_DTYPE)

    def drain_driver_power(self) -> np.ndarray:
        driver_power = np.zeros(1, DRIVER_POWER_DTYPE)
        driver_power["t_ns"], driver_power["power_mw"] = self.drains * 10_000_000, 150_000
        return driver_power

    def stats(self) -> SamplerStats:
        return SamplerStats(
            "fake", 1000.0, 1.0, 10 * self.drains, 10 * self.drains, 0, 0, 0, 0, 1.0, 2.0, 3.0
        )


def test_records_for_the_requested_time_and_drains_at_the_end() -> None:
    clock = FakeClock()
    sampler = FakeSampler()
    recording = record(sampler, 1.0, clock=clock, sleep=clock.sleep)
    assert sampler.started and sampler.stopped
    assert clock.now == pytest.approx(1.0)
    # one drain per 0.2 s interval plus the final drain after stop()
    assert sampler.drains == 6
    assert recording.trace.samples.size == 60
    assert recording.trace.driver_power["t_ns"].tolist() == [n * 10_000_000 for n in range(1, 7)]
    assert summarize(recording)["driver_power_samples"] == 6
    assert not recording.interrupted


def test_ctrl_c_keeps_what_was_recorded() -> None:
    clock = FakeClock()
    sampler = FakeSampler(interrupt_on_drain=3)
    recording = record(sampler, None, clock=clock, sleep=clock.sleep)
    assert recording.interrupted
    assert sampler.stopped
    assert recording.trace.samples.size == 30  # drains 1, 2 and the final one after stop
    summary = summarize(recording)
    assert summary["interrupted"] is True
    assert summary["simulated"] is True
    assert summary["gpus"][0]["mean_power_w"] == pytest.approx(100.0)


def test_progress_is_reported_while_recording() -> None:
    clock = FakeClock()
    seen: list[float] = []
    record(
        FakeSampler(),
        0.6,
        progress=lambda batch, count, elapsed: seen.append(elapsed),
        clock=clock,
        sleep=clock.sleep,
    )
    assert seen == pytest.approx([0.2, 0.4, 0.6])
