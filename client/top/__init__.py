"""gpuprof: what LLM inference costs in energy and time on NVIDIA GPUs, and how GPU clocks change it.

The package a user's own code imports (setup.py installs this folder as ``gpuprof`` itself; the daemon,
the sampler and the clients are its subpackages ``gpuprof.daemon``, ``gpuprof.sampler``, ``gpuprof.client``):

- ``gpuprof.markers``: marks windows, requests and sweep points from inside a program that gpuprofd runs
  (``workload: command`` or ``gpuprof run -- CMD``); pure Python, no torch, no daemon.
- ``gpuprof.Monitor``: measures windows of this process's own code with the sampler in-process, without a
  daemon.
- ``gpuprof.Client``: submits jobs to gpuprofd and reads their results.

Each is imported on first use, so ``import gpuprof.markers`` in a job's program costs only the markers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Client", "Measurement", "Monitor", "markers"]

_LAZY = {
    "Client": ("gpuprof.client.api", "Client"),
    "Monitor": ("gpuprof.sampler.monitor", "Monitor"),
    "Measurement": ("gpuprof.sampler.monitor", "Measurement"),
    "markers": ("gpuprof.markers", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
