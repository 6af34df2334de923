"""The GPUs NVML reports: names, UUIDs, supported clocks and power limits, read once at start."""

from __future__ import annotations

from typing import Any

import pynvml

from gpuprof.sampler.errors import DeviceNotFound, NvmlError
from gpuprof.sampler.library import NvmlLibrary
from gpuprof.sampler.pynvml_sampler import _use_library


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_inventory(library: NvmlLibrary, wanted: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """One map per GPU (all of them when ``wanted`` is empty), as the ``gpus`` request returns it."""
    _use_library(library.path)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlError(int(getattr(exc, "value", 999)), "nvmlInit") from exc
    try:
        count = pynvml.nvmlDeviceGetCount()
        for index in wanted:
            if index >= count:
                raise DeviceNotFound(index, count)
        return [_describe(index, library.simulated) for index in (wanted or tuple(range(count)))]
    finally:
        pynvml.nvmlShutdown()


def _describe(index: int, simulated: bool) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory_clocks = [int(c) for c in pynvml.nvmlDeviceGetSupportedMemoryClocks(handle)]
    graphics = [int(c) for c in pynvml.nvmlDeviceGetSupportedGraphicsClocks(handle, memory_clocks[0])]
    low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    return {
        "index": index,
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "simulated": simulated,
        "memory_clocks_mhz": memory_clocks,
        "graphics_clocks_mhz": graphics,
        "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000,
        "min_power_limit_w": low / 1000,
        "max_power_limit_w": high / 1000,
    }
