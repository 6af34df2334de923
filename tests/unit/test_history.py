"""The daemon's sample history: ring wraparound, drop counting, per-GPU queries and time slicing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gpuprof.daemon.server.history import HistoryOrderError, SampleHistory
from gpuprof.sampler.records import ENERGY_DTYPE, SAMPLE_DTYPE

MS = 1_000_000


def ticks(first_ms: int, count: int, gpus: int = 2) -> np.ndarray:
    """``count`` ticks 1 ms apart from ``first_ms``, one sample per GPU each (GPU g at +g ns)."""
    samples = np.zeros(count * gpus, SAMPLE_DTYPE)
    tick = np.repeat(np.arange(first_ms, first_ms + count, dtype=np.int64), gpus)
    gpu = np.tile(np.arange(gpus), count)
    samples["t_ns"] = tick * MS + gpu
    samples["gpu"] = gpu
    samples["power_mw"] = tick * 10 + gpu  # encodes tick and GPU, to check which records came back
    return samples


def readings(times_ms: list[int], gpu: int = 0) -> np.ndarray:
    energy = np.zeros(len(times_ms), ENERGY_DTYPE)
    energy["t_start_ns"] = np.asarray(times_ms, dtype=np.int64) * MS - 2 * MS
    energy["t_end_ns"] = np.asarray(times_ms, dtype=np.int64) * MS + 2 * MS
    energy["gpu"] = gpu
    energy["energy_mj"] = times_ms
    return energy


NO_ENERGY = np.zeros(0, ENERGY_DTYPE)
NO_SAMPLES = np.zeros(0, SAMPLE_DTYPE)


def test_capacity_follows_seconds_rate_and_gpus() -> None:
    history = SampleHistory(seconds=2, rate_hz=100, gpus=3, energy_rate_hz=10)
    assert history.sample_capacity == 600
    assert history.energy_capacity == 60
    assert history.nbytes == 600 * 48 + 60 * 40


def test_empty_history_answers_empty() -> None:
    history = SampleHistory(seconds=1, rate_hz=10, gpus=1)
    samples, energy = history.since(0)
    assert samples.size == 0 and energy.size == 0
    assert history.oldest_t_ns is None and history.latest(0) is None


def test_wraparound_keeps_the_newest_in_order_and_counts_the_dropped() -> None:
    history = SampleHistory(seconds=0.01, rate_hz=1000, gpus=2)  # 20 slots
    for first in range(0, 35, 7):  # 5 batches of 7 ticks = 70 samples, wrapping 3 times
        history.append(ticks(first, 7), NO_ENERGY)
    samples, _ = history.since(0)
    assert samples.size == 20
    assert history.dropped_samples == 50
    assert np.all(np.diff(samples["t_ns"]) > 0)
    assert samples["t_ns"][-1] == 34 * MS + 1
    assert history.oldest_t_ns == 25 * MS
    assert np.array_equal(samples, ticks(25, 10))


def test_a_batch_larger_than_the_history_keeps_its_tail() -> None:
    history = SampleHistory(seconds=0.005, rate_hz=1000, gpus=2)  # 10 slots
    history.append(ticks(0, 3), NO_ENERGY)
    history.append(ticks(3, 20), NO_ENERGY)
    samples, _ = history.since(0)
    assert np.array_equal(samples, ticks(18, 5))
    assert history.dropped_samples == 6 + 30


def test_queries_per_gpu_and_latest() -> None:
    history = SampleHistory(seconds=1, rate_hz=1000, gpus=2)
    history.append(ticks(0, 10), readings([3, 8], gpu=1))
    gpu1, energy1 = history.since(0, gpu=1)
    assert set(gpu1["gpu"].tolist()) == {1} and gpu1.size == 10
    assert energy1.size == 2
    assert history.since(0, gpu=0)[1].size == 0
    latest = history.latest(0)
    assert latest is not None and int(latest["t_ns"]) == 9 * MS and int(latest["gpu"]) == 0
    assert history.latest(7) is None


def test_latest_forgets_a_gpu_whose_samples_were_all_dropped() -> None:
    history = SampleHistory(seconds=0.005, rate_hz=1000, gpus=2)  # 10 slots
    history.append(ticks(0, 2, gpus=2), NO_ENERGY)
    only_gpu0 = ticks(2, 10, gpus=1)
    history.append(only_gpu0, NO_ENERGY)
    assert history.latest(1) is None
    assert history.latest(0) is not None


def test_between_includes_both_edges_across_the_wrap() -> None:
    history = SampleHistory(seconds=0.01, rate_hz=1000, gpus=1)  # 10 slots
    history.append(ticks(0, 7, gpus=1), NO_ENERGY)
    history.append(ticks(7, 6, gpus=1), NO_ENERGY)  # stored: ticks 3..12, physically wrapped
    samples, _ = history.between(5 * MS, 9 * MS)
    assert (samples["t_ns"] // MS).tolist() == [5, 6, 7, 8, 9]
    assert history.between(100 * MS, 200 * MS)[0].size == 0
    assert history.between(0, 2 * MS)[0].size == 0
    assert (history.since(11 * MS)[0]["t_ns"] // MS).tolist() == [11, 12]


def test_energy_readings_are_sliced_by_the_middle_of_their_call() -> None:
    history = SampleHistory(seconds=1, rate_hz=1000, gpus=1, energy_rate_hz=10)
    history.append(NO_SAMPLES, readings([100, 200, 300]))
    _, energy = history.between(199 * MS, 300 * MS)
    assert energy["energy_mj"].tolist() == [200, 300]


def test_energy_ring_wraps_and_counts_separately() -> None:
    history = SampleHistory(seconds=1, rate_hz=1000, gpus=1, energy_rate_hz=2)  # 2 reading slots
    history.append(NO_SAMPLES, readings([100, 200, 300]))
    assert history.dropped_energy == 1 and history.dropped_samples == 0
    assert history.since(0)[1]["energy_mj"].tolist() == [200, 300]


def test_results_are_copies_that_later_appends_do_not_change() -> None:
    history = SampleHistory(seconds=0.005, rate_hz=1000, gpus=1)
    history.append(ticks(0, 5, gpus=1), NO_ENERGY)
    before, _ = history.since(0)
    history.append(ticks(5, 5, gpus=1), NO_ENERGY)
    assert (before["t_ns"] // MS).tolist() == [0, 1, 2, 3, 4]


def test_a_batch_older_than_the_history_is_rejected_whole() -> None:
    history = SampleHistory(seconds=1, rate_hz=1000, gpus=2)
    history.append(ticks(10, 5), readings([12]))
    with pytest.raises(HistoryOrderError, match="before the newest stored"):
        history.append(ticks(20, 5), readings([11]))  # samples fine, energy stale: nothing stored
    assert len(history) == 10
    with pytest.raises(HistoryOrderError, match="not in time order"):
        history.append(ticks(20, 5)[::-1].copy(), NO_ENERGY)
    history.append(ticks(14, 1)[1:], NO_ENERGY)  # same time as the newest sample is in order
    assert len(history) == 11


def test_append_refuses_other_dtypes() -> None:
    history = SampleHistory(seconds=1, rate_hz=10, gpus=1)
    with pytest.raises(TypeError):
        history.append(np.zeros(3, np.int64), NO_ENERGY)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        SampleHistory(seconds=0, rate_hz=1000, gpus=1)
    with pytest.raises(ValueError):
        SampleHistory(seconds=1, rate_hz=1000, gpus=0)


def test_readers_and_a_writer_in_threads_see_ordered_data() -> None:
    history = SampleHistory(seconds=0.05, rate_hz=1000, gpus=2)
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            samples, _ = history.since(0)
            if samples.size and not np.all(np.diff(samples["t_ns"]) > 0):
                errors.append("out of order")

    reader = threading.Thread(target=read)
    reader.start()
    for first in range(0, 2000, 13):
        history.append(ticks(first, 13), NO_ENERGY)
    done.set()
    reader.join()
    assert not errors
