"""What ``gpuprof.Monitor`` returns for a window: its energy per GPU by the best method available, with that
method's bound, and the power and clocks seen (docs/measurement.md, "Measuring your own code")."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .energy import FUSED_METHOD, FusedEnergy, energy_window, reason_names
from .window_records import WindowTally

METHODS = {
    "fused": FUSED_METHOD,
    "counter": "the energy counter as in fused, with an edge past the last counter update seen extended by "
    "the power readings (that extension is all in the bound): the counter had not updated past the edge yet",
    "integrated": "integrated instant power (sample and hold): the mean of the sensor's readings over the "
    "window, bounded by their spread and one sensor update of staleness at the edges",
}


@dataclass(frozen=True)
class GpuMeasurement:
    """One GPU over one window. ``energy_j`` is the best figure, ``method`` says which (a key of METHODS) and
    ``energy_uncertainty_j`` is its bound; the other methods' figures stand beside it with theirs."""

    gpu: int
    energy_j: float | None  # None: the GPU could not be read in the window
    energy_uncertainty_j: float | None
    method: str | None  # "fused", "counter" or "integrated"
    counter_energy_j: float | None  # the energy counter's figure (fused, or with an edge extended)
    counter_uncertainty_j: float | None
    integrated_energy_j: float | None
    integrated_uncertainty_j: float | None
    mean_power_w: float | None  # energy_j over the window's duration
    peak_power_w: float | None  # the highest instant-power reading in the window
    memory_power_w: float | None  # mean memory power, where the GPU reports it (Hopper and newer)
    sm_clock_mhz_median: float | None  # observed SM clock over the window's samples
    sm_clock_mhz_p5: float | None
    sm_clock_mhz_p95: float | None
    clock_event_reasons: tuple[str, ...]  # every reason seen in the window (gpu_idle, sw_power_cap...)
    short: bool  # shorter than one power-sensor update: no figure is reliable (energy_window's flag)
    samples: int
    power_source: str  # "instant" (field 186) or "average_1s"
    duration_s: float | None = None  # the window's, as its Measurement's
    simulated: bool = False  # measured on gpuprof's simulated GPU, not a real one

    @property
    def method_description(self) -> str:
        return METHODS.get(self.method or "", "no figure: neither the energy counter nor the power was read")

    def __str__(self) -> str:
        label = f"{'SIMULATED ' if self.simulated else ''}GPU {self.gpu}"
        if self.energy_j is None:
            return f"{label}: no energy figure ({self.samples} samples)"
        over = f" over {self.duration_s:.3f} s" if self.duration_s is not None else ""
        parts = [
            f"{label}: {self.energy_j:.3f} ± {self.energy_uncertainty_j or 0:.3f} J ({self.method}){over}"
        ]
        if self.mean_power_w is not None:
            parts.append(f"{self.mean_power_w:.1f} W mean")
        if self.peak_power_w is not None:
            parts.append(f"{self.peak_power_w:.1f} W peak")
        if self.sm_clock_mhz_median is not None:
            parts.append(
                f"SM {self.sm_clock_mhz_median:.0f} MHz (p5-p95 {self.sm_clock_mhz_p5:.0f}-"
                f"{self.sm_clock_mhz_p95:.0f})"
            )
        if self.memory_power_w is not None:
            parts.append(f"memory {self.memory_power_w:.1f} W")
        if self.clock_event_reasons:
            parts.append("reasons " + "+".join(self.clock_event_reasons))
        if self.short:
            parts.append("SHORTER THAN A SENSOR UPDATE: unreliable")
        return ", ".join(parts)


@dataclass(frozen=True)
class Measurement:
    """One window of this process's code: when it ran (CLOCK_MONOTONIC ns, as ``time.monotonic_ns()``) and
    each GPU's figures. ``simulated``: measured on gpuprof's simulated GPU, not a real one."""

    name: str
    t_start_ns: int
    t_end_ns: int
    duration_s: float
    simulated: bool
    gpus: dict[int, GpuMeasurement]  # NVML index -> figures

    @property
    def total_energy_j(self) -> float | None:
        """Every GPU's best figure added up; None when a GPU has none."""
        figures = [g.energy_j for g in self.gpus.values()]
        return None if any(f is None for f in figures) else sum(f for f in figures if f is not None)

    @property
    def total_energy_uncertainty_j(self) -> float | None:
        """The GPUs' bounds added up: it holds whenever each GPU's does."""
        bounds = [g.energy_uncertainty_j for g in self.gpus.values()]
        return None if any(b is None for b in bounds) else sum(b for b in bounds if b is not None)

    def __str__(self) -> str:
        label = "SIMULATED GPU" if self.simulated else "GPU"
        total = self.total_energy_j
        head = f"window {self.name!r} ({label}): {self.duration_s:.3f} s"
        if total is not None:
            head += f", {total:.3f} ± {self.total_energy_uncertainty_j or 0:.3f} J"
        return "\n  ".join([head, *(str(g) for g in self.gpus.values())])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures, each GPU's with its method described."""
        out = asdict(self)
        out["gpus"] = {
            str(gpu): {**asdict(g), "method_description": g.method_description}
            for gpu, g in self.gpus.items()
        }
        out["total_energy_j"] = self.total_energy_j
        out["total_energy_uncertainty_j"] = self.total_energy_uncertainty_j
        return out


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def gpu_measurement(
    samples: np.ndarray,
    energy: np.ndarray,
    tally: WindowTally,
    t0: int,
    t1: int,
    driver_power: np.ndarray | None = None,
    simulated: bool = False,
) -> GpuMeasurement:
    """The figures of ``tally``'s GPU over [t0, t1] from the records kept (``driver_power``: the driver's
    power samples, where it keeps them) and the window's tally.

    The fused figure is best when the energy counter updated on both sides of each edge; otherwise the
    smaller bound wins, between the counter with an edge extended and integrated power.
    """
    gpu = tally.gpu
    fused = FusedEnergy(samples, energy, gpu, driver_power)
    window = energy_window(samples, energy, gpu, t0, t1, fused, driver_power)
    counter, counter_bound = _number(window.energy_counter_j), _number(window.energy_counter_uncertainty_j)
    integrated = _number(window.energy_integrated_j)
    integrated_bound = _number(window.energy_integrated_uncertainty_j)
    both_edges_inside = fused.usable and float(fused.t[0]) <= t0 and t1 < float(fused.t[-1])
    candidates = []
    if counter is not None and counter_bound is not None:
        candidates.append(("fused" if both_edges_inside else "counter", counter, counter_bound))
    if integrated is not None and integrated_bound is not None:
        candidates.append(("integrated", integrated, integrated_bound))
    best = candidates[0] if both_edges_inside else min(candidates, key=lambda c: c[2], default=None)
    method, energy_j, bound = best if best is not None else (None, None, None)
    duration_s = (t1 - t0) / 1e9
    mean = energy_j / duration_s if energy_j is not None and duration_s > 0 else _number(window.mean_power_w)
    return GpuMeasurement(
        gpu=gpu,
        energy_j=energy_j,
        energy_uncertainty_j=bound,
        method=method,
        counter_energy_j=counter,
        counter_uncertainty_j=counter_bound,
        integrated_energy_j=integrated,
        integrated_uncertainty_j=integrated_bound,
        mean_power_w=mean,
        peak_power_w=_number(window.peak_power_w),
        memory_power_w=tally.memory_power_w,
        sm_clock_mhz_median=tally.clock_percentile(50),
        sm_clock_mhz_p5=tally.clock_percentile(5),
        sm_clock_mhz_p95=tally.clock_percentile(95),
        clock_event_reasons=tuple(reason_names(tally.reasons)),
        short=window.shorter_than_sensor_update,
        samples=tally.samples,
        power_source=window.power_source,
        duration_s=duration_s,
        simulated=simulated,
    )
