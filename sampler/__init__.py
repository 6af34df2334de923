"""High-rate NVML power and clock sampling: native (Cython) and pure-Python (pynvml) backends."""

from __future__ import annotations

from .backend import Sampler, SamplerConfig, SamplerStats
from .errors import (
    DeviceNotFound,
    GpuprofError,
    NvmlError,
    NvmlLibraryNotFound,
    PermissionDenied,
    UsageError,
)
from .library import NvmlLibrary, resolve

BACKENDS = ("cython", "pynvml")

__all__ = [
    "BACKENDS",
    "DeviceNotFound",
    "GpuprofError",
    "NvmlError",
    "NvmlLibrary",
    "NvmlLibraryNotFound",
    "PermissionDenied",
    "Sampler",
    "SamplerConfig",
    "SamplerStats",
    "UsageError",
    "open_sampler",
    "resolve",
]


def open_sampler(
    config: SamplerConfig,
    library: NvmlLibrary | None = None,
    backend: str = "cython",
    simulate: bool = False,
) -> Sampler:
    """A ready (not yet started) sampler for ``config`` on ``library`` (resolved when not given)."""
    library = library or resolve(simulate=simulate)
    if backend == "cython":
        from .native import CythonSampler

        return CythonSampler(config, library)
    if backend == "pynvml":
        from .pynvml_sampler import PynvmlSampler

        return PynvmlSampler(config, library)
    raise UsageError(f"unknown sampler backend {backend!r}; choose one of {', '.join(BACKENDS)}")
