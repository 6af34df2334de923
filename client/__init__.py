"""gpuprof's clients: the Python API (``Client``) and the ``gpuprof`` command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Client, DaemonError, DaemonUnavailable, JobHandle, JobNotFound, JobResult

__all__ = ["Client", "DaemonError", "DaemonUnavailable", "JobHandle", "JobNotFound", "JobResult"]


def __getattr__(name: str) -> Any:
    # Imported on first use: a job worker imports gpuprof.client.wire.jobspec and must not pay for (or need)
    # zmq and pandas.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
