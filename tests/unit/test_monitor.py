"""gpuprof.Monitor on the simulated GPU: each window's stated bound covers the GPU's exact energy, windows
nest and overlap, names are checked, the block and decorator forms work, and memory stays bounded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import gpuprof
from gpuprof.sampler import measurement
from gpuprof.sampler.errors import DeviceNotFound, UsageError
from gpuprof.sampler.library import LIBRARY_ENV
from gpuprof.sampler.monitor import Measurement, Monitor
from gpuprof.sampler.records import DRIVER_POWER_DTYPE
from gpuprof.sampler.sim import SimConfig, SimulatedNvml
from gpuprof.sampler.sim_config import GpuSpec
from gpuprof.sampler.window_records import EDGE_S


@pytest.fixture
def sim() -> SimulatedNvml:
    return SimulatedNvml()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor(simulate=True) as running:
        yield running


def exact_j(sim: SimulatedNvml, m: Measurement, gpu: int = 0) -> float:
    start, end = sim.exact_energy_j(gpu, [m.t_start_ns, m.t_end_ns])
    return end - start


def assert_covers(m: Measurement, truth_j: float, gpu: int = 0) -> None:
    figures = m.gpus[gpu]
    assert figures.energy_j is not None and figures.energy_uncertainty_j is not None
    assert abs(figures.energy_j - truth_j) <= figures.energy_uncertainty_j, (m, truth_j)


@pytest.mark.parametrize("seconds", [1.0, 0.25])
def test_a_window_states_a_bound_that_covers_the_gpus_exact_energy(
    monitor: Monitor, sim: SimulatedNvml, seconds: float
) -> None:
    sim.set_utilization(0, 60)
    time.sleep(0.3)  # the power sensor reports the new load
    monitor.begin_window("work")
    time.sleep(seconds)
    m = monitor.end_window("work")
    truth = exact_j(sim, m)
    figures = m.gpus[0]
    assert m.name == "work" and m.duration_s >= seconds
    assert m.duration_s == (m.t_end_ns - m.t_start_ns) / 1e9
    assert figures.method == "fused" and not figures.short
    assert_covers(m, truth)
    assert figures.energy_uncertainty_j is not None and figures.energy_uncertainty_j < 0.05 * truth
    assert figures.integrated_energy_j is not None and figures.integrated_uncertainty_j is not None
    assert abs(figures.integrated_energy_j - truth) <= figures.integrated_uncertainty_j
    assert figures.mean_power_w == pytest.approx(truth / m.duration_s, rel=0.05)
    assert figures.peak_power_w is not None and figures.peak_power_w >= figures.mean_power_w * 0.98
    top = GpuSpec().max_graphics_clock_mhz
    assert figures.sm_clock_mhz_median == figures.sm_clock_mhz_p5 == figures.sm_clock_mhz_p95 == top
    assert figures.memory_power_w is not None and figures.memory_power_w > 0
    assert figures.samples > 0.5 * seconds * 1000  # 1 kHz, less what a busy test machine misses
    assert m.total_energy_j == figures.energy_j


def test_nested_and_overlapping_windows_each_cover_their_own_exact_energy(
    monitor: Monitor, sim: SimulatedNvml
) -> None:
    monitor.begin_window("outer")
    sim.set_utilization(0, 100)
    time.sleep(0.3)
    monitor.begin_window("inner")
    time.sleep(0.3)
    monitor.begin_window("across")  # begins inside "inner", ends after "outer"
    sim.set_utilization(0, 20)
    time.sleep(0.3)
    inner = monitor.end_window("inner")
    time.sleep(0.3)
    outer = monitor.end_window("outer")
    sim.set_utilization(0, 0)
    time.sleep(0.3)
    across = monitor.end_window("across")
    for m in (outer, inner, across):
        assert_covers(m, exact_j(sim, m))
        assert m.gpus[0].method == "fused"
    assert outer.t_start_ns < inner.t_start_ns < across.t_start_ns < inner.t_end_ns < outer.t_end_ns
    assert outer.gpus[0].energy_j > inner.gpus[0].energy_j  # type: ignore[operator]
    assert "gpu_idle" in across.gpus[0].clock_event_reasons  # its end idles the GPU
    low, high = outer.gpus[0].sm_clock_mhz_p5, outer.gpus[0].sm_clock_mhz_p95
    assert low is not None and high is not None and low < high  # it saw the clock move


def test_a_name_is_open_once_and_only_an_open_window_ends(monitor: Monitor) -> None:
    monitor.begin_window("step")
    with pytest.raises(ValueError, match="'step' is already open"):
        monitor.begin_window("step")
    with pytest.raises(ValueError, match=r"no window named 'stpe' is open \(open: 'step'\)"):
        monitor.end_window("stpe")
    monitor.end_window("step", wait=False)
    with pytest.raises(ValueError, match="no window named 'step'"):
        monitor.end_window("step")
    monitor.begin_window("step")  # ended, so the name is free again
    monitor.end_window("step", wait=False)


def test_a_with_block_and_a_decorated_function_are_measured_each_time(
    monitor: Monitor, sim: SimulatedNvml
) -> None:
    sim.set_utilization(0, 50)
    with monitor.window("block") as handle:
        assert handle.measurement is None
        time.sleep(0.2)
    assert handle.measurement is not None and handle.measurement.name == "block"
    assert_covers(handle.measurement, exact_j(sim, handle.measurement))

    with pytest.raises(KeyError), monitor.window("failing") as failed:
        raise KeyError("the block's own error")
    assert failed.measurement is not None  # measured all the same

    seen: list[Measurement] = []

    @monitor.measure("step", callback=seen.append)
    def step(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    assert step(0.15) == "done" and step(0.2) == "done"
    assert [m.name for m in seen] == ["step", "step"]
    assert monitor.last("step") is seen[-1] and seen[-1].duration_s >= 0.2
    for m in seen:
        assert_covers(m, exact_j(sim, m))

    @monitor.measure
    def recurse(depth: int) -> int:  # calls of one function overlap: each is its own window
        return depth if depth == 0 else recurse(depth - 1)

    assert recurse(2) == 0
    last = monitor.last(recurse.__qualname__)
    assert last is not None and last.name.endswith("recurse")
    assert monitor.last("never measured") is None


def test_a_window_ended_without_waiting_falls_back_to_a_figure_whose_bound_covers_the_truth(
    monitor: Monitor, sim: SimulatedNvml
) -> None:
    sim.set_utilization(0, 70)
    time.sleep(0.3)
    for seconds in (1.0, 0.25):
        monitor.begin_window("quick")
        time.sleep(seconds)
        m = monitor.end_window("quick", wait=False)
        # The counter cannot have updated past an end that has just happened: the end edge is extended.
        assert m.gpus[0].method in ("counter", "integrated")
        assert_covers(m, exact_j(sim, m))
        waited = monitor.interval("again", m.t_start_ns, m.t_end_ns)  # the same span, once the counter moved
        assert waited.gpus[0].method == "fused"
        bound = waited.gpus[0].energy_uncertainty_j
        assert bound is not None and bound < m.gpus[0].energy_uncertainty_j  # type: ignore[operator]


def test_memory_stays_bounded_over_thousands_of_windows_inside_a_long_one(sim: SimulatedNvml) -> None:
    with Monitor(simulate=True, history_s=1.0) as monitor:
        sim.set_utilization(0, 40)
        monitor.begin_window("whole run")
        began = time.monotonic()
        windows = 0
        while windows < 2000 or time.monotonic() - began < 6.0:
            name = f"step {windows}"
            monitor.begin_window(name)
            monitor.end_window(name, wait=False)
            windows += 1
        elapsed = time.monotonic() - began
        # Kept whole: the history and the second either side of the open window's start; beyond those only
        # the changes of power reading (~10 a second). Without trimming it would hold every sample.
        cap = (1.0 + 2 * EDGE_S + 0.5) * 1000 + 20 * elapsed
        assert monitor.kept_samples <= cap < 0.8 * elapsed * 1000, (monitor.kept_samples, elapsed)
        # The driver's power samples (50 a second): the history and the open window's start's, no more.
        kept_driver_power = monitor._store.kept_driver_power
        assert 0 < kept_driver_power <= 1.2 * 50 * (1.0 + 2 * EDGE_S + 0.5) < 0.8 * elapsed * 50
        whole = monitor.end_window("whole run")
    assert whole.gpus[0].method == "fused"
    assert_covers(whole, exact_j(sim, whole))
    assert whole.gpus[0].samples > 0.5 * elapsed * 1000  # counted as they came, though not kept


def test_every_gpu_is_measured_and_the_total_adds_them(sim: SimulatedNvml) -> None:
    sim.configure(SimConfig(gpus=(GpuSpec(), GpuSpec())))
    with Monitor(simulate=True) as monitor:
        assert monitor.gpus == (0, 1)
        sim.set_utilization(0, 90)
        sim.set_utilization(1, 10)
        time.sleep(0.3)
        with monitor.window("both") as handle:
            time.sleep(0.5)
    m = handle.measurement
    assert m is not None and sorted(m.gpus) == [0, 1]
    for gpu in (0, 1):
        assert_covers(m, exact_j(sim, m, gpu), gpu)
    assert m.gpus[0].energy_j > m.gpus[1].energy_j  # type: ignore[operator]
    assert m.total_energy_j == pytest.approx(m.gpus[0].energy_j + m.gpus[1].energy_j)  # type: ignore[operator]
    truth = exact_j(sim, m, 0) + exact_j(sim, m, 1)
    assert m.total_energy_uncertainty_j is not None
    assert abs(m.total_energy_j - truth) <= m.total_energy_uncertainty_j  # type: ignore[operator]


def test_a_gpu_the_node_lacks_or_a_history_too_short_is_refused_at_once() -> None:
    with pytest.raises(DeviceNotFound, match="GPU 3 not found"):
        Monitor([3], simulate=True)
    with pytest.raises(UsageError, match="history_s"):
        Monitor(simulate=True, history_s=0.5)


def test_closing_twice_is_fine_and_a_closed_monitor_measures_nothing() -> None:
    monitor = Monitor(simulate=True)
    monitor.begin_window("left open")
    monitor.close()
    monitor.close()
    assert monitor.closed and "closed" in repr(monitor)
    with pytest.raises(UsageError, match="closed"):
        monitor.begin_window("late")
    with pytest.raises(UsageError, match="closed"):
        monitor.end_window("left open")


def test_without_a_driver_the_monitor_says_it_measures_the_simulated_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LIBRARY_ENV, "/nonexistent/libnvidia-ml.so.1")
    with pytest.warns(RuntimeWarning, match="SIMULATED GPU"):
        monitor = gpuprof.Monitor()
    with monitor, monitor.window("w", wait=False) as handle:
        time.sleep(0.05)
    m = handle.measurement
    assert isinstance(m, gpuprof.Measurement) and m.simulated
    assert "SIMULATED GPU" in str(m) and "simulated=True" in repr(m)
    assert m.as_dict()["simulated"] is True
    with pytest.raises(Exception, match="nonexistent"):
        Monitor(simulate=False)


def test_a_past_interval_is_measured_within_the_history_and_refused_beyond_it(
    sim: SimulatedNvml,
) -> None:
    with Monitor(simulate=True, history_s=1.0) as monitor:
        sim.set_utilization(0, 80)
        time.sleep(0.2)
        t0 = time.monotonic_ns()
        time.sleep(0.4)
        t1 = time.monotonic_ns()
        m = monitor.interval("past", t0, t1)
        assert (m.name, m.t_start_ns, m.t_end_ns) == ("past", t0, t1)
        assert m.gpus[0].method == "fused"
        assert_covers(m, exact_j(sim, m))
        with pytest.raises(ValueError, match="not within this monitor's run"):
            monitor.interval("future", t0, time.monotonic_ns() + 10**9)
        time.sleep(2.5)
        with pytest.raises(ValueError, match="keeps 1 s of history"):
            monitor.interval("forgotten", t0, t1)


def test_every_window_is_estimated_with_the_drivers_power_samples_around_it(
    monitor: Monitor, fused_driver_power: Callable[..., list[np.ndarray | None]]
) -> None:
    given = fused_driver_power(measurement)
    with monitor.window("block") as handle:
        time.sleep(1.2)  # the sampler reads the driver's buffer every 0.5 s or so
    m = handle.measurement
    assert m is not None
    monitor.interval("again", m.t_start_ns, m.t_end_ns)
    assert len(given) == 2  # one per window and GPU
    for driver_power in given:
        assert driver_power is not None and driver_power.dtype == DRIVER_POWER_DTYPE
        inside = driver_power[(driver_power["t_ns"] >= m.t_start_ns) & (driver_power["t_ns"] <= m.t_end_ns)]
        assert inside.size >= 25  # one every 20 ms on the simulated GPU, as on an H100


def test_a_measurement_is_frozen_and_reads_as_a_report(monitor: Monitor) -> None:
    with monitor.window("report", wait=False) as handle:
        time.sleep(0.05)
    m = handle.measurement
    assert m is not None
    with pytest.raises(AttributeError):
        m.name = "other"  # type: ignore[misc]
    text = str(m)
    assert text.startswith("window 'report' (SIMULATED GPU): ") and "GPU 0: " in text and " J (" in text
    assert "SHORTER THAN A SENSOR UPDATE" in text and m.gpus[0].short  # 50 ms < one 100 ms update
    alone = str(m.gpus[0])  # printed on its own, a GPU's figures still say where and over what they come from
    assert alone.startswith("SIMULATED GPU 0: ") and f"over {m.duration_s:.3f} s" in alone
    described = m.as_dict()["gpus"]["0"]  # type: ignore[index]
    assert described["method"] == m.gpus[0].method and described["method_description"]
