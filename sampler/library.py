"""Which NVML library gpuprof loads: the driver's, one named by the user, or gpuprof's simulated GPU."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import NvmlLibraryNotFound

DRIVER_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_ENV = "GPUPROF_NVML_LIBRARY"
SIMULATED_FILENAME = "libgpuprof_simnvml.so"
SIMULATED_MARKER = "gpuprofSimVersion"  # exported only by the simulated library


def simulated_library_path() -> str:
    """Path of the simulated NVML library built and installed with gpuprof."""
    path = Path(__file__).with_name(SIMULATED_FILENAME)
    if not path.exists():
        raise NvmlLibraryNotFound(
            str(path), "gpuprof's simulated NVML library is missing; reinstall gpuprof with `pip install .`"
        )
    return str(path)


@dataclass(frozen=True)
class NvmlLibrary:
    """A loadable NVML library and whether it is gpuprof's simulation."""

    path: str
    simulated: bool

    @property
    def label(self) -> str:
        return "simulated GPU" if self.simulated else "NVIDIA driver"


def _load(path: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(path)
    except OSError as exc:
        raise NvmlLibraryNotFound(path, str(exc).split(": ")[-1] or "not loadable") from exc


def resolve(simulate: bool = False, path: str | None = None) -> NvmlLibrary:
    """The NVML library to use: simulated if asked, else ``path``, ``$GPUPROF_NVML_LIBRARY`` or the driver's.

    Raises NvmlLibraryNotFound (which says how to use the simulated GPU) when it cannot be loaded.
    """
    chosen = simulated_library_path() if simulate else path or os.environ.get(LIBRARY_ENV) or DRIVER_LIBRARY
    lib = _load(chosen)
    return NvmlLibrary(path=chosen, simulated=hasattr(lib, SIMULATED_MARKER))


def driver_available() -> bool:
    """Whether the NVIDIA driver's NVML library (or $GPUPROF_NVML_LIBRARY) can be loaded."""
    try:
        resolve()
    except NvmlLibraryNotFound:
        return False
    return True
