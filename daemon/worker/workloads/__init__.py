"""The workloads a job's worker runs, one module per ``workload:`` kind of the job spec.

A workload module's ``run(params, markers, target)`` emits the markers ``load``, ``warmup`` and ``measure``
(each a begin and an end) and its own finer ones, and raises on failure. Imports that need a GPU stack
(torch) happen inside the real-GPU path only.
"""

from __future__ import annotations

from gpuprof.client.wire.errors import JobSpecError
from gpuprof.client.wire.jobspec import BurnParams, CommandParams, JobSpec, LlmParams

from ..markers import MarkerWriter
from .target import GpuTarget, sigterm_deferred

__all__ = ["GpuTarget", "run_workload", "sigterm_deferred"]


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
    if isinstance(spec.params, CommandParams):
        from . import command

        command.run(spec.params, markers, target, spec.dvfs)
        return
    raise JobSpecError(f"workload {spec.workload!r} is not supported by this worker")
