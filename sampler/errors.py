"""The errors the sampler raises, and the base of every gpuprof error: what went wrong, in one line a user
can act on. The exit code each makes a command return is in client/wire/errors.py's one table."""

from __future__ import annotations

NVML_ERROR_NAMES = {
    0: "NVML_SUCCESS",
    1: "NVML_ERROR_UNINITIALIZED",
    2: "NVML_ERROR_INVALID_ARGUMENT",
    3: "NVML_ERROR_NOT_SUPPORTED",
    4: "NVML_ERROR_NO_PERMISSION",
    5: "NVML_ERROR_ALREADY_INITIALIZED",
    6: "NVML_ERROR_NOT_FOUND",
    7: "NVML_ERROR_INSUFFICIENT_SIZE",
    8: "NVML_ERROR_INSUFFICIENT_POWER",
    9: "NVML_ERROR_DRIVER_NOT_LOADED",
    10: "NVML_ERROR_TIMEOUT",
    11: "NVML_ERROR_IRQ_ISSUE",
    12: "NVML_ERROR_LIBRARY_NOT_FOUND",
    13: "NVML_ERROR_FUNCTION_NOT_FOUND",
    14: "NVML_ERROR_CORRUPTED_INFOROM",
    15: "NVML_ERROR_GPU_IS_LOST",
    16: "NVML_ERROR_RESET_REQUIRED",
    17: "NVML_ERROR_OPERATING_SYSTEM",
    18: "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    19: "NVML_ERROR_IN_USE",
    20: "NVML_ERROR_MEMORY",
    21: "NVML_ERROR_NO_DATA",
    999: "NVML_ERROR_UNKNOWN",
}
NVML_ERROR_CODES = {name: code for code, name in NVML_ERROR_NAMES.items()}


def nvml_error_name(code: int) -> str:
    """The NVML constant's name for a return code (``NVML_ERROR_<code>`` when unknown)."""
    return NVML_ERROR_NAMES.get(code, f"NVML_ERROR_{code}")


class GpuprofError(Exception):
    """Base of every error gpuprof reports to users; ``exit_code`` is what the CLI exits with."""


class UsageError(GpuprofError):
    """A bad argument or option value."""


class NvmlLibraryNotFound(GpuprofError):
    """No NVML library could be loaded: no NVIDIA driver on this machine, or a wrong path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"NVIDIA driver not found: cannot load NVML library {path!r} ({reason}). "
            "Install the NVIDIA driver, set GPUPROF_NVML_LIBRARY to the path of libnvidia-ml.so.1, "
            "or pass --simulate to use gpuprof's simulated GPU."
        )


class NvmlError(GpuprofError):
    """An NVML call returned an error code."""

    def __init__(self, code: int, function: str, gpu: int | None = None) -> None:
        self.code = code
        self.function = function
        self.gpu = gpu
        where = f" on GPU {gpu}" if gpu is not None else ""
        super().__init__(f"{function}{where} failed: {nvml_error_name(code)} ({code})")


class DeviceNotFound(GpuprofError):
    """A GPU index that this node does not have."""

    def __init__(self, index: int, count: int, message: str | None = None) -> None:
        self.index = index
        self.count = count
        valid = f"valid indices are 0..{count - 1}" if count else "NVML reports no GPUs"
        super().__init__(message or f"GPU {index} not found: {valid}")


class PermissionDenied(GpuprofError):
    """An operation the caller is not allowed to perform."""


class OutputError(GpuprofError):
    """An output file that cannot be written."""


class ConfigError(GpuprofError):
    """A configuration file that cannot be used; names the file and, where known, the line and key."""
