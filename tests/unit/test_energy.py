"""Energy over windows: integration of held power and counter differences, on hand-made traces."""

from __future__ import annotations

import numpy as np
import pytest

from gpuprof.sampler.energy import GRID_MIN_HALF_NS, energy_window, integrate_power, on_grid, reason_names
from gpuprof.sampler.records import ENERGY_DTYPE, MISSING_POWER, SAMPLE_DTYPE

MS = 1_000_000


def make_samples(power_w: list[float], period_ms: float = 1.0, gpu: int = 0) -> np.ndarray:
    samples = np.zeros(len(power_w), SAMPLE_DTYPE)
    samples["t_ns"] = (np.arange(len(power_w)) * period_ms * MS).astype(np.int64)
    samples["power_mw"] = np.round(np.asarray(power_w) * 1000)
    samples["gpu"] = gpu
    samples["sm_clock_mhz"] = 1980
    return samples


def make_energy(times_ms: list[float], energy_mj: list[int], gpu: int = 0) -> np.ndarray:
    energy = np.zeros(len(times_ms), ENERGY_DTYPE)
    energy["t_start_ns"] = (np.asarray(times_ms) * MS).astype(np.int64) - 2 * MS
    energy["t_end_ns"] = (np.asarray(times_ms) * MS).astype(np.int64) + 2 * MS
    energy["energy_mj"] = energy_mj
    energy["gpu"] = gpu
    return energy


def test_integration_holds_each_reading_until_the_next() -> None:
    t = np.array([0, 100, 200], dtype=np.int64) * MS
    p = np.array([100.0, 300.0, 0.0])
    # 100 W for 0.1 s + 300 W for 0.1 s
    assert integrate_power(t, p, 0, 200 * MS) == pytest.approx(40.0)


def test_integration_clips_to_the_window() -> None:
    t = np.array([0, 100], dtype=np.int64) * MS
    p = np.array([100.0, 300.0])
    assert integrate_power(t, p, 50 * MS, 150 * MS) == pytest.approx(5.0 + 15.0)


def test_steady_power_window_gives_matching_counter_and_integral() -> None:
    samples = make_samples([250.0] * 2001)  # 2 s at 1 kHz
    energy = make_energy([0, 500, 1000, 1500, 2000], [10_000, 135_000, 260_000, 385_000, 510_000])
    window = energy_window(samples, energy, gpu=0, t0=100 * MS, t1=1900 * MS)
    assert window.energy_integrated_j == pytest.approx(450.0)
    assert window.energy_counter_j == pytest.approx(450.0)
    assert window.mean_power_w == pytest.approx(250.0)
    # Reads 500 ms apart time each update only within 500 ms: 250 W x 0.25 s at each edge.
    assert window.energy_counter_uncertainty_j > 250.0 * 0.25
    assert window.distinct_power_updates == 1
    assert not window.shorter_than_sensor_update


def test_missing_power_reads_are_skipped_not_counted_as_zero() -> None:
    samples = make_samples([100.0] * 11)
    samples["missing"][5] = MISSING_POWER
    samples["power_mw"][5] = 0
    window = energy_window(samples, np.zeros(0, ENERGY_DTYPE), gpu=0)
    assert window.peak_power_w == pytest.approx(100.0)
    assert window.mean_power_w == pytest.approx(100.0)
    assert window.energy_counter_j is None


def test_short_window_is_flagged() -> None:
    window = energy_window(make_samples([100.0] * 21), np.zeros(0, ENERGY_DTYPE), gpu=0)
    assert window.duration_s == pytest.approx(0.02)
    assert window.shorter_than_sensor_update
    assert window.as_dict()["shorter_than_sensor_update"] is True


def test_windows_keep_gpus_apart() -> None:
    samples = np.concatenate([make_samples([100.0] * 11, gpu=0), make_samples([400.0] * 11, gpu=1)])
    assert energy_window(samples, np.zeros(0, ENERGY_DTYPE), gpu=1).mean_power_w == pytest.approx(400.0)


def test_distinct_updates_count_sensor_changes() -> None:
    power = [100.0] * 100 + [110.0] * 100 + [105.0] * 100
    assert energy_window(make_samples(power), np.zeros(0, ENERGY_DTYPE), 0).distinct_power_updates == 3


def test_reason_names() -> None:
    assert reason_names(0x5) == ["gpu_idle", "sw_power_cap"]
    assert reason_names(0) == []
    assert reason_names(0x1000) == ["0x1000"]


def test_the_reading_before_a_window_holds_at_its_start() -> None:
    samples = make_samples([100.0] * 3, period_ms=10.0)  # readings at 0, 10, 20 ms
    window = energy_window(samples, np.zeros(0, ENERGY_DTYPE), gpu=0, t0=5 * MS, t1=20 * MS)
    assert window.energy_integrated_j == pytest.approx(100.0 * 0.015)


def test_reads_around_each_update_time_it_within_one_read() -> None:
    samples = make_samples([250.0] * 2001)
    # Back to back around each update (every 100 ms): a read before it and one after, 4 ms apart.
    reads = [t for k in range(1, 20) for t in (100 * k - 2, 100 * k + 2)]
    energy = make_energy(reads, [round(250 * (t - 2 - k % 2 * 0)) for k, t in enumerate(reads)])
    energy["energy_mj"] = [250 * (100 * (k // 2) + (k % 2) * 100) for k in range(len(reads))]
    window = energy_window(samples, energy, gpu=0, t0=250 * MS, t1=1750 * MS)
    assert window.energy_counter_j == pytest.approx(375.0, rel=0.01)
    assert window.energy_counter_uncertainty_j < 2.0  # 250 W x the two reads' span (8 ms) / 2, each edge


def test_a_window_beyond_the_updates_is_extended_by_the_power_with_a_wider_bound() -> None:
    samples = make_samples([250.0] * 2001)
    energy = make_energy([100, 1000, 1900], [0, 225_000, 450_000])
    window = energy_window(samples, energy, gpu=0, t0=0, t1=2000 * MS)
    assert window.energy_counter_j == pytest.approx(500.0, rel=0.02)
    inside = energy_window(samples, energy, gpu=0, t0=200 * MS, t1=1800 * MS)
    assert window.energy_counter_uncertainty_j > inside.energy_counter_uncertainty_j


def grid_updates(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(true instants, seen instants, half-widths, which were seen loosely) of n updates every 99.9994 ms:
    two in three timed within 2.7 ms by short reads, the rest within 12 to 25 ms by stalled ones, the
    truth anywhere in each span."""
    rng = np.random.default_rng(seed)
    truth = 5e9 + np.arange(n) * 99.9994 * MS + rng.normal(0, 0.2 * MS, n)
    loose = rng.random(n) < 1 / 3
    half = np.where(loose, rng.uniform(12, 25, n), 2.7) * MS
    seen = truth + rng.uniform(-1, 1, n) * half
    return truth, seen, half, loose


def test_the_counters_cadence_times_an_update_its_own_reads_timed_loosely() -> None:
    truth, seen, half, loose = grid_updates(300)
    t, narrowed = on_grid(seen, half)
    assert np.all(np.abs(t - truth) <= narrowed)  # every update still within its stated span
    assert np.all(narrowed <= half)  # never wider than its reads allow
    assert np.max(np.abs(t - truth)[loose]) < 3 * MS  # stalled reads' updates now within ~the best reads'
    assert np.median(narrowed[loose]) < 4 * MS
    assert np.all(narrowed >= min(GRID_MIN_HALF_NS, half.min()))


def test_updates_off_the_grid_keep_their_own_timing() -> None:
    _, seen, half, _ = grid_updates(100)
    seen[50:] += 40 * MS  # the cadence broke: a gap of 1.4 periods
    assert np.array_equal(on_grid(seen, half)[0], seen)
    few = np.full(100, 20 * MS)  # no update timed well enough to fit the line to
    few[::30] = 2.7 * MS
    t, narrowed = on_grid(seen[:50], few[:50])
    assert np.array_equal(t, seen[:50]) and np.array_equal(narrowed, few[:50])
