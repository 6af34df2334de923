"""A job's energy result: the figures of ``energy_window`` for the whole job and for each phase window."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from gpuprof.sampler.energy import SENSOR_UPDATE_S, FusedEnergy, energy_window
from gpuprof.sampler.errors import nvml_error_name
from gpuprof.sampler.records import MISSING_POWER

RESULT_VERSION = 1
REQUEST_PHASES = ("batch", "tokenize", "prefill", "decode")  # an llm job's per-batch windows

# The EnergyWindow figures a result carries, for the job and for each window, under these names.
FIGURES = (
    "energy_counter_j",
    "energy_counter_uncertainty_j",
    "energy_integrated_j",
    "energy_integrated_uncertainty_j",
    "duration_s",
    "mean_power_w",
    "peak_power_w",
    "sm_clock_min_mhz",
    "sm_clock_median_mhz",
    "sm_clock_max_mhz",
    "clock_event_reasons",
    "power_source",
    "samples",
    "distinct_power_updates",
    "counter_t_start_ns",
    "counter_t_end_ns",
    "shorter_than_sensor_update",
    "energy_integrated_method",
    "energy_counter_method",
)

Plain = str | int | float | bool | None | list["Plain"] | dict[str, "Plain"]


class PhaseWindowLike(Protocol):
    """What a result needs of a phase window (``daemon.markers.PhaseWindow`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def t_start_ns(self) -> int: ...

    @property
    def t_end_ns(self) -> int: ...

    @property
    def attrs(self) -> Mapping[str, object]: ...


def plain(value: object, where: str = "value") -> Plain:
    """``value`` as msgpack- and JSON-ready built-ins; a non-finite float becomes None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return plain(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), where)
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which a result cannot carry")


def window_figures(
    samples: np.ndarray,
    energy: np.ndarray,
    gpu: int,
    t_start_ns: int,
    t_end_ns: int,
    fused: FusedEnergy | None = None,
    driver_power: np.ndarray | None = None,
) -> dict[str, Any]:
    """The result figures of ``gpu`` over [t_start_ns, t_end_ns] (``fused``: the trace's, built once;
    ``driver_power``: the driver's power samples, where it keeps them)."""
    if t_end_ns < t_start_ns:
        raise ValueError(f"window ends ({t_end_ns} ns) before it starts ({t_start_ns} ns)")
    t0, t1 = int(t_start_ns), int(t_end_ns)
    figures = energy_window(samples, energy, gpu, t0, t1, fused, driver_power).as_dict()
    return {name: plain(figures[name], name) for name in FIGURES}


def job_result(
    samples: np.ndarray,
    energy: np.ndarray,
    gpu: int,
    t_start_ns: int,
    t_end_ns: int,
    windows: Sequence[PhaseWindowLike],
    simulated: bool,
    driver_power: np.ndarray | None = None,
) -> dict[str, Any]:
    """A job's result: its figures over [t_start_ns, t_end_ns] and those of each phase window, on ``gpu``
    (``driver_power``: the driver's power samples of the trace, where it keeps them).

    Times are CLOCK_MONOTONIC ns, as in the trace. Only built-in types: the result goes into msgpack
    replies and the job store's JSON as is.
    """
    result: dict[str, Any] = {
        "result_version": RESULT_VERSION,
        "gpu": int(gpu),
        "t_start_ns": int(t_start_ns),
        "t_end_ns": int(t_end_ns),
        "simulated": bool(simulated),
        "sensor_update_s": SENSOR_UPDATE_S,
    }
    fused = FusedEnergy(samples, energy, gpu, driver_power)  # once for the job and every window
    result.update(window_figures(samples, energy, gpu, t_start_ns, t_end_ns, fused, driver_power))
    out_windows: list[Plain] = []
    for window in windows:
        if window.name in REQUEST_PHASES:  # many and short: they feed the requests table instead
            continue
        if window.t_end_ns < window.t_start_ns:  # a worker's (or a program's) markers out of order
            out_windows.append(
                {
                    "name": str(window.name),
                    "t_start_ns": int(window.t_start_ns),
                    "t_end_ns": int(window.t_end_ns),
                    "attrs": plain(dict(window.attrs or {}), f"window {window.name!r} attrs"),
                    "problem": "ends before it begins: no figures",
                }
            )
            continue
        figures = window_figures(
            samples, energy, gpu, window.t_start_ns, window.t_end_ns, fused, driver_power
        )
        out_windows.append(
            {
                "name": str(window.name),
                "t_start_ns": int(window.t_start_ns),
                "t_end_ns": int(window.t_end_ns),
                "attrs": plain(dict(window.attrs or {}), f"window {window.name!r} attrs"),
                **figures,
            }
        )
    result["windows"] = out_windows
    return result


def unmeasured(samples: np.ndarray, energy: np.ndarray, gpu: int) -> str | None:
    """Why a job on ``gpu`` measured nothing (every power and counter read failed); None when it measured."""
    own, readings = samples[samples["gpu"] == gpu], energy[energy["gpu"] == gpu]
    powered = np.any((own["missing"] & MISSING_POWER) == 0)
    if not (own.size or readings.size) or powered or np.any(readings["nvml_return"] == 0):
        return None
    errors = ", ".join(nvml_error_name(int(code)) for code in np.unique(readings["nvml_return"]))
    return f"GPU {gpu} could not be read during the job ({errors or 'NVML errors'}): its energy is unknown"
