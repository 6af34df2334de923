"""The simulated NVML library, through ctypes and through pynvml: what the sampler and DVFS code rely on.

Each test has its own state file (tests/conftest.py sets GPUPROF_SIM_STATE). Timing-sensitive behaviour is
tested on the manual clock, so the assertions are exact and nothing sleeps.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pynvml
import pytest

from gpuprof.client.wire.errors import ConfigError
from gpuprof.sampler.errors import NvmlError
from gpuprof.sampler.library import simulated_library_path
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

MS = 1_000_000
T0 = 1_000_000 * MS  # manual-clock start: a multiple of every sensor period, so GPU 0's ticks fall on it
SUCCESS, UNINITIALIZED, INVALID_ARGUMENT, NOT_SUPPORTED, NO_PERMISSION = 0, 1, 2, 3, 4
NOT_FOUND, INSUFFICIENT_SIZE, GPU_IS_LOST = 6, 7, 15
IDLE, APPLICATIONS_CLOCKS, SW_POWER_CAP = 0x1, 0x2, 0x4
VISIBLE = 9 * MS  # a counter refresh shows this long after its tick
FAST = GpuSpec(energy_call_latency_us=0)  # the default GPU without the energy read's 2.8 ms


def config(gpus: int = 1, allow: bool = False, **spec: object) -> SimConfig:
    gpu = GpuSpec(**{"energy_call_latency_us": 0, **spec})  # type: ignore[arg-type]
    return SimConfig(gpus=(gpu,) * gpus, allow_unprivileged_control=allow)


class Nvml:
    """The library's NVML functions through bare ctypes, returning NVML's codes rather than raising."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(simulated_library_path())
        self.lib.nvmlErrorString.restype = ctypes.c_char_p

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lib, name)

    def handle(self, index: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        assert self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) == SUCCESS
        return handle

    def fields(self, handle: ctypes.c_void_p, *ids: int) -> list[pynvml.c_nvmlFieldValue_t]:
        values = (pynvml.c_nvmlFieldValue_t * len(ids))()
        for value, field_id in zip(values, ids, strict=True):
            value.fieldId = field_id
        assert self.lib.nvmlDeviceGetFieldValues(handle, len(ids), values) == SUCCESS
        return list(values)

    def instant_mw(self, handle: ctypes.c_void_p) -> int:
        (value,) = self.fields(handle, 186)
        assert value.nvmlReturn == SUCCESS
        return int(value.value.uiVal)

    def uint(self, function: str, handle: ctypes.c_void_p, *args: int) -> int:
        out = ctypes.c_uint()
        code = getattr(self.lib, function)(handle, *args, ctypes.byref(out))
        assert code == SUCCESS, f"{function}: {code}"
        return out.value

    def energy_mj(self, handle: ctypes.c_void_p) -> int:
        out = ctypes.c_ulonglong()
        assert self.lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(out)) == SUCCESS
        return out.value


@pytest.fixture
def sim() -> SimulatedNvml:
    return SimulatedNvml()


@pytest.fixture
def nvml() -> Iterator[Nvml]:
    api = Nvml()
    assert api.nvmlInit_v2() == SUCCESS
    yield api
    assert api.nvmlShutdown() == SUCCESS


@pytest.fixture
def pynvml_sim() -> Iterator[ModuleType]:
    saved = pynvml.nvmlLib
    pynvml.nvmlLib = ctypes.CDLL(simulated_library_path())
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml.nvmlInit()
    yield pynvml
    pynvml.nvmlShutdown()
    pynvml.nvmlLib = saved
    pynvml._nvmlGetFunctionPointer_cache.clear()


def integral(samples: list[tuple[int, float]]) -> float:
    """Trapezoid integral in J of (t_ns, watts) samples; a repeated t marks a step."""
    return sum((p0 + p1) / 2 * (t1 - t0) * 1e-9 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


def test_inventory_through_ctypes(sim: SimulatedNvml, nvml: Nvml) -> None:
    count = ctypes.c_uint()
    assert nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == SUCCESS and count.value == 1
    handle = nvml.handle(0)
    name = ctypes.create_string_buffer(96)
    assert nvml.nvmlDeviceGetName(handle, name, 96) == SUCCESS
    assert name.value == b"NVIDIA H100 80GB HBM3 (simulated)"
    assert nvml.nvmlDeviceGetName(handle, name, 10) == INSUFFICIENT_SIZE

    size = ctypes.c_uint(0)
    assert nvml.nvmlDeviceGetSupportedMemoryClocks(handle, ctypes.byref(size), None) == INSUFFICIENT_SIZE
    memory = (ctypes.c_uint * size.value)()
    assert nvml.nvmlDeviceGetSupportedMemoryClocks(handle, ctypes.byref(size), memory) == SUCCESS
    assert list(memory) == [2619, 1593]
    size = ctypes.c_uint(0)
    assert (
        nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 2619, ctypes.byref(size), None) == INSUFFICIENT_SIZE
    )
    graphics = (ctypes.c_uint * size.value)()
    assert nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 2619, ctypes.byref(size), graphics) == SUCCESS
    assert list(graphics) == list(range(1980, 344, -15)) and len(graphics) == 110
    assert nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 1000, ctypes.byref(size), graphics) == NOT_FOUND

    assert nvml.uint("nvmlDeviceGetMaxClockInfo", handle, 1) == 1980
    assert nvml.uint("nvmlDeviceGetMaxClockInfo", handle, 2) == 2619
    assert nvml.uint("nvmlDeviceGetPowerManagementDefaultLimit", handle) == 700_000
    assert nvml.uint("nvmlDeviceGetEnforcedPowerLimit", handle) == 700_000
    low, high = ctypes.c_uint(), ctypes.c_uint()
    assert (
        nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle, ctypes.byref(low), ctypes.byref(high)) == 0
    )
    assert (low.value, high.value) == (200_000, 700_000)
    assert nvml.uint("nvmlDeviceGetApplicationsClock", handle, 0) == 1980


def test_inventory_through_pynvml(sim: SimulatedNvml, pynvml_sim: ModuleType) -> None:
    sim.configure(config(gpus=3))
    nv = pynvml_sim
    assert nv.nvmlDeviceGetCount() == 3
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(3)]
    uuids = [nv.nvmlDeviceGetUUID(h) for h in handles]
    assert len(set(uuids)) == 3 and all(u.startswith("GPU-") for u in uuids)
    assert [nv.nvmlDeviceGetIndex(h) for h in handles] == [0, 1, 2]
    assert nv.nvmlDeviceGetName(handles[2]) == "NVIDIA H100 80GB HBM3 (simulated)"
    assert nv.nvmlDeviceGetSupportedMemoryClocks(handles[0]) == [2619, 1593]
    assert len(nv.nvmlDeviceGetSupportedGraphicsClocks(handles[0], 1593)) == 110
    assert nv.nvmlDeviceGetPowerManagementLimitConstraints(handles[1]) == [200_000, 700_000]
    assert nv.nvmlDeviceGetPowerManagementLimit(handles[1]) == 700_000
    assert nv.nvmlDeviceGetClockInfo(handles[0], nv.NVML_CLOCK_SM) == 345
    assert nv.nvmlDeviceGetClockInfo(handles[0], nv.NVML_CLOCK_MEM) == 2619
    assert nv.nvmlDeviceGetCurrentClocksEventReasons(handles[0]) == IDLE
    assert nv.nvmlDeviceGetCurrentClocksThrottleReasons(handles[0]) == IDLE
    assert 20 < nv.nvmlDeviceGetTemperature(handles[0], nv.NVML_TEMPERATURE_GPU) < 50
    power, energy = nv.nvmlDeviceGetFieldValues(handles[0], [186, 83])
    assert 60_000 < power.value.uiVal < 80_000 and power.valueType == nv.NVML_VALUE_TYPE_UNSIGNED_INT
    assert energy.value.ullVal > 2**32 and energy.valueType == nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    assert 60_000 < nv.nvmlDeviceGetPowerUsage(handles[0]) < 80_000
    assert nv.nvmlSystemGetDriverVersion().startswith("580.")


def test_calls_before_init_and_bad_arguments_are_refused(sim: SimulatedNvml) -> None:
    nvml = Nvml()
    count, handle = ctypes.c_uint(), ctypes.c_void_p()
    assert nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == UNINITIALIZED
    assert nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == UNINITIALIZED
    assert nvml.nvmlShutdown() == UNINITIALIZED
    assert nvml.nvmlInit_v2() == SUCCESS and nvml.nvmlInit_v2() == SUCCESS  # refcounted
    try:
        assert nvml.nvmlDeviceGetHandleByIndex_v2(1, ctypes.byref(handle)) == INVALID_ARGUMENT
        assert nvml.nvmlDeviceGetCount_v2(None) == INVALID_ARGUMENT
        good = nvml.handle(0)
        assert nvml.nvmlDeviceGetPowerUsage(good, None) == INVALID_ARGUMENT
        assert nvml.nvmlDeviceGetPowerUsage(ctypes.c_void_p(0x1234), ctypes.byref(count)) == INVALID_ARGUMENT
        assert nvml.nvmlDeviceGetClockInfo(good, 7, ctypes.byref(count)) == INVALID_ARGUMENT
        assert nvml.nvmlDeviceGetTemperature(good, 5, ctypes.byref(count)) == INVALID_ARGUMENT
        assert nvml.nvmlShutdown() == SUCCESS
        assert nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == SUCCESS  # one init still holds
    finally:
        nvml.nvmlShutdown()
    assert nvml.nvmlDeviceGetPowerUsage(good, ctypes.byref(count)) == UNINITIALIZED
    assert nvml.nvmlErrorString(NO_PERMISSION) == b"Insufficient Permissions"


def test_instant_power_refreshes_every_100ms_with_the_mean_of_the_last_25ms(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    sim.configure(config(utilization_pct=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    step = MS // 4
    times = list(range(T0, T0 + 500 * MS + 1, step))
    readings, power = [], []
    for t in times:
        sim.set_clock(t)
        readings.append(nvml.instant_mw(handle))
        power.append((t, sim.status()[0].power_w))

    changed_at = [
        t for t, before, after in zip(times[1:], readings, readings[1:], strict=False) if before != after
    ]
    assert changed_at == [T0 + k * 100 * MS for k in range(1, 6)]  # every refresh differs, nothing between
    per_ms = MS // step
    gaps = []
    for k in range(1, 6):
        end = k * 100 * per_ms
        window_mean = integral(power[end - 25 * per_ms : end + 1]) / 0.025
        assert readings[end] / 1000 == pytest.approx(window_mean, abs=0.002)
        gaps.append(abs(window_mean - integral(power[end - 100 * per_ms : end + 1]) / 0.1))
    assert max(gaps) > 1.0  # W: 25 ms of a rippling load is not its 100 ms mean


def test_energy_counter_is_the_exact_integral_of_power(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(utilization_pct=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    start_j = sim.status()[0].energy_j
    power, counter = [], []
    for t in range(T0, T0 + 1000 * MS + 1, MS // 2):
        sim.set_clock(t)
        if t == T0 + 437 * MS:  # a change mid-window: the integral is piecewise
            power.append((t, sim.status()[0].power_w))
            sim.set_utilization(0, 40)
        power.append((t, sim.status()[0].power_w))
        counter.append((t, nvml.energy_mj(handle)))

    exact_j = integral(power)
    assert sim.status()[0].energy_j - start_j == pytest.approx(exact_j, abs=1e-4)
    # A refresh shows 9 ms after its tick, as on an H100: the read at T0 + 9 ms shows the energy at T0.
    shown = dict(counter)
    assert shown[T0 + VISIBLE] == int(start_j * 1000)
    changed_at = [t for (_, before), (t, after) in itertools.pairwise(counter) if before != after]
    assert changed_at == [T0 + k * 100 * MS + VISIBLE for k in range(0, 10)]
    for t, mj in counter:
        tick = t - VISIBLE
        if tick >= T0 and (tick - T0) % (100 * MS) == 0:  # the counter is the integral up to its tick
            so_far = integral([(s, p) for s, p in power if s <= tick])
            assert mj - shown[T0 + VISIBLE] == pytest.approx(so_far * 1000, abs=1.5)


def test_sensors_stay_exact_through_more_changes_than_the_history_keeps(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    sim.configure(config(ripple_fraction=0, average_power_period_ms=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    power = [(T0, sim.status()[0].power_w)]  # without ripple, power is constant between changes
    sim.set_clock(T0 + VISIBLE)
    start_mj = nvml.energy_mj(handle)  # the energy at T0, shown 9 ms later
    for i in range(1500):  # 1500 changes in 150 ms: the oldest of the 1024 kept are merged
        t = T0 + 500 * MS + i * MS // 10
        sim.set_clock(t)
        power.append((t, sim.status()[0].power_w))
        sim.set_utilization(0, 100 * (i % 2))
        power.append((t, sim.status()[0].power_w))
    sim.set_clock(T0 + 1000 * MS)
    power.append((T0 + 1000 * MS, sim.status()[0].power_w))
    # The 1 s average now reaches back to T0, before every change still kept: merged, not lost.
    assert nvml.uint("nvmlDeviceGetPowerUsage", handle) == pytest.approx(integral(power) * 1000, abs=1)
    sim.set_clock(T0 + 1000 * MS + VISIBLE)
    assert nvml.energy_mj(handle) - start_mj == pytest.approx(integral(power) * 1000, abs=1)


def test_instant_power_windows_integrated_over_a_steady_load_track_the_counter(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    sim.configure(config(utilization_pct=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    start_mj = nvml.energy_mj(handle)
    sampled_j = 0.0
    for k in range(1, 101):  # 10 s, one read per refresh, as a 1 kHz sampler would integrate it
        sim.set_clock(T0 + k * 100 * MS + MS)
        sampled_j += nvml.instant_mw(handle) / 1000 * 0.1
    counted_j = (nvml.energy_mj(handle) - start_mj) / 1000
    assert counted_j == pytest.approx(675 * 10, rel=0.01)
    assert sampled_j == pytest.approx(counted_j, rel=0.005)


def test_utilization_raises_power_and_clock(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(), manual_clock_ns=T0)
    handle = nvml.handle(0)
    idle = sim.status()[0]
    assert (idle.sm_clock_mhz, idle.clock_event_reasons) == (345, IDLE)
    idle_mw = nvml.instant_mw(handle)
    sim.set_utilization(0, 50, 30)
    busy = sim.status()[0]
    assert (busy.sm_clock_mhz, busy.mem_clock_mhz, busy.clock_event_reasons) == (1980, 2619, 0)
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 1) == 1980
    util = pynvml.c_nvmlUtilization_t()
    assert nvml.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(util)) == SUCCESS
    assert (util.gpu, util.memory) == (50, 30)
    assert busy.power_w > 3 * idle.power_w
    assert nvml.instant_mw(handle) == idle_mw  # the sensor has not refreshed yet
    sim.set_clock(T0 + 100 * MS)
    assert nvml.instant_mw(handle) > 3 * idle_mw


def test_average_power_is_a_one_second_mean_refreshed_every_80ms(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(ripple_fraction=0), manual_clock_ns=T0)
    handle = nvml.handle(0)
    sim.set_utilization(0, 100)
    loaded_w = sim.status()[0].power_w
    readings = []
    for t in range(T0, T0 + 1200 * MS, 10 * MS):
        sim.set_clock(t)
        readings.append(nvml.uint("nvmlDeviceGetPowerUsage", handle) / 1000)
    assert readings[0] == pytest.approx(70, abs=0.001)  # the first second still averages the idle past
    assert readings[64] == pytest.approx(70 + (loaded_w - 70) * 0.64, abs=0.001)  # at 640 ms: 64% loaded
    assert readings[-1] == pytest.approx(loaded_w, abs=0.001)
    assert len(set(readings[:9])) == 2 and readings[7] != readings[8]  # refreshed at 80 ms, not before


def test_power_cap_lowers_the_clock_with_reason_sw_power_cap(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(allow=True, utilization_pct=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    capped = sim.status()[0]
    assert 1700 <= capped.sm_clock_mhz <= 1750 and capped.clock_event_reasons == SW_POWER_CAP
    reasons = ctypes.c_ulonglong()
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(handle, ctypes.byref(reasons)) == SUCCESS
    assert reasons.value == SW_POWER_CAP
    peaks = []
    for k in range(1, 30):
        sim.set_clock(T0 + k * 10 * MS)
        peaks.append(nvml.instant_mw(handle))
    assert 650_000 < max(peaks) <= 700_000
    assert nvml.nvmlDeviceSetPowerManagementLimit(handle, 400_000) == SUCCESS
    lower = sim.status()[0]
    assert lower.sm_clock_mhz < capped.sm_clock_mhz and lower.clock_event_reasons == SW_POWER_CAP
    assert lower.power_w <= 400 and lower.power_limit_w == 400
    assert nvml.uint("nvmlDeviceGetEnforcedPowerLimit", handle) == 400_000


def test_locking_clocks_needs_root_unless_the_config_allows_it(sim: SimulatedNvml, nvml: Nvml) -> None:
    handle = nvml.handle(0)
    expected = SUCCESS if os.geteuid() == 0 else NO_PERMISSION
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1000, 1500) == expected
    assert nvml.nvmlDeviceSetPowerManagementLimit(handle, 500_000) == expected
    locked = sim.status()[0]
    assert locked.locked_sm_clock_range_mhz == (
        (1005, 1500) if expected == SUCCESS else None
    )  # nearest supported

    sim.configure(config(allow=True))
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1000, 1500) == SUCCESS
    assert sim.status()[0].locked_sm_clock_range_mhz == (1005, 1500)


def test_control_calls_validate_their_arguments_and_steer_the_model(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(allow=True, utilization_pct=100, clock_lock_latency_us=0), manual_clock_ns=T0)
    handle = nvml.handle(0)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 300, 1500) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1500, 1000) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1200, 1200) == SUCCESS
    assert (sim.status()[0].sm_clock_mhz, sim.status()[0].clock_event_reasons) == (1200, APPLICATIONS_CLOCKS)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1905, 1980) == SUCCESS
    capped = sim.status()[0]  # the power cap overrides the lock's minimum, as on real GPUs
    assert capped.sm_clock_mhz < 1905 and capped.clock_event_reasons == SW_POWER_CAP
    assert nvml.nvmlDeviceResetGpuLockedClocks(handle) == SUCCESS
    assert sim.status()[0].locked_sm_clock_mhz is None

    assert nvml.nvmlDeviceSetMemoryLockedClocks(handle, 1593, 2000) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceSetMemoryLockedClocks(handle, 1593, 1593) == SUCCESS
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 2) == 1593
    assert nvml.nvmlDeviceResetMemoryLockedClocks(handle) == SUCCESS
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 2) == 2619

    assert nvml.nvmlDeviceSetApplicationsClocks(handle, 2619, 1501) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceSetApplicationsClocks(handle, 1593, 1500) == SUCCESS
    assert sim.status()[0].applications_clocks_mhz == (1593, 1500)
    assert (sim.status()[0].sm_clock_mhz, sim.status()[0].mem_clock_mhz) == (1500, 1593)
    assert nvml.nvmlDeviceResetApplicationsClocks(handle) == SUCCESS
    assert sim.status()[0].applications_clocks_mhz == (2619, 1980)

    assert nvml.nvmlDeviceSetPowerManagementLimit(handle, 150_000) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceSetPowerManagementLimit(handle, 700_001) == INVALID_ARGUMENT
    assert sim.status()[0].power_limit_w == 700


def test_a_clock_lock_takes_effect_after_its_latency(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(allow=True, utilization_pct=100, clock_lock_latency_us=20_000), manual_clock_ns=T0)
    handle = nvml.handle(0)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1200, 1200) == SUCCESS
    status = sim.status()[0]  # the driver reports the lock at once; the clock follows 20 ms later
    assert (status.locked_sm_clock_mhz, status.sm_clock_mhz) == (1200, 1725)
    sim.set_clock(T0 + 19 * MS)
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 1) == 1725
    sim.set_utilization(0, 80)  # a change before the lock holds moves neither the lock's time nor its clock
    sim.set_clock(T0 + 20 * MS)
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 1) == 1200
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 990, 990) == SUCCESS  # at T0 + 20 ms
    sim.set_clock(T0 + 30 * MS)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1410, 1410) == SUCCESS  # 990 never takes effect
    sim.set_clock(T0 + 49 * MS)
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 1) == 1200
    sim.set_clock(T0 + 50 * MS)
    assert nvml.uint("nvmlDeviceGetClockInfo", handle, 1) == 1410
    assert nvml.nvmlDeviceResetGpuLockedClocks(handle) == SUCCESS  # a reset takes as long
    sim.set_clock(T0 + 69 * MS)
    assert (sim.status()[0].locked_sm_clock_mhz, sim.status()[0].sm_clock_mhz) == (None, 1410)
    sim.set_clock(T0 + 70 * MS)
    assert sim.status()[0].sm_clock_mhz == 1980  # 80 % busy: the top clock fits the power limit

    # The energy counter integrates the old clock's power until the lock holds, the new one's after it.
    power = {mhz: _busy_power_w(sim, nvml, mhz) for mhz in (1200, 1410)}
    sim.configure(config(allow=True, utilization_pct=100, ripple_fraction=0), manual_clock_ns=T0)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1200, 1200) == SUCCESS
    sim.set_clock(T0 + 100 * MS)
    assert nvml.nvmlDeviceSetGpuLockedClocks(handle, 1410, 1410) == SUCCESS
    start = sim.status()[0].energy_j
    sim.set_clock(T0 + 200 * MS)
    joules = sim.status()[0].energy_j - start
    assert joules == pytest.approx(0.02 * power[1200] + 0.08 * power[1410], rel=1e-9)


def _busy_power_w(sim: SimulatedNvml, nvml: Nvml, mhz: int) -> float:
    """The mean power of the default GPU fully busy at ``mhz``, without ripple."""
    sim.configure(config(allow=True, utilization_pct=100, ripple_fraction=0, clock_lock_latency_us=0))
    assert nvml.nvmlDeviceSetGpuLockedClocks(nvml.handle(0), mhz, mhz) == SUCCESS
    return sim.status()[0].power_w


def test_control_log_records_every_call(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(gpus=2, allow=True), manual_clock_ns=T0)
    assert nvml.nvmlDeviceSetGpuLockedClocks(nvml.handle(1), 1200, 1500) == SUCCESS
    sim.set_clock(T0 + 5 * MS)
    assert nvml.nvmlDeviceSetPowerManagementLimit(nvml.handle(0), 1) == INVALID_ARGUMENT
    assert nvml.nvmlDeviceResetGpuLockedClocks(ctypes.c_void_p(0x10)) == INVALID_ARGUMENT
    log = sim.control_log()
    assert [(c.seq, c.call, c.gpu, c.args, c.result) for c in log] == [
        (0, "nvmlDeviceSetGpuLockedClocks", 1, (1200, 1500), SUCCESS),
        (1, "nvmlDeviceSetPowerManagementLimit", 0, (1,), INVALID_ARGUMENT),
        (2, "nvmlDeviceResetGpuLockedClocks", None, (), INVALID_ARGUMENT),
    ]
    assert [c.time_ns for c in log] == [T0, T0 + 5 * MS, T0 + 5 * MS]
    assert {(c.pid, c.uid) for c in log} == {(os.getpid(), os.geteuid())}
    assert log[1].result_name == "NVML_ERROR_INVALID_ARGUMENT"

    for _ in range(300):  # the log keeps the latest 256 calls and counts them all
        nvml.nvmlDeviceResetApplicationsClocks(nvml.handle(0))
    log = sim.control_log()
    assert len(log) == 256 and (log[0].seq, log[-1].seq) == (47, 302)


def test_an_injected_failure_fails_only_that_gpu(
    sim: SimulatedNvml, nvml: Nvml, pynvml_sim: ModuleType
) -> None:
    sim.configure(config(gpus=2, allow=True))
    healthy, failing = nvml.handle(0), nvml.handle(1)
    sim.set_failure(1, GPU_IS_LOST)
    out, values = ctypes.c_uint(), (pynvml.c_nvmlFieldValue_t * 1)()
    values[0].fieldId = 186
    assert nvml.nvmlDeviceGetFieldValues(failing, 1, values) == GPU_IS_LOST
    assert nvml.nvmlDeviceGetPowerUsage(failing, ctypes.byref(out)) == GPU_IS_LOST
    assert nvml.nvmlDeviceGetClockInfo(failing, 1, ctypes.byref(out)) == GPU_IS_LOST
    assert nvml.nvmlDeviceSetGpuLockedClocks(failing, 1200, 1500) == GPU_IS_LOST
    assert nvml.nvmlDeviceGetHandleByIndex_v2(1, ctypes.byref(ctypes.c_void_p())) == GPU_IS_LOST
    with pytest.raises(pynvml.NVMLError) as raised:
        pynvml_sim.nvmlDeviceGetPowerUsage(failing)
    assert raised.value.value == GPU_IS_LOST
    assert (
        nvml.nvmlDeviceGetPowerUsage(healthy, ctypes.byref(out)) == SUCCESS and nvml.instant_mw(healthy) > 0
    )
    assert [s.failing_code for s in sim.status()] == [None, GPU_IS_LOST]
    sim.set_failure(1, None)
    assert nvml.nvmlDeviceGetPowerUsage(failing, ctypes.byref(out)) == SUCCESS


def test_instant_power_can_be_configured_unsupported(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(SimConfig(gpus=(FAST, GpuSpec(instant_power_supported=False, energy_call_latency_us=0))))
    plain, without = nvml.handle(0), nvml.handle(1)
    power, energy, unknown = nvml.fields(without, 186, 83, 9999)
    assert (power.nvmlReturn, energy.nvmlReturn, unknown.nvmlReturn) == (
        NOT_SUPPORTED,
        SUCCESS,
        NOT_SUPPORTED,
    )
    assert nvml.fields(plain, 186)[0].nvmlReturn == SUCCESS
    assert nvml.uint("nvmlDeviceGetPowerUsage", without) > 0  # the fallback a sampler uses


def test_the_energy_reads_block_for_milliseconds(sim: SimulatedNvml, nvml: Nvml) -> None:
    handle = nvml.handle(0)  # default config: 2.8 ms, like the H100's
    started = time.perf_counter()
    nvml.energy_mj(handle)
    assert time.perf_counter() - started > 0.001
    started = time.perf_counter()
    nvml.fields(handle, 186, 83)
    assert time.perf_counter() - started > 0.001


def test_a_configured_read_stall_blocks_the_first_power_read_of_each_period(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    sim.configure(config(read_stall_us=20_000, read_stall_period_ms=100), manual_clock_ns=T0)
    handle = nvml.handle(0)

    def seconds(read: Callable[[], object]) -> float:
        started = time.perf_counter()
        read()
        return time.perf_counter() - started

    assert seconds(lambda: nvml.fields(handle, 186)) >= 0.019  # the period's first read stalls
    assert seconds(lambda: nvml.uint("nvmlDeviceGetPowerUsage", handle)) < 0.015  # later ones do not
    sim.set_clock(T0 + 100 * MS)
    assert seconds(lambda: nvml.uint("nvmlDeviceGetPowerUsage", handle)) >= 0.019


def test_temperature_follows_power_with_a_time_constant(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(), manual_clock_ns=T0)
    idle = sim.status()[0]
    assert idle.temp_c == pytest.approx(30 + 0.06 * 70)  # ambient + R * P, settled
    sim.set_utilization(0, 100)
    sim.set_clock(T0 + 30_000 * MS)  # one time constant later
    loaded = sim.status()[0]
    steady_c = 30 + 0.06 * (loaded.energy_j - idle.energy_j) / 30
    assert loaded.temp_c == pytest.approx(steady_c + (idle.temp_c - steady_c) / math.e, abs=0.01)
    assert nvml.uint("nvmlDeviceGetTemperature", nvml.handle(0), 0) == round(loaded.temp_c)


TOTAL_POWER_SAMPLES, KEPT, PERIOD_US, JITTER_US = 0, 120, 20_000, 6_000
REGULAR = {"power_samples_jitter_ms": 0}  # each sample on its tick, as before the jitter was modelled


def samples(
    nvml: Nvml, handle: ctypes.c_void_p, last_seen: int = 0, capacity: int = KEPT, kind: int = 0
) -> tuple[int, int, list[tuple[int, int]]]:
    """nvmlDeviceGetSamples: (return code, value type, [(timeStamp us, mW), ...])."""
    value_type, count = ctypes.c_int(-1), ctypes.c_uint(capacity)
    out = (pynvml.c_nvmlSample_t * max(capacity, 1))()
    code = nvml.nvmlDeviceGetSamples(
        handle, kind, ctypes.c_ulonglong(last_seen), ctypes.byref(value_type), ctypes.byref(count), out
    )
    return code, value_type.value, [(s.timeStamp, s.sampleValue.uiVal) for s in out[: count.value]]


def test_power_samples_are_20ms_apart_each_the_mean_of_the_25ms_ending_2ms_before_it(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    # The default ripple: no two windows hold the same energy. No jitter: each sample on its 20 ms tick.
    sim.configure(config(**REGULAR), manual_clock_ns=T0)
    handle = nvml.handle(0)
    sim.set_clock(T0 + 2035 * MS)
    sim.set_utilization(0, 100)  # a load change where two windows overlap: the samples at 2040 and 2060 ms
    sim.set_clock(T0 + 3007 * MS)
    code, value_type, got = samples(nvml, handle)
    assert (code, value_type, len(got)) == (SUCCESS, 1, KEPT)  # NVML_VALUE_TYPE_UNSIGNED_INT
    stamps = [t for t, _ in got]
    assert {b - a for a, b in itertools.pairwise(stamps)} == {PERIOD_US}
    ticks = [T0 + 3000 * MS - (KEPT - 1 - i) * 20 * MS for i in range(KEPT)]  # GPU 0's phase is 0
    # The timestamps are those ticks on CLOCK_REALTIME, in us.
    offset_us = (time.time_ns() - time.monotonic_ns()) // 1000
    assert abs(stamps[-1] - ticks[-1] // 1000 - offset_us) < 100_000

    ends = sim.exact_energy_j(0, [t - 2 * MS for t in ticks])
    starts = sim.exact_energy_j(0, [t - 27 * MS for t in ticks])
    for (_, mw), start_j, end_j in zip(got, starts, ends, strict=True):
        assert mw == pytest.approx((end_j - start_j) / 0.025 * 1000, abs=1)
    values = [mw for _, mw in got]
    assert max(values[:71]) < 80_000 and min(values[73:]) > 600_000  # idle until 2035 ms, busy after
    assert 80_000 < values[71] < 300_000 < values[72] < min(values[73:])  # 2040, 2060 ms: 3 and 23 ms busy


def test_power_samples_newer_than_the_last_seen_only_and_not_found_when_none_is(
    sim: SimulatedNvml, nvml: Nvml, pynvml_sim: ModuleType
) -> None:
    sim.configure(config(utilization_pct=100), manual_clock_ns=T0)
    handle = nvml.handle(0)
    sim.set_clock(T0 + 3000 * MS)
    _, _, full = samples(nvml, handle)
    assert samples(nvml, handle, last_seen=full[99][0]) == (SUCCESS, 1, full[100:])
    assert samples(nvml, handle, last_seen=full[99][0] + 1) == (SUCCESS, 1, full[100:])
    assert samples(nvml, handle, last_seen=full[-1][0]) == (NOT_FOUND, 1, [])

    sim.set_clock(T0 + 3050 * MS)  # two or three more, as each is taken up to 6 ms off its 20 ms tick
    code, _, newer = samples(nvml, handle, last_seen=full[-1][0])
    stamps = [full[-1][0]] + [t for t, _ in newer]
    assert code == SUCCESS and len(newer) in (2, 3)
    assert all(abs(b - a - PERIOD_US) <= 2 * JITTER_US for a, b in itertools.pairwise(stamps))
    _, _, again = samples(nvml, handle)  # a sample read twice is the same sample: same timestamp, same value
    assert again == full[len(newer) :] + newer
    assert samples(nvml, handle, last_seen=newer[-1][0]) == (NOT_FOUND, 1, [])

    value_type, through_pynvml = pynvml_sim.nvmlDeviceGetSamples(handle, TOTAL_POWER_SAMPLES, full[-1][0])
    assert value_type == 1 and [(s.timeStamp, s.sampleValue.uiVal) for s in through_pynvml] == newer
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml_sim.nvmlDeviceGetSamples(handle, TOTAL_POWER_SAMPLES, newer[-1][0])


def test_the_power_sample_buffer_holds_the_latest_120(sim: SimulatedNvml, nvml: Nvml) -> None:
    sim.configure(config(utilization_pct=100, **REGULAR), manual_clock_ns=T0)
    handle = nvml.handle(0)
    sim.set_clock(T0 + 3000 * MS)
    count, value_type = ctypes.c_uint(0), ctypes.c_int(-1)
    for last_seen in (0, 2**64 - 1):  # the size query answers the buffer's size, whatever is newer
        code = nvml.nvmlDeviceGetSamples(
            handle, 0, ctypes.c_ulonglong(last_seen), ctypes.byref(value_type), ctypes.byref(count), None
        )
        assert (code, count.value, value_type.value) == (SUCCESS, KEPT, 1)

    _, _, full = samples(nvml, handle, capacity=500)
    assert len(full) == KEPT and full[-1][0] - full[0][0] == (KEPT - 1) * PERIOD_US  # ~2.4 s
    assert samples(nvml, handle, capacity=5) == (SUCCESS, 1, full[:5])  # the oldest first
    assert samples(nvml, handle, last_seen=full[9][0], capacity=3) == (SUCCESS, 1, full[10:13])
    sim.set_clock(T0 + 8000 * MS)  # read too late: what was older than 2.4 s is gone
    _, _, later = samples(nvml, handle, last_seen=full[-1][0], capacity=500)
    assert len(later) == KEPT and later[0][0] == full[-1][0] + (5000 * MS // 1000) - (KEPT - 1) * PERIOD_US


def test_power_samples_follow_the_sensor_config_and_phase(sim: SimulatedNvml, nvml: Nvml) -> None:
    spec = {"power_samples_period_ms": 10, "power_samples_window_ms": 5, "power_samples_lag_ms": 0, **REGULAR}
    sim.configure(config(gpus=2, **spec), manual_clock_ns=T0)
    sim.set_utilization(0, 60)
    sim.set_clock(T0 + 2000 * MS)
    (_, _, first), (_, _, second) = (samples(nvml, nvml.handle(i)) for i in (0, 1))
    assert {b[0] - a[0] for a, b in itertools.pairwise(first)} == {10_000}
    assert first[-1][0] - second[-1][0] == 3_000  # GPU 1's sensors tick 37 ms later: 7 ms, mod 10 ms
    ticks = [T0 + 2000 * MS - (KEPT - 1 - i) * 10 * MS for i in range(KEPT)]
    ends, starts = sim.exact_energy_j(0, ticks), sim.exact_energy_j(0, [t - 5 * MS for t in ticks])
    for (_, mw), start_j, end_j in zip(first, starts, ends, strict=True):
        assert mw == pytest.approx((end_j - start_j) / 0.005 * 1000, abs=1)


def test_power_samples_are_taken_up_to_6ms_off_their_ticks_the_same_in_every_call(
    sim: SimulatedNvml, nvml: Nvml
) -> None:
    handle = nvml.handle(0)
    # Without jitter a sample's timestamp is its tick's: this process's CLOCK_REALTIME offset, in us.
    sim.configure(config(**REGULAR), manual_clock_ns=T0)
    sim.set_clock(T0 + 3000 * MS)
    offset_us = samples(nvml, handle)[2][-1][0] - (T0 + 3000 * MS) // 1000

    def taken_ns(stamp_us: int) -> int:  # when the sample was taken, model time (ticks and jitter: whole us)
        return (stamp_us - offset_us) * 1000

    sim.configure(config(), manual_clock_ns=T0)  # the default jitter, 6 ms
    sim.set_clock(T0 + 2035 * MS)
    sim.set_utilization(0, 100)
    sim.set_clock(T0 + 3007 * MS)  # the 3000 ms tick's sample is in, any jitter; the 3020 ms one's not
    code, _, got = samples(nvml, handle)
    assert code == SUCCESS and len(got) == KEPT
    ticks = [T0 + 3000 * MS - (KEPT - 1 - i) * 20 * MS for i in range(KEPT)]
    jitters_us = [taken_ns(t) // 1000 - tick // 1000 for (t, _), tick in zip(got, ticks, strict=True)]
    assert all(abs(j) <= JITTER_US for j in jitters_us) and len(set(jitters_us)) > KEPT // 2
    assert 2000 < sum(abs(j) for j in jitters_us) / KEPT < 4000  # uniform over [-6, 6] ms: 3 ms on average
    intervals = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert all(PERIOD_US - 2 * JITTER_US <= d <= PERIOD_US + 2 * JITTER_US for d in intervals)
    assert len(set(intervals)) > KEPT // 2 and max(intervals) - min(intervals) > JITTER_US
    assert abs(sum(intervals) / len(intervals) - PERIOD_US) <= 2 * JITTER_US / (KEPT - 1)  # ~20 ms on average

    # Each is the mean of the 25 ms ending 2 ms before the time it was taken.
    times = [taken_ns(t) for t, _ in got]
    ends = sim.exact_energy_j(0, [t - 2 * MS for t in times])
    starts = sim.exact_energy_j(0, [t - 27 * MS for t in times])
    for (_, mw), start_j, end_j in zip(got, starts, ends, strict=True):
        assert mw == pytest.approx((end_j - start_j) / 0.025 * 1000, abs=1)

    assert samples(nvml, handle) == (SUCCESS, 1, got)  # read again: the same samples
    sim.configure(config(), manual_clock_ns=T0)  # and after a reset, the same times
    sim.set_clock(T0 + 3007 * MS)
    assert [t for t, _ in samples(nvml, handle)[2]] == [t for t, _ in got]

    # None is there before the time it was taken, and each is from then on.
    sim.set_clock(T0 + 3200 * MS)
    _, _, later = samples(nvml, handle, last_seen=got[-1][0])
    assert len(later) == 10
    sim.configure(config(), manual_clock_ns=T0 + 3007 * MS)  # the same times: step the clock up to each
    for stamp, _ in later:
        sim.set_clock(taken_ns(stamp) - 1000)
        assert samples(nvml, handle)[2][-1][0] < stamp
        sim.set_clock(taken_ns(stamp))
        assert samples(nvml, handle)[2][-1][0] == stamp


def test_power_sample_jitter_stays_below_half_the_period(sim: SimulatedNvml) -> None:
    with pytest.raises(ConfigError, match="power_samples_jitter_ms: must be below half power_samples_period"):
        GpuSpec(power_samples_period_ms=12)  # the default jitter, 6 ms, is half of it
    assert GpuSpec(power_samples_period_ms=12, power_samples_jitter_ms=5.999).power_samples_jitter_ms == 5.999
    with pytest.raises(ConfigError, match="power_samples_jitter_ms: must be in"):
        GpuSpec(power_samples_jitter_ms=-1)
    spec = GpuSpec(power_samples_period_ms=12, power_samples_jitter_ms=5)
    object.__setattr__(spec, "power_samples_jitter_ms", 6.0)  # past Python's check: the library refuses it
    with pytest.raises(NvmlError, match="gpuprofSimConfigure failed: NVML_ERROR_INVALID_ARGUMENT"):
        sim.configure(SimConfig(gpus=(spec,)))


def test_power_samples_refuse_other_types_bad_pointers_and_failing_gpus(sim: SimulatedNvml) -> None:
    sim.configure(config(gpus=2))
    nvml, count, value_type = Nvml(), ctypes.c_uint(KEPT), ctypes.c_int()
    out = (pynvml.c_nvmlSample_t * KEPT)()
    get = nvml.nvmlDeviceGetSamples
    stranger = ctypes.c_void_p(0x1234)
    assert get(stranger, 0, ctypes.c_ulonglong(0), ctypes.byref(value_type), None, out) == UNINITIALIZED
    assert get(stranger, 0, ctypes.c_ulonglong(0), ctypes.byref(value_type), ctypes.byref(count), out) == 1
    assert nvml.nvmlInit_v2() == SUCCESS
    try:
        handle, failing = nvml.handle(0), nvml.handle(1)
        args = (ctypes.c_ulonglong(0), ctypes.byref(value_type), ctypes.byref(count), out)
        assert get(handle, 0, *args) == SUCCESS
        assert get(handle, 1, *args) == NOT_SUPPORTED  # only NVML_TOTAL_POWER_SAMPLES is kept
        assert get(stranger, 0, *args) == INVALID_ARGUMENT
        assert get(handle, 0, ctypes.c_ulonglong(0), None, ctypes.byref(count), out) == INVALID_ARGUMENT
        assert get(handle, 0, ctypes.c_ulonglong(0), ctypes.byref(value_type), None, out) == INVALID_ARGUMENT
        sim.set_failure(1, GPU_IS_LOST)
        assert get(failing, 0, *args) == GPU_IS_LOST
    finally:
        nvml.nvmlShutdown()
