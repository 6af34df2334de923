"""The workloads a job's worker runs, one module per ``workload:`` kind of the job spec.

A workload module's ``run(params, markers, target)`` emits the markers ``load``, ``warmup`` and ``measure``
(each a begin and an end) and its own finer ones, and raises on failure. Imports that need a GPU stack
(torch) happen inside the real-GPU path only.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gpuprof.client.jobspec import BurnParams, JobSpec, LlmParams
from gpuprof.sampler.errors import JobSpecError

from ..markers import MarkerWriter

__all__ = ["GpuTarget", "run_workload", "sigterm_deferred"]


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


def run_workload(spec: JobSpec, markers: MarkerWriter, target: GpuTarget) -> None:
    """Runs the spec's workload to completion, reporting its phases on ``markers``."""
    if isinstance(spec.params, BurnParams):
        from . import burn

        burn.run(spec.params, markers, target, spec.dvfs)
        return
    if isinstance(spec.params, LlmParams):
        from . import llm

        llm.run(spec.params, markers, target, spec.dvfs)
        return
    raise JobSpecError(f"workload {spec.workload!r} is not supported by this worker")
