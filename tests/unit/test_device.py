"""The one NVML device layer (sampler/device.py) against the simulated NVML: inventory, clock and power
control, and NVML's codes translated into gpuprof's errors in one place."""

from __future__ import annotations

import pynvml
import pytest

from gpuprof.sampler.device import NvmlSession, nvml_errors, read_inventory
from gpuprof.sampler.errors import DeviceNotFound, NvmlError, PermissionDenied
from gpuprof.sampler.library import resolve
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

GPU_IS_LOST = 15


def configure(gpus: int, allow_control: bool = True) -> SimulatedNvml:
    sim = SimulatedNvml()
    sim.configure(SimConfig(gpus=(GpuSpec(),) * gpus, allow_unprivileged_control=allow_control))
    return sim


def test_inventory_lists_every_gpu_with_its_clocks_and_limits() -> None:
    configure(2)
    described, unreadable = read_inventory(resolve(simulate=True))
    assert [gpu["index"] for gpu in described] == [0, 1]
    assert unreadable == {}
    first = described[0]
    assert first["simulated"] is True
    assert first["uuid"].startswith("GPU-")
    assert first["graphics_clocks_mhz"] and first["memory_clocks_mhz"]
    assert first["min_power_limit_w"] <= first["power_limit_w"] <= first["max_power_limit_w"]


def test_inventory_leaves_out_a_lost_gpu_and_names_its_error() -> None:
    sim = configure(2)
    sim.set_failure(1, GPU_IS_LOST)
    described, unreadable = read_inventory(resolve(simulate=True))
    assert [gpu["index"] for gpu in described] == [0]
    assert unreadable == {1: "NVML_ERROR_GPU_IS_LOST"}


def test_an_index_the_node_lacks_is_device_not_found() -> None:
    configure(2)
    with pytest.raises(DeviceNotFound, match=r"GPU 5 not found: valid indices are 0\.\.1"):
        read_inventory(resolve(simulate=True), wanted=(5,))
    with NvmlSession(resolve(simulate=True)) as nvml, pytest.raises(DeviceNotFound):
        nvml.gpu(2)


def test_clock_lock_and_power_limit_round_trip() -> None:
    configure(1)
    with NvmlSession(resolve(simulate=True)) as nvml:
        gpu = nvml.gpu(0)
        original = gpu.power_limit_mw()
        gpu.set_power_limit_mw(original - 50_000)
        assert gpu.power_limit_mw() == original - 50_000
        gpu.set_power_limit_mw(original)
        gpu.lock_sm_clocks(900, 900)
        gpu.reset_sm_clocks()
        assert nvml.gpu_by_uuid(gpu.uuid(), 0).uuid() == gpu.uuid()


def test_a_refused_clock_lock_is_permission_denied_naming_the_call_and_gpu() -> None:
    sim = configure(1)
    with NvmlSession(resolve(simulate=True)) as nvml:
        gpu = nvml.gpu(0)
        sim.set_failure(0, 4)  # NVML_ERROR_NO_PERMISSION, as the driver answers a user who is not root
        with pytest.raises(PermissionDenied, match="nvmlDeviceSetGpuLockedClocks on GPU 0"):
            gpu.lock_sm_clocks(900, 900)


def test_the_decorator_translates_every_nvml_code() -> None:
    class Fake:
        index = 3

        @nvml_errors("nvmlDeviceFoo")
        def refused(self) -> None:
            raise pynvml.NVMLError(4)

        @nvml_errors("nvmlDeviceBar")
        def lost(self) -> None:
            raise pynvml.NVMLError(GPU_IS_LOST)

    with pytest.raises(PermissionDenied, match="nvmlDeviceFoo on GPU 3: NVML_ERROR_NO_PERMISSION"):
        Fake().refused()
    with pytest.raises(NvmlError) as lost:
        Fake().lost()
    assert (lost.value.code, lost.value.function, lost.value.gpu) == (GPU_IS_LOST, "nvmlDeviceBar", 3)
    assert "NVML_ERROR_GPU_IS_LOST" in str(lost.value)
