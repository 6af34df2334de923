"""The GPUs NVML reports: names, UUIDs, supported clocks and power limits, read once at start."""

from __future__ import annotations

from typing import Any

import pynvml

from gpuprof.sampler.errors import DeviceNotFound, NvmlError, nvml_error_name
from gpuprof.sampler.library import NvmlLibrary
from gpuprof.sampler.pynvml_sampler import _use_library


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_inventory(
    library: NvmlLibrary, wanted: tuple[int, ...] = ()
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """One map per GPU (all of them when ``wanted`` is empty), as the ``gpus`` request returns it, and
    the NVML error of each GPU that could not be read: a lost GPU is left out, the others are served."""
    _use_library(library.path)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlError(_code(exc), "nvmlInit") from exc
    try:
        count = pynvml.nvmlDeviceGetCount()
        for index in wanted:
            if index >= count:
                raise DeviceNotFound(index, count)
        described, unreadable = [], {}
        for index in wanted or tuple(range(count)):
            try:
                described.append(_describe(index, library.simulated))
            except pynvml.NVMLError as exc:
                unreadable[index] = nvml_error_name(_code(exc))
        return described, unreadable
    finally:
        pynvml.nvmlShutdown()


def _code(exc: pynvml.NVMLError) -> int:
    return int(getattr(exc, "value", 999))


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
