"""gpuprof's one NVML layer for what is not a fast-loop read: which GPUs there are, and their clocks and
power limit, changed and put back.

The Cython sampler reads NVML in its native loop, and the pynvml sampler in Python; everything else (the
daemon's inventory and its clock control, the tests) goes through ``NvmlSession``. Every NVML error is
translated in one place, ``nvml_errors``: NVML_ERROR_NO_PERMISSION becomes PermissionDenied, any other
code an NvmlError naming the call and the GPU. The library is the one NvmlLibrary names (the driver's,
or gpuprof's simulated GPU, its test double).
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pynvml

from .errors import DeviceNotFound, NvmlError, NvmlLibraryNotFound, PermissionDenied, nvml_error_name
from .library import NvmlLibrary

__all__ = ["Gpu", "NvmlSession", "nvml_code", "nvml_errors", "read_inventory", "use_library"]

NO_PERMISSION = 4  # NVML_ERROR_NO_PERMISSION
P = ParamSpec("P")
R = TypeVar("R")
_LIBRARY_LOCK = threading.Lock()


def use_library(path: str) -> None:
    """Point pynvml at the NVML library ``path`` (pynvml itself always loads libnvidia-ml.so.1)."""
    with _LIBRARY_LOCK:
        if getattr(pynvml, "_gpuprof_path", None) != path:
            try:
                pynvml.nvmlLib = ctypes.CDLL(path)
            except OSError as exc:
                raise NvmlLibraryNotFound(path, str(exc).split(": ")[-1]) from exc
            pynvml._nvmlGetFunctionPointer_cache.clear()  # functions resolved in the previous library
            pynvml._gpuprof_path = path


def nvml_code(exc: pynvml.NVMLError) -> int:
    """The NVML return code of a pynvml error."""
    return int(getattr(exc, "value", 999))


def translated(exc: pynvml.NVMLError, call: str, gpu: int | None = None) -> NvmlError | PermissionDenied:
    """The gpuprof error for an NVML error of ``call`` (on ``gpu``)."""
    code = nvml_code(exc)
    if code == NO_PERMISSION:
        where = f" on GPU {gpu}" if gpu is not None else ""
        return PermissionDenied(
            f"{call}{where}: {nvml_error_name(code)}: the driver lets only root (or CAP_SYS_ADMIN) do this"
        )
    return NvmlError(code, call, gpu)


def nvml_errors(call: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a method of Gpu (or a function): a pynvml error in it becomes a gpuprof error."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except pynvml.NVMLError as exc:
                gpu = getattr(args[0], "index", None) if args else None
                raise translated(exc, call, gpu) from exc

        return wrapped

    return wrap


class Gpu:
    """One GPU of an open NvmlSession: what it is, and its clocks and power limit."""

    def __init__(self, handle: Any, index: int | None) -> None:
        self.handle = handle
        self.index = index

    @nvml_errors("nvmlDeviceGetUUID")
    def uuid(self) -> str:
        return _text(pynvml.nvmlDeviceGetUUID(self.handle))

    @nvml_errors("describe")
    def describe(self, simulated: bool) -> dict[str, Any]:
        """What the ``gpus`` request says of it: name, UUID, supported clocks, power limits."""
        memory_clocks = [int(c) for c in pynvml.nvmlDeviceGetSupportedMemoryClocks(self.handle)]
        graphics = [
            int(c) for c in pynvml.nvmlDeviceGetSupportedGraphicsClocks(self.handle, memory_clocks[0])
        ]
        low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self.handle)
        return {
            "index": self.index,
            "name": _text(pynvml.nvmlDeviceGetName(self.handle)),
            "uuid": _text(pynvml.nvmlDeviceGetUUID(self.handle)),
            "simulated": simulated,
            "memory_clocks_mhz": memory_clocks,
            "graphics_clocks_mhz": graphics,
            "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(self.handle) / 1000,
            "min_power_limit_w": low / 1000,
            "max_power_limit_w": high / 1000,
        }

    @nvml_errors("nvmlDeviceGetPowerManagementLimit")
    def power_limit_mw(self) -> int:
        return int(pynvml.nvmlDeviceGetPowerManagementLimit(self.handle))

    @nvml_errors("nvmlDeviceSetPowerManagementLimit")
    def set_power_limit_mw(self, milliwatts: int) -> None:
        pynvml.nvmlDeviceSetPowerManagementLimit(self.handle, int(milliwatts))

    @nvml_errors("nvmlDeviceSetGpuLockedClocks")
    def lock_sm_clocks(self, low_mhz: int, high_mhz: int) -> None:
        pynvml.nvmlDeviceSetGpuLockedClocks(self.handle, low_mhz, high_mhz)

    @nvml_errors("nvmlDeviceResetGpuLockedClocks")
    def reset_sm_clocks(self) -> None:
        pynvml.nvmlDeviceResetGpuLockedClocks(self.handle)

    @nvml_errors("nvmlDeviceSetMemoryLockedClocks")
    def lock_memory_clocks(self, low_mhz: int, high_mhz: int) -> None:
        pynvml.nvmlDeviceSetMemoryLockedClocks(self.handle, low_mhz, high_mhz)

    @nvml_errors("nvmlDeviceResetMemoryLockedClocks")
    def reset_memory_clocks(self) -> None:
        pynvml.nvmlDeviceResetMemoryLockedClocks(self.handle)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlSession:
    """NVML initialised on ``library`` for the ``with`` block (nvmlInit, then nvmlShutdown)."""

    def __init__(self, library: NvmlLibrary) -> None:
        self.library = library

    def __enter__(self) -> NvmlSession:
        use_library(self.library.path)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise translated(exc, "nvmlInit") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        pynvml.nvmlShutdown()

    @nvml_errors("nvmlDeviceGetCount")
    def count(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def gpu(self, index: int) -> Gpu:
        """GPU ``index``; DeviceNotFound when NVML has no such index."""
        count = self.count()
        if not 0 <= index < count:
            raise DeviceNotFound(index, count)
        try:
            return Gpu(pynvml.nvmlDeviceGetHandleByIndex(index), index)
        except pynvml.NVMLError as exc:
            raise translated(exc, "nvmlDeviceGetHandleByIndex", index) from exc

    def gpu_by_uuid(self, uuid: str, index: int | None = None) -> Gpu:
        """The GPU of ``uuid`` (``index`` is what it was known by, for messages)."""
        try:
            return Gpu(pynvml.nvmlDeviceGetHandleByUUID(uuid.encode()), index)
        except pynvml.NVMLError as exc:
            raise translated(exc, f"nvmlDeviceGetHandleByUUID({uuid})", index) from exc


def read_inventory(
    library: NvmlLibrary, wanted: tuple[int, ...] = ()
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """One map per GPU (all of them when ``wanted`` is empty), as the ``gpus`` request returns it, and
    the NVML error of each GPU that could not be read: a lost GPU is left out, the others are served."""
    with NvmlSession(library) as nvml:
        count = nvml.count()
        for index in wanted:
            if index >= count:
                raise DeviceNotFound(index, count)
        described, unreadable = [], {}
        for index in wanted or tuple(range(count)):
            try:
                described.append(nvml.gpu(index).describe(library.simulated))
            except (NvmlError, PermissionDenied) as exc:
                code = exc.code if isinstance(exc, NvmlError) else NO_PERMISSION
                unreadable[index] = nvml_error_name(code)
        return described, unreadable
