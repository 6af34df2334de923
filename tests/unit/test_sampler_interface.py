"""The Sampler interface, run against both backends on the simulated GPU: the pynvml twin is the oracle."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from gpuprof.client.wire.errors import DeviceNotFound, NvmlLibraryNotFound, UsageError
from gpuprof.sampler import BACKENDS, SamplerConfig, open_sampler
from gpuprof.sampler.backend import Sampler
from gpuprof.sampler.energy import energy_window, integrate_power
from gpuprof.sampler.library import NvmlLibrary, resolve
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, MISSING_POWER, SAMPLE_DTYPE, concat
from gpuprof.sampler.sim import SimConfig, SimulatedNvml, load_config
from gpuprof.sampler.sim_config import GpuSpec


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def simulated() -> NvmlLibrary:
    return resolve(simulate=True)


@pytest.fixture
def two_gpus(tmp_path: object, simulated: NvmlLibrary) -> SimulatedNvml:
    config_file = tmp_path / "two.json"  # type: ignore[operator]
    config_file.write_text('{"gpu_count": 2}')
    sim = SimulatedNvml()
    sim.configure(load_config(str(config_file)))
    return sim


def settle() -> None:
    """Wait for a load change to reach the sensor: its next 100 ms update, averaged over 25 ms."""
    time.sleep(0.15)


def run_for(sampler: Sampler, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    batches, energies = [], []
    with sampler:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            s, e = sampler.drain()
            batches.append(s)
            energies.append(e)
    s, e = sampler.drain()
    return concat([*batches, s], SAMPLE_DTYPE), concat([*energies, e], ENERGY_DTYPE)


@pytest.fixture
def opened(backend: str, simulated: NvmlLibrary) -> Iterator[object]:
    made: list[Sampler] = []

    def make(**kwargs: object) -> Sampler:
        sampler = open_sampler(SamplerConfig(**kwargs), simulated, backend=backend)  # type: ignore[arg-type]
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.close()


def test_records_every_gpu_every_tick_in_the_shared_layout(opened: object, two_gpus: SimulatedNvml) -> None:
    two_gpus.set_utilization(1, 60)
    settle()
    sampler = opened(gpus=(0, 1), rate_hz=500)  # type: ignore[operator]
    samples, energy = run_for(sampler, 0.6)
    stats = sampler.stats()
    assert samples.dtype == SAMPLE_DTYPE and energy.dtype == ENERGY_DTYPE
    assert stats.samples == samples.size == 2 * stats.ticks
    for gpu in (0, 1):
        own = samples[samples["gpu"] == gpu]
        assert np.all(np.diff(own["t_ns"]) > 0)
        assert np.all(own["missing"] == 0)
        assert np.all((own["sm_clock_mhz"] >= 345) & (own["sm_clock_mhz"] <= 1980))
    busy = samples[samples["gpu"] == 1]
    idle = samples[samples["gpu"] == 0]
    assert busy["power_mw"].mean() > idle["power_mw"].mean() + 50_000
    assert np.all(idle["clock_event_reasons"] & 0x1)  # GpuIdle
    assert set(stats.power_source.values()) == {"instant"}
    assert sampler.simulated


def test_backends_agree_on_the_same_simulated_gpu(simulated: NvmlLibrary) -> None:
    SimulatedNvml().set_utilization(0, 100)
    settle()
    results = {}
    for name in BACKENDS:
        sampler = open_sampler(SamplerConfig(rate_hz=1000), simulated, backend=name)
        try:
            samples, _ = run_for(sampler, 0.5)
        finally:
            sampler.close()
        results[name] = samples
    cython, oracle = results["cython"], results["pynvml"]
    # The simulated GPU is deterministic under a constant load: same clocks, same power level.
    assert set(np.unique(cython["sm_clock_mhz"])) == set(np.unique(oracle["sm_clock_mhz"]))
    assert cython["power_mw"].mean() == pytest.approx(oracle["power_mw"].mean(), rel=0.05)
    assert np.all(cython["clock_event_reasons"] & 0x4)  # capped by the 700 W power limit


def test_integrated_power_tracks_the_true_energy(opened: object) -> None:
    sim = SimulatedNvml()
    sim.set_utilization(0, 80)
    settle()
    sampler = opened(rate_hz=1000, energy_rate_hz=20)  # type: ignore[operator]
    with sampler:
        time.sleep(0.3)
        before = sim.status()[0]
        time.sleep(2.0)
        after = sim.status()[0]
        time.sleep(0.3)
    samples, energy = sampler.drain()
    # The simulated GPU knows the exact integral of its modelled power (what its counter quantizes):
    # over 2 s the sampled sensor must land within 2% of it (a units or window mistake would not).
    true_j = after.energy_j - before.energy_j
    integrated = integrate_power(samples["t_ns"], samples["power_mw"] / 1000.0, before.time_ns, after.time_ns)
    assert integrated == pytest.approx(true_j, rel=0.02)
    window = energy_window(samples, energy, 0, before.time_ns, after.time_ns)
    assert window.energy_counter_j is not None
    assert abs(window.energy_counter_j - true_j) <= window.energy_counter_uncertainty_j
    assert window.distinct_power_updates >= 18  # ~20 sensor updates at 100 ms


def test_energy_counter_read_on_its_own_cadence(opened: object) -> None:
    SimulatedNvml().set_utilization(0, 50)
    sampler = opened(rate_hz=1000, energy_rate_hz=20)  # type: ignore[operator]
    _samples, energy = run_for(sampler, 1.0)
    assert np.all(energy["nvml_return"] == 0)
    assert np.all(np.diff(energy["energy_mj"].astype(np.int64)) >= 0)
    # Every ~100 ms update is seen, bracketed by the read before it, within a few ms (back to back).
    changed = np.flatnonzero(np.diff(energy["energy_mj"].astype(np.int64)) != 0) + 1
    assert 8 <= changed.size <= 11
    brackets = (energy["t_end_ns"][changed] - energy["t_end_ns"][changed - 1]) / 1e6
    assert np.median(brackets) < 10, brackets
    assert energy.size <= 2 * changed.size + 3  # the reads between updates are not kept
    # the ~4 ms counter calls (~4% of the time) must not hold up the fast loop; loose for busy CI machines
    stats = sampler.stats()
    assert stats.ticks >= 0.5 * 1000 * stats.elapsed_s


def test_failing_gpu_does_not_stop_the_others(opened: object, two_gpus: SimulatedNvml) -> None:
    sampler = opened(gpus=(0, 1), rate_hz=500)  # type: ignore[operator]
    with sampler:
        time.sleep(0.2)
        two_gpus.set_failure(1, 15)  # NVML_ERROR_GPU_IS_LOST
        time.sleep(0.3)
    samples, _ = sampler.drain()
    gpu0, gpu1 = samples[samples["gpu"] == 0], samples[samples["gpu"] == 1]
    assert gpu0.size == gpu1.size  # the failing GPU keeps its slots, marked missing
    assert np.all(gpu0["missing"] == 0)
    assert np.any(gpu1["missing"] & MISSING_POWER)
    assert sampler.stats().errors[1].get("NVML_ERROR_GPU_IS_LOST", 0) > 0
    assert not sampler.stats().errors[0]


def test_bad_gpu_index_names_the_valid_ones(backend: str, simulated: NvmlLibrary) -> None:
    with pytest.raises(DeviceNotFound, match=r"GPU 3 not found: valid indices are 0\.\.0"):
        open_sampler(SamplerConfig(gpus=(3,)), simulated, backend=backend)


def test_missing_library_says_how_to_simulate(backend: str) -> None:
    with pytest.raises(NvmlLibraryNotFound, match="--simulate"):
        open_sampler(SamplerConfig(), NvmlLibrary("/nonexistent/libnvidia-ml.so.1", False), backend=backend)


def test_start_twice_is_refused_and_stop_is_idempotent(opened: object) -> None:
    sampler = opened()  # type: ignore[operator]
    sampler.start()
    with pytest.raises(UsageError):
        sampler.start()
    sampler.stop()
    sampler.stop()
    assert not sampler.running


def test_misses_in_slow_nvml_reads_count_as_nvml_overruns(opened: object) -> None:
    sim = SimulatedNvml()
    stalling = GpuSpec(energy_call_latency_us=0, read_stall_us=3000, read_stall_period_ms=20)
    sim.configure(SimConfig(gpus=(stalling,)))
    stalled = opened(rate_hz=1000, energy_rate_hz=0)  # type: ignore[operator]
    run_for(stalled, 0.3)
    stats = stalled.stats()
    # ~15 stalls of 3 ms, each costing 2-3 slots, all counted as NVML's; a busy machine may add late
    # wake-ups of its own, which count as misses but not as NVML's (how many depends on the machine's load).
    assert stats.read_overrun_misses >= 3 * 10
    assert stats.deadline_misses >= stats.read_overrun_misses


def test_the_drivers_power_samples_arrive_on_the_monotonic_clock_up_to_the_stop(
    opened: object, two_gpus: SimulatedNvml
) -> None:
    """The driver's total-power buffer (one sample every 20 ms, each the mean of the 25 ms ending 2 ms before
    it) is read for every GPU, moved onto CLOCK_MONOTONIC, each sample once, the last ones at the stop."""
    two_gpus.set_utilization(1, 100)
    settle()
    sampler = opened(gpus=(0, 1))  # type: ignore[operator]
    started = time.monotonic_ns()
    run_for(sampler, 1.2)
    stopped = time.monotonic_ns()
    driver = concat([sampler.drain_driver_power()], DRIVER_POWER_DTYPE)
    stats = sampler.stats()
    assert stats.driver_power == {0: True, 1: True}
    assert stats.driver_power_samples == driver.size and stats.driver_power_reads >= 2
    for gpu in (0, 1):
        own = driver[driver["gpu"] == gpu]
        steps = np.diff(own["t_ns"])
        # Every ~20 ms (the simulated driver's cadence wanders by up to 6 ms, as the H100's does), each sample
        # once, none lost.
        assert np.all((steps >= 7_000_000) & (steps <= 33_000_000))
        assert np.mean(steps) == pytest.approx(20_000_000, rel=0.1)
        assert own["t_ns"][0] < started  # the buffer's last ~2.4 s before the start
        assert stopped - 40_000_000 <= own["t_ns"][-1] <= stopped + 5_000_000  # and up to the stop
        exact = np.array(
            two_gpus.exact_energy_j(
                gpu, [int(own["t_ns"][-1]) - 27_000_000, int(own["t_ns"][-1]) - 2_000_000]
            )
        )
        assert own["power_mw"][-1] / 1000 == pytest.approx((exact[1] - exact[0]) / 0.025, abs=0.01)
    assert driver[driver["gpu"] == 1]["power_mw"][-1] > driver[driver["gpu"] == 0]["power_mw"][-1]
    # Each GPU's samples wander on their own, as two real GPUs' do: the nearest sample of the other GPU is
    # typically milliseconds away, not the same instant.
    first, second = (driver[driver["gpu"] == gpu]["t_ns"] for gpu in (0, 1))
    at = np.clip(np.searchsorted(second, first), 1, second.size - 1)
    nearest = np.minimum(np.abs(first - second[at - 1]), np.abs(second[at] - first))
    assert np.median(nearest) > 1_000_000
