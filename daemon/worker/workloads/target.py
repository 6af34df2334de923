"""Where a workload runs, and how it holds SIGTERM back while it cleans up."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuTarget:
    """Where a workload runs: cuda:0 (CUDA_VISIBLE_DEVICES names it), or simulated GPU ``sim_index``."""

    simulated: bool
    sim_index: int = 0


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Holds SIGTERM back while the block runs (a cleanup that must finish), delivering it afterwards."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
