"""A Monitor's record store: what it compacts gives the same energy as the whole trace, it keeps the driver's
power samples an open window's edge needs and no more, and what it counts as samples arrive gives the figures
the samples themselves would."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpuprof.sampler import SamplerConfig, open_sampler, resolve
from gpuprof.sampler.energy import energy_window
from gpuprof.sampler.records import (
    DRIVER_POWER_DTYPE,
    ENERGY_DTYPE,
    MISSING_MEMORY_POWER,
    MISSING_SM_CLOCK,
    SAMPLE_DTYPE,
    concat,
)
from gpuprof.sampler.sim import SimulatedNvml
from gpuprof.sampler.window_records import EDGE_NS, RecordStore, WindowTally, tallies_of

SECOND = 1_000_000_000


def record(seconds: float, chunk_s: float = 0.1) -> list[tuple[np.ndarray, np.ndarray]]:
    """The simulated GPU 0 under a load that changes every 0.3 s, drained every ``chunk_s``."""
    sim = SimulatedNvml()
    chunks = []
    with open_sampler(SamplerConfig(gpus=(0,)), resolve(simulate=True)) as sampler:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            sim.set_utilization(0, [20, 90, 0, 60][int((time.monotonic() - began) / 0.3) % 4])
            time.sleep(chunk_s)
            chunks.append(sampler.drain())
    return chunks


def test_a_compacted_long_window_has_the_energy_of_the_whole_trace() -> None:
    chunks = record(6.0)
    samples = concat([c[0] for c in chunks], SAMPLE_DTYPE)
    energy = concat([c[1] for c in chunks], chunks[0][1].dtype)
    t_first = int(samples["t_ns"][0])
    start, end = t_first + int(0.7 * SECOND), t_first + int(5.4 * SECOND)
    store = RecordStore(history_ns=SECOND)
    for chunk_samples, chunk_energy in chunks:
        store.append(chunk_samples, chunk_energy)
        store.trim(int(chunk_samples["t_ns"][-1]), [start])
    kept, kept_energy = store.arrays()
    assert kept.size < 0.6 * samples.size  # whole: its first 1.7 s and its last 1.1 s; the rest compacted
    assert store.whole_since_ns > start + EDGE_NS  # and is said to be
    whole = energy_window(samples, energy, 0, start, end)
    compacted = energy_window(kept, kept_energy, 0, start, end)
    assert whole.energy_counter_j is not None and whole.energy_integrated_j is not None
    assert compacted.energy_counter_j == pytest.approx(whole.energy_counter_j, abs=1e-6)
    assert compacted.energy_counter_uncertainty_j == pytest.approx(
        whole.energy_counter_uncertainty_j, abs=1e-6
    )
    assert compacted.energy_integrated_j == pytest.approx(whole.energy_integrated_j, abs=1e-6)
    assert compacted.peak_power_w == whole.peak_power_w


def test_without_open_windows_only_the_history_is_kept() -> None:
    chunks = record(2.5)
    store = RecordStore(history_ns=SECOND)
    for chunk_samples, chunk_energy in chunks:
        store.append(chunk_samples, chunk_energy)
        store.trim(int(chunk_samples["t_ns"][-1]), [])
    samples, energy = store.arrays()
    newest = int(samples["t_ns"][-1])
    assert int(samples["t_ns"][0]) >= newest - SECOND
    assert int(energy["t_end_ns"][0]) >= newest - SECOND
    assert store.kept_samples == samples.size and store.kept_energy_readings == energy.size
    since, _ = store.arrays(newest - SECOND // 2)
    assert int(since["t_ns"][0]) >= newest - SECOND // 2 and since.size < samples.size


def driver_power_drains(seconds: float, gpus: int = 2) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(drain instant, samples, driver power) every 0.1 s: the samples at 1 kHz on GPU 0, the driver's power
    samples every 20 ms on each GPU, drained as a sampler gives them (oldest first per GPU, GPU after GPU)."""
    drains = []
    for k in range(1, int(seconds * 10) + 1):
        now = k * SECOND // 10
        samples = np.zeros(100, SAMPLE_DTYPE)
        samples["t_ns"] = now - SECOND // 10 + np.arange(1, 101) * 1_000_000
        samples["power_mw"] = 200_000 + 1_000 * (k % 3)
        driver_power = np.zeros(5 * gpus, DRIVER_POWER_DTYPE)
        driver_power["t_ns"] = np.tile(now - SECOND // 10 + np.arange(1, 6) * 20_000_000, gpus)
        driver_power["gpu"] = np.repeat(np.arange(gpus), 5)
        driver_power["power_mw"] = 150_000 + driver_power["t_ns"] // 1_000_000  # each one its own
        drains.append((now, samples, driver_power))
    return drains


def test_driver_power_is_kept_around_an_open_windows_start_and_dropped_elsewhere_beyond_the_history() -> None:
    store = RecordStore(history_ns=SECOND)
    start = 3 * SECOND
    drains = driver_power_drains(8.0)
    for now, samples, driver_power in drains:
        store.append(samples, np.zeros(0, ENERGY_DTYPE), driver_power)
        store.trim(now, [start] if now >= start else [])
    sent = concat([d for _, _, d in drains], DRIVER_POWER_DTYPE)
    newest = drains[-1][0]
    needed = sent[(np.abs(sent["t_ns"] - start) <= EDGE_NS) | (sent["t_ns"] >= newest - SECOND)]
    kept = store.driver_power()
    assert set(map(tuple, needed.tolist())) <= set(map(tuple, kept.tolist()))  # the edge's and the history's
    far = np.abs(kept["t_ns"] - start) > EDGE_NS
    assert int(kept["t_ns"][far].min()) > newest - SECOND - SECOND // 10  # the rest: at most one drain more
    assert store.kept_driver_power == kept.size < 0.6 * sent.size  # not the open window's whole interior
    since = store.driver_power(start - EDGE_NS // 2)
    assert since.size and int(since["t_ns"].min()) >= start - EDGE_NS // 2
    for gpu in (0, 1):  # each GPU's samples in time order, for the estimate of its edges
        assert np.all(np.diff(kept["t_ns"][kept["gpu"] == gpu]) > 0)

    store.trim(newest + SECOND // 10, [])  # the window ended: only the history stays
    assert int(store.driver_power()["t_ns"].min()) >= newest + SECOND // 10 - SECOND


def test_driver_power_without_open_windows_is_the_history_alone() -> None:
    store = RecordStore(history_ns=SECOND)
    for now, samples, driver_power in driver_power_drains(30.0):
        store.append(samples, np.zeros(0, ENERGY_DTYPE), driver_power)
        store.trim(now, [])
    assert store.kept_driver_power <= 2 * 50 * 1.1  # 50 a second per GPU, however long it has run
    store.append(np.zeros(0, SAMPLE_DTYPE), np.zeros(0, ENERGY_DTYPE))  # a sampler without the stream
    assert store.kept_driver_power > 0


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = np.zeros(n, SAMPLE_DTYPE)
    samples["t_ns"] = np.arange(n) * 1_000_000
    samples["gpu"] = rng.integers(0, 2, n)
    samples["sm_clock_mhz"] = rng.choice([345, 1005, 1410, 1755, 1980], n)
    samples["memory_power_mw"] = rng.integers(30_000, 60_000, n)
    samples["clock_event_reasons"] = rng.choice([0, 0x1, 0x4], n)
    samples["missing"] = rng.choice([0, MISSING_SM_CLOCK, MISSING_MEMORY_POWER], n, p=[0.8, 0.1, 0.1])
    return samples


def test_a_tally_counted_in_pieces_gives_what_numpy_gives_over_the_windows_samples() -> None:
    samples = synthetic(5000)
    t0, t1 = 1_000 * 1_000_000, 4_000 * 1_000_000
    tally = WindowTally(1, t0)
    for piece in np.array_split(samples[:3500], 7):
        tally.add(piece)
    tally.t_end_ns = t1
    tally.add(samples[3500:])  # what arrives after the end is not counted
    inside = samples[(samples["gpu"] == 1) & (samples["t_ns"] >= t0) & (samples["t_ns"] <= t1)]
    clocks = inside[(inside["missing"] & MISSING_SM_CLOCK) == 0]["sm_clock_mhz"]
    memory = inside[(inside["missing"] & MISSING_MEMORY_POWER) == 0]["memory_power_mw"]
    assert tally.samples == inside.size
    for q in (5, 50, 95, 0, 100, 37.5):
        assert tally.clock_percentile(q) == pytest.approx(float(np.percentile(clocks, q)))
    assert tally.memory_power_w == pytest.approx(memory.mean() / 1000)
    assert tally.reasons == int(np.bitwise_or.reduce(inside["clock_event_reasons"]))
    (at_once,) = tallies_of(samples, [1], t0, t1)
    assert (at_once.samples, at_once.clocks, at_once.reasons) == (tally.samples, tally.clocks, tally.reasons)


def test_a_tally_without_clocks_or_memory_power_says_none() -> None:
    samples = synthetic(100)
    samples["missing"] = MISSING_SM_CLOCK | MISSING_MEMORY_POWER
    (tally,) = tallies_of(samples, [0], 0, 10**12)
    assert tally.samples > 0 and tally.clock_percentile(50) is None and tally.memory_power_w is None
