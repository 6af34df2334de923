"""Energy over a time window from a trace: from the energy counter and from integrated power, with bounds.

The rules (docs/measurement.md explains them):

* Integrated power holds each power reading until the next one (the sensor reports a step function) and
  sums over the window. Its uncertainty combines the sampling error of the mean (the H100 sensor observes
  only ~25 ms of every ~100 ms) with the staleness of the value at each edge (one sensor update period).
* The counter's energy is the difference between the first and the last reading inside the window,
  extended to the whole window at the mean power those two readings give. A reading reflects the
  counter's last update, up to one update period before it was read, so each edge is uncertain by that
  period; the extension is bounded by the uncovered time at the mean power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .records import MISSING_POWER, MISSING_SM_CLOCK, POWER_SOURCE_NAMES

SENSOR_UPDATE_S = 0.100  # instant power and energy counter refresh period (NVML_FACTS.md, H100)
# How far a power reading can lag what it describes, by source: the instant field averages ~25 ms and
# refreshes every ~100 ms; nvmlDeviceGetPowerUsage is a 1 s average on Ampere and newer.
POWER_LAG_S = {"instant": SENSOR_UPDATE_S, "average_1s": 1.0}
COUNTER_RESOLUTION_J = 0.001

CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    """Names of the clock-event reason bits set in ``mask``."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


@dataclass
class EnergyWindow:
    """Energy, power and clocks of one GPU over one window, with how each figure was obtained."""

    gpu: int
    t_start_ns: int
    t_end_ns: int
    samples: int
    power_source: str
    distinct_power_updates: int
    mean_power_w: float | None
    peak_power_w: float | None
    energy_integrated_j: float | None
    energy_integrated_uncertainty_j: float | None
    energy_counter_j: float | None
    energy_counter_uncertainty_j: float | None
    counter_t_start_ns: int | None
    counter_t_end_ns: int | None
    sm_clock_min_mhz: int | None
    sm_clock_median_mhz: float | None
    sm_clock_max_mhz: int | None
    clock_event_reasons: list[str]

    @property
    def duration_s(self) -> float:
        return (self.t_end_ns - self.t_start_ns) / 1e9

    @property
    def shorter_than_sensor_update(self) -> bool:
        """True when the window is shorter than one power-sensor update: its energy is unreliable."""
        return self.duration_s < POWER_LAG_S.get(self.power_source, SENSOR_UPDATE_S)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["duration_s"] = self.duration_s
        out["shorter_than_sensor_update"] = self.shorter_than_sensor_update
        out["energy_integrated_method"] = f"integrated {self.power_source} power (sample and hold)"
        out["energy_counter_method"] = (
            "nvmlDeviceGetTotalEnergyConsumption difference, extended to the window at its mean power"
        )
        return out


def integrate_power(t_ns: np.ndarray, power_w: np.ndarray, t0: int, t1: int) -> float:
    """Energy in J of a held (step) power signal over [t0, t1]; zero outside the first sample's time."""
    if t_ns.size == 0 or t1 <= t0:
        return 0.0
    starts = np.maximum(t_ns, t0)
    ends = np.minimum(np.append(t_ns[1:], t1), t1)
    widths = np.clip(ends - starts, 0, None)
    return float(np.dot(widths, power_w) / 1e9)


def _update_count(power_w: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(power_w))) + 1 if power_w.size else 0


def counter_delta(energy: np.ndarray, gpu: int, t0: int, t1: int) -> tuple[float, int, int] | None:
    """(joules, t_first, t_last) between the first and last good counter readings inside [t0, t1]."""
    rows = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    mid = (rows["t_start_ns"] + rows["t_end_ns"]) // 2
    inside = rows[(mid >= t0) & (mid <= t1)]
    if inside.size < 2:
        return None
    first, last = inside[0], inside[-1]
    joules = (int(last["energy_mj"]) - int(first["energy_mj"])) / 1000.0
    return (
        joules,
        int((first["t_start_ns"] + first["t_end_ns"]) // 2),
        int((last["t_start_ns"] + last["t_end_ns"]) // 2),
    )


def energy_window(
    samples: np.ndarray, energy: np.ndarray, gpu: int, t0: int | None = None, t1: int | None = None
) -> EnergyWindow:
    """The EnergyWindow of ``gpu`` over [t0, t1] (defaults: the span of its samples)."""
    own = samples[samples["gpu"] == gpu]
    if t0 is None:
        t0 = int(own["t_ns"][0]) if own.size else 0
    if t1 is None:
        t1 = int(own["t_ns"][-1]) if own.size else 0
    all_powered = own[(own["missing"] & MISSING_POWER) == 0]
    held = all_powered[all_powered["t_ns"] < t0][-1:]  # its value still holds at t0
    own = own[(own["t_ns"] >= t0) & (own["t_ns"] <= t1)]
    powered = own[(own["missing"] & MISSING_POWER) == 0]
    t_ns = powered["t_ns"].astype(np.int64)
    power_w = powered["power_mw"].astype(np.float64) / 1000.0
    hold_t = np.concatenate([held["t_ns"].astype(np.int64), t_ns])
    hold_w = np.concatenate([held["power_mw"].astype(np.float64) / 1000.0, power_w])
    clocked = own[(own["missing"] & MISSING_SM_CLOCK) == 0]["sm_clock_mhz"]
    duration_s = (t1 - t0) / 1e9
    mean = peak = integrated = integrated_err = None
    updates = _update_count(power_w)
    if power_w.size:
        integrated = integrate_power(hold_t, hold_w, t0, t1)
        mean = integrated / duration_s if duration_s > 0 else float(power_w.mean())
        peak = float(power_w.max())
        per_update = power_w[np.flatnonzero(np.diff(power_w, prepend=np.nan))]
        spread = float(per_update.std(ddof=1)) if per_update.size > 1 else 0.0
        statistical = duration_s * spread / math.sqrt(max(per_update.size, 1))
        edges = abs(mean) * POWER_LAG_S.get(POWER_SOURCE_NAMES.get(int(powered["power_source"][0]), ""), 1.0)
        integrated_err = math.hypot(statistical, edges)
    counter = counter_delta(energy, gpu, t0, t1)
    counter_j = counter_err = c0 = c1 = None
    if counter is not None:
        raw_j, c0, c1 = counter
        counter_mean = raw_j / ((c1 - c0) / 1e9) if c1 > c0 else 0.0
        # The readings span less than the window: extend at the counter's own mean power, and widen the
        # bound by the whole uncovered time (its power could have been anywhere from 0 to twice the mean).
        uncovered_s = max(0, (c0 - t0) + (t1 - c1)) / 1e9
        counter_j = raw_j + counter_mean * uncovered_s
        counter_err = abs(counter_mean) * (SENSOR_UPDATE_S + uncovered_s) + 2 * COUNTER_RESOLUTION_J
    source = int(own["power_source"][0]) if own.size else 0
    reasons = int(np.bitwise_or.reduce(own["clock_event_reasons"])) if own.size else 0
    return EnergyWindow(
        gpu=gpu,
        t_start_ns=t0,
        t_end_ns=t1,
        samples=int(own.size),
        power_source=POWER_SOURCE_NAMES.get(source, str(source)),
        distinct_power_updates=updates,
        mean_power_w=mean,
        peak_power_w=peak,
        energy_integrated_j=integrated,
        energy_integrated_uncertainty_j=integrated_err,
        energy_counter_j=counter_j,
        energy_counter_uncertainty_j=counter_err,
        counter_t_start_ns=c0,
        counter_t_end_ns=c1,
        sm_clock_min_mhz=int(clocked.min()) if clocked.size else None,
        sm_clock_median_mhz=float(np.median(clocked)) if clocked.size else None,
        sm_clock_max_mhz=int(clocked.max()) if clocked.size else None,
        clock_event_reasons=reason_names(reasons),
    )
