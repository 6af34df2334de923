"""Energy over a time window from a trace: fused from the energy counter and the power samples, with
bounds; and from integrated power alone.

The rules (docs/measurement.md explains them and the probe they come from):

* The energy counter is exact at its updates (every ~100 ms), but a read returns the value of the last
  update, up to a period stale. The sampler reads it back to back around each update and keeps the reads
  on both sides of each change, so each update's instant is known within one read (``counter_updates``),
  and within ~1 ms where a stalled read timed it loosely: the updates keep a steady cadence (``on_grid``).
* **Fused** (``energy_counter_j``): the counter's energy between the updates next to the window's edges,
  plus the partial update periods at each edge, split by the power readings: the power is solved for per
  segment (cut at the updates, the window's edges and the driver's samples' spans) so that each period
  holds the counter's energy exactly and each power reading (a ~25 ms average) matches its span
  (``FusedEnergy._local``).
  The bound adds, per edge, the update's timing, the split's distance from an even one and a share of
  the power's swing near the edge.
* **Integrated** power holds each power reading until the next one (the sensor reports a step function) and
  sums over the window. Its uncertainty combines the sampling error of the mean (the H100 sensor observes
  only ~25 ms of every ~100 ms) with the staleness of the value at each edge (one sensor update period).
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
# Where in a read's call the counter's value is taken (0: the call's start, 1: its end), and how long before
# that instant the value was current: benchmarks/counter_probe.py measures both (docs/measurement.md).
COUNTER_LATCH = 0.5
COUNTER_DELAY_NS = 9_000_000
# The instant-power field averages this long before each refresh: a reading is the mean over that span.
INSTANT_WINDOW_NS = 25_000_000
# The driver's total-power samples (nvmlDeviceGetSamples): each the mean of the DRIVER_WINDOW_NS ending
# DRIVER_LAG_NS before its timestamp, one every ~20 ms (benchmarks/power_samples_probe.py on an H100).
DRIVER_WINDOW_NS = 25_000_000
DRIVER_LAG_NS = 2_000_000
# The counter's cadence (on_grid): updates fitted to one line per GRID_BLOCK, from those within GRID_REACH
# of it; an update lies within the line's widest miss of a well-timed update, never closer than
# GRID_MIN_HALF_NS; the well-timed updates must lie whole periods apart, within GRID_STEP_SLACK of one.
GRID_BLOCK, GRID_REACH, GRID_MIN_UPDATES = 10, 50, 8
GRID_TIGHT, GRID_MIN_TIGHT = 2.0, 4  # well timed: within twice the best 5%'s half-width; 4 at least nearby
GRID_MIN_HALF_NS = 1_000_000
GRID_STEP_SLACK = 0.25
CONTINUITY = 0.25  # weight of equal power across a cut that is no edge, against a reading's fit (both W^2)
TIMED_SHARE = 0.25  # a counter period is well timed when its two updates' half-widths are within this share
# 1: windows shorter than an update period are split by the driver's samples where they cover them; 0 (as
# shipped): split evenly, which was as good or better on the simulated GPU (BENCHMARKS.md).
SHORT_SPLIT = 0
DRIVER_SWING_SHARE = 0.2  # of the swing over the driver's sample across an edge: where in it a change fell
SWING_SHARE = 0.25  # of the power's swing near an edge, over its shorter side: what the readings may miss
FUSED_METHOD = (
    "fused: the energy counter (nvmlDeviceGetTotalEnergyConsumption) between its updates, each timed within "
    "one read or by the counter's steady cadence, and the partial update periods at the window's edges "
    "apportioned by the shape of the power (the driver's power samples, nvmlDeviceGetSamples, where the "
    "trace has them; else the instant-power field)"
)

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
        out["energy_counter_method"] = FUSED_METHOD
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


def counter_updates(energy: np.ndarray, gpu: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counter's updates seen in ``energy``: (instant ns, half-width ns, cumulative J), one per change.

    A change seen between two reads happened after the earlier read's value was taken and no later than
    the later read's; the instant is the middle of that span, less the counter's delay (COUNTER_DELAY_NS),
    known within the two reads' whole span.
    """
    rows = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    if rows.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    start = rows["t_start_ns"].astype(np.float64)
    latch = start + COUNTER_LATCH * (rows["t_end_ns"].astype(np.float64) - start)
    mj = rows["energy_mj"].astype(np.int64)
    changed = np.flatnonzero(np.diff(mj) != 0) + 1
    before, after = latch[changed - 1], latch[changed]
    t = (before + after) / 2 - COUNTER_DELAY_NS
    # Where in its call a read takes the value is measured, not exact: the update lies somewhere from the
    # earlier read's start to the later read's end.
    half = (rows["t_end_ns"][changed].astype(np.float64) - start[changed - 1]) / 2
    t, half = on_grid(t, half)
    return t, half, mj[changed] / 1000.0


def on_grid(t: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The updates' instants (ns) and half-widths narrowed by the counter's own cadence.

    The counter updates on a steady grid: on an H100 every ~100 ms (99.9994 and 100.0005 ms in two runs)
    for minutes, the updates whose reads timed them best all within ~1 ms of one line
    (docs/measurement.md). Updates are numbered along the grid from the well-timed ones (within
    GRID_TIGHT of the best-timed 5%); around each run of GRID_BLOCK updates a line is fitted to the
    updates within GRID_REACH of it, each weighted by its inverse squared half-width. An update then lies
    where that line puts it, within the line's widest miss of a well-timed update nearby
    (GRID_MIN_HALF_NS at least) and within what its own reads allow. Where the well-timed updates are not
    whole periods apart (the grid broke: never seen on an H100), where too few are well timed, or where
    the line misses an update's own span, the reads alone time it.
    """
    n = t.size
    if n < GRID_MIN_UPDATES:
        return t, half
    tight = half <= GRID_TIGHT * np.percentile(half, 5)
    anchors = np.flatnonzero(tight)
    if anchors.size < GRID_MIN_TIGHT:
        return t, half
    period = float(np.median(np.diff(t)))
    steps = np.diff(t[anchors]) / period if period > 0 else np.zeros(0)
    if period <= 0 or np.any(np.abs(steps - np.round(steps)) > GRID_STEP_SLACK) or np.any(steps < 0.5):
        return t, half
    anchor_number = np.concatenate([[0.0], np.cumsum(np.round(steps))])
    nearest = np.clip(np.searchsorted(anchors, np.arange(n), side="right") - 1, 0, anchors.size - 1)
    number = anchor_number[nearest] + np.round((t - t[anchors[nearest]]) / period)
    if np.any(np.diff(number) < 1):
        return t, half  # two updates on one grid point: not this grid
    t_out, half_out = t.copy(), half.copy()
    for lo in range(0, n, GRID_BLOCK):
        hi = min(lo + GRID_BLOCK, n)
        near = slice(max(lo - GRID_REACH, 0), min(hi + GRID_REACH, n))
        if np.count_nonzero(tight[near]) < GRID_MIN_TIGHT:
            continue
        x = number[near] - number[lo]
        y = t[near] - t[lo]
        weight = 1.0 / np.maximum(half[near], 1.0)
        design = np.stack([np.ones_like(x), x], axis=1) * weight[:, None]
        (offset, slope), *_ = np.linalg.lstsq(design, y * weight, rcond=None)
        miss = np.abs(y - (offset + slope * x))
        width = max(float(miss[tight[near]].max()), GRID_MIN_HALF_NS)
        line = t[lo] + offset + slope * (number[lo:hi] - number[lo])
        low = np.maximum(t[lo:hi] - half[lo:hi], line - width)
        high = np.minimum(t[lo:hi] + half[lo:hi], line + width)
        # A span holding more than one grid point (reads far apart: a starved sampler) cannot say which
        # update its change was: the reads alone time it.
        fits = (low <= high) & (2 * half[lo:hi] < period - 2 * width)
        t_out[lo:hi] = np.where(fits, (low + high) / 2, t[lo:hi])
        half_out[lo:hi] = np.where(fits, (high - low) / 2, half[lo:hi])
    return t_out, half_out


class _Shape:
    """The GPU's power as its readings describe it, as spans each reading is the mean over: the driver's
    total-power samples (DRIVER_WINDOW_NS ending DRIVER_LAG_NS before each timestamp), where there are
    any, and elsewhere each distinct instant-power reading (INSTANT_WINDOW_NS before the sensor's
    refresh); and, for extrapolation only, a line through the middles of those spans, integrable at any
    instant (a constant beyond the first and last)."""

    def __init__(
        self, t_ns: np.ndarray, power_w: np.ndarray, source: str, driver: np.ndarray | None = None
    ) -> None:
        if power_w.size:
            moved = np.flatnonzero(np.diff(power_w, prepend=np.nan) != 0)  # each distinct reading once
            seen = t_ns[moved].astype(np.float64)
            before = t_ns[np.maximum(moved - 1, 0)].astype(np.float64)
            refreshed = np.where(moved > 0, (seen + before) / 2, seen)  # between the two samples
            window = INSTANT_WINDOW_NS if source == "instant" else 1e9
            self.span_end = refreshed
            self.span_start = refreshed - window
            self.values = power_w[moved].astype(np.float64)
        else:
            self.span_end = self.span_start = self.values = np.zeros(0)
        self.driven = np.zeros(self.values.size, dtype=bool)  # which spans are the driver's samples
        self.dense = driver is not None and driver.size >= 2
        if self.dense and driver is not None:
            self._add_driver(driver, field_too=source == "instant")
        self.t = (self.span_start + self.span_end) / 2
        self.w = self.values
        widths = np.diff(self.t) / 1e9
        self.cumulative = np.concatenate([[0.0], np.cumsum(widths * (self.w[1:] + self.w[:-1]) / 2)])

    def _add_driver(self, driver: np.ndarray, field_too: bool) -> None:
        """Put the driver's samples in place of the field's readings wherever they cover the time; the field
        still fills what they do not (before the first read, a gap, the last ~second before a stop)."""
        end = np.sort(driver["t_ns"].astype(np.float64)) - DRIVER_LAG_NS
        order = np.argsort(driver["t_ns"], kind="stable")
        start = end - DRIVER_WINDOW_NS
        watts = driver["power_mw"][order].astype(np.float64) / 1000.0
        driven = np.ones(end.size, dtype=bool)
        if field_too and self.values.size:
            # A reading's span overlaps a driver span when the first driver span ending after it starts
            # begins before it ends (the driver's spans are all as long, so their starts are ordered too).
            k = np.searchsorted(end, self.span_start, side="right")
            covered = (k < end.size) & (start[np.minimum(k, end.size - 1)] < self.span_end)
            keep = ~covered
            start = np.concatenate([start, self.span_start[keep]])
            end = np.concatenate([end, self.span_end[keep]])
            watts = np.concatenate([watts, self.values[keep]])
            driven = np.concatenate([driven, np.zeros(int(keep.sum()), dtype=bool)])
            order = np.argsort(end, kind="stable")
            start, end, watts, driven = start[order], end[order], watts[order], driven[order]
        self.span_start, self.span_end, self.values, self.driven = start, end, watts, driven

    def integral(self, t_ns: float) -> float:
        """Energy in J of the line from its first point to ``t_ns`` (negative before it)."""
        if self.t.size == 0:
            return 0.0
        if t_ns <= self.t[0]:
            return float(self.w[0] * (t_ns - self.t[0]) / 1e9)
        k = int(np.searchsorted(self.t, t_ns, side="right")) - 1
        if k >= self.t.size - 1:
            return float(self.cumulative[-1] + self.w[-1] * (t_ns - self.t[-1]) / 1e9)
        span = self.t[k + 1] - self.t[k]
        x = t_ns - self.t[k]
        slope = (self.w[k + 1] - self.w[k]) / span
        return float(self.cumulative[k] + (self.w[k] * x + slope * x * x / 2) / 1e9)

    def overlapping(self, t0: float, t1: float) -> slice:
        """Where the readings whose spans overlap [t0, t1] are."""
        lo = int(np.searchsorted(self.span_end, t0, side="left"))
        hi = int(np.searchsorted(self.span_start, t1, side="right"))
        return slice(lo, hi)

    def near(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The readings whose spans overlap [t0, t1]: (span starts, span ends, watts)."""
        at = self.overlapping(t0, t1)
        return self.span_start[at], self.span_end[at], self.values[at]


class FusedEnergy:
    """Window energy of one GPU from its counter updates and its power readings (module docstring).

    Built once per trace; ``window(t0, t1)`` is O(log n), for the thousands of windows of a job.
    """

    def __init__(
        self, samples: np.ndarray, energy: np.ndarray, gpu: int, driver_power: np.ndarray | None = None
    ) -> None:
        own = samples[(samples["gpu"] == gpu) & ((samples["missing"] & MISSING_POWER) == 0)]
        source = POWER_SOURCE_NAMES.get(int(own["power_source"][0]), "") if own.size else ""
        driven = driver_power[driver_power["gpu"] == gpu] if driver_power is not None else None
        self.shape = _Shape(
            own["t_ns"].astype(np.int64), own["power_mw"].astype(np.float64) / 1000.0, source, driven
        )
        self.t, self.half, self.joules = counter_updates(energy, gpu)

    @property
    def usable(self) -> bool:
        """Whether there are counter updates to fuse (two or more)."""
        return self.t.size >= 2

    def _local(self, edges: list[float], even_only: bool = False) -> list[tuple[float, float]]:
        """(J from the update before each edge to it, its uncertainty J), for edges within a few update
        periods of each other, solved together.

        Around the edges the power is one unknown constant per segment, the segments cut at the counter's
        updates, at the edges (a window's edge is where its work may start or stop) and, where the driver's
        samples cover the span, at the ends of their spans (the finest the readings resolve). The counter
        gives each update period's energy exactly; each power reading is its segments' mean over the span
        it averaged, as closely as can be; across every cut but an edge (no change of work there)
        neighbours stay close, weakly (CONTINUITY). The uncertainty of an edge adds the update's timing, how
        far this split lies from an even one, and a share of the power's swing nearby: the readings may not
        see every change.
        """
        t, joules = self.t, self.joules
        first = max(int(np.searchsorted(t, min(edges), side="right")) - 2, 0)
        last = min(int(np.searchsorted(t, max(edges), side="right")) + 1, t.size - 1)
        at = self.shape.overlapping(t[first], t[last])
        s, f, v = self.shape.span_start[at], self.shape.span_end[at], self.shape.values[at]
        driven = self.shape.driven[at]
        fine = np.zeros(0)
        if self.shape.dense:  # the driver's samples resolve the power to their spans: cut there too
            ends_of_spans = np.concatenate([s[driven], f[driven]])
            fine = ends_of_spans[(ends_of_spans > t[first]) & (ends_of_spans < t[last])]
        cuts = np.unique(np.concatenate([t[first : last + 1], edges, fine]))
        starts, ends = cuts[:-1], cuts[1:]
        n = starts.size
        widths = (ends - starts) / 1e9
        periods = range(first, last)
        energy_rows = np.array([widths * ((starts >= t[k]) & (ends <= t[k + 1])) for k in periods])
        energy_j = np.array([joules[k + 1] - joules[k] for k in periods])
        swing = float(v.max() - v.min()) if v.size else 0.0
        overlap = np.clip(np.minimum(f[:, None], ends) - np.maximum(s[:, None], starts), 0, None)
        spans = np.maximum(f - s, 1.0)
        covered = overlap.sum(axis=1) / spans
        keep = covered > 0.5  # readings mostly inside the solved span
        observe = overlap[keep] / (spans[keep] * covered[keep])[:, None]
        no_edge = ~np.isin(ends[:-1], edges)  # the work changes only at the edges
        link = np.diff(np.eye(n), axis=0)[no_edge]
        system = observe.T @ observe + CONTINUITY * link.T @ link + 1e-9 * np.eye(n)
        m = len(periods)
        kkt = np.block([[2 * system, energy_rows.T], [energy_rows, np.zeros((m, m))]])
        rhs = np.concatenate([2 * observe.T @ v[keep], energy_j])
        try:
            power = np.linalg.solve(kkt, rhs)[:n]
        except np.linalg.LinAlgError:
            power = None
        misfit = np.abs(observe @ power - v[keep]) if power is not None else None
        out = []
        for edge in edges:
            i = int(np.searchsorted(t, edge, side="right")) - 1
            a, b = t[i], t[i + 1]
            period_j = joules[i + 1] - joules[i]
            even = period_j * (edge - a) / (b - a)
            inside = (starts >= a) & (ends <= edge)
            split = float(np.dot(widths[inside], power[inside])) if power is not None else even
            timing = max(self._timing_j(i), self._timing_j(i + 1))
            shorter = (a, edge) if edge - a <= b - edge else (edge, b)
            shorter_s = (shorter[1] - shorter[0]) / 1e9
            seen = np.clip(np.minimum(f[keep], shorter[1]) - np.maximum(s[keep], shorter[0]), 0, None)
            unseen_ns = self._unseen_ns(s[keep], f[keep], driven[keep], a, b, shorter)
            if even_only or misfit is None or unseen_ns is None:
                # The readings may miss changes between them (they see ~25 ms of every ~100): a quarter of
                # the power's swing around the edge, over the shorter side, on top of the split's distance
                # from an even one.
                unseen = SWING_SHARE * swing * shorter_s
                value = even if even_only else split
                out.append((joules[i] + value, timing + abs(split - even) + unseen))
                continue
            # The driver's samples see (nearly) the whole period: what the split may miss is where the
            # readings and the solved power disagree over the shorter side (each instant seen by ~1.25
            # samples), where, inside the one sample across the edge, a change fell (a share of the swing
            # over it), and what the gaps between the samples there hide (a quarter of the swing over them).
            depth = max(float(seen.sum()) / max(shorter[1] - shorter[0], 1.0), 1.0)
            fit = float(np.dot(misfit, seen)) / depth / 1e9
            straddle = DRIVER_SWING_SHARE * swing * min(shorter_s, DRIVER_WINDOW_NS / 1e9)
            gaps = SWING_SHARE * swing * unseen_ns / 1e9
            out.append((joules[i] + split, timing + fit + straddle + gaps))
        return out

    @staticmethod
    def _unseen_ns(
        s: np.ndarray, f: np.ndarray, driven: np.ndarray, a: float, b: float, side: tuple[float, float]
    ) -> float | None:
        """How much of ``side`` the driver's samples leave unseen, when they cover the period [a, b] with
        no gap wider than a sample's span (the driver's cadence wanders: 12-33 ms, p10-p90, on an H100);
        None when they do not."""
        inside = driven & (f > a) & (s < b)
        if not inside.any():
            return None
        lo, hi = s[inside], f[inside]
        reach = np.maximum.accumulate(hi)
        gaps = lo[1:] - reach[:-1]
        if lo[0] > a or reach[-1] < b or (gaps.size and gaps.max() > DRIVER_WINDOW_NS):
            return None
        gap_lo, gap_hi = reach[:-1][gaps > 0], lo[1:][gaps > 0]
        return float(np.clip(np.minimum(gap_hi, side[1]) - np.maximum(gap_lo, side[0]), 0, None).sum())

    def _timing_j(self, k: int) -> float:
        """How far the energy at update ``k`` may be from its estimated instant: the most power seen around
        it (the counter's periods on either side, and every power reading over its timing span) times the
        half-width of that span.

        Not the power of one period alone: when reads fall far apart (a starved sampler), one seen change
        stands for several updates, and the periods beside it hold energy that is not theirs.
        """
        t, joules, half = self.t, self.joules, self.half[k]
        periods = [p for p in (k - 1, k) if 0 <= p < t.size - 1]
        watts = [abs(joules[p + 1] - joules[p]) / max((t[p + 1] - t[p]) / 1e9, 1e-9) for p in periods]
        _, _, readings = self.shape.near(t[k] - half, t[k] + half)
        return max([*watts, *np.abs(readings)], default=0.0) * half / 1e9

    def _outside(self, t_ns: float) -> tuple[float, float]:
        """(J, uncertainty J) at an instant before the first update or after the last: the power's line,
        scaled to the nearest update period whose two updates are well timed (unscaled without one: a period
        whose ends are uncertain holds energy that is not its own)."""
        t, joules, shape = self.t, self.joules, self.shape
        i = int(np.searchsorted(t, t_ns, side="right")) - 1
        timed = np.flatnonzero(self.half[:-1] + self.half[1:] <= TIMED_SHARE * np.diff(t))
        scale = 1.0
        if timed.size:
            k = int(timed[0] if i < 0 else timed[-1])
            period_j = joules[k + 1] - joules[k]
            covered = shape.integral(t[k + 1]) - shape.integral(t[k])
            scale = period_j / covered if covered > 0 else 1.0
        edge = 0 if i < 0 else t.size - 1
        extra = scale * (shape.integral(t_ns) - shape.integral(t[edge]))
        # The power there is all the counter does not see: as far off as the estimate itself, or as the
        # range of the readings around that span allows (they see a quarter of the time, and may miss the
        # load's high or low phases), whichever is more.
        lo_ns, hi_ns = sorted((float(t[edge]), t_ns))
        _, _, readings = shape.near(lo_ns - SENSOR_UPDATE_S * 1e9, hi_ns + SENSOR_UPDATE_S * 1e9)
        unseen = abs(extra)
        if readings.size:
            span_s = (hi_ns - lo_ns) / 1e9
            unseen = max(unseen, readings.max() * span_s - abs(extra), abs(extra) - readings.min() * span_s)
        return joules[edge] + extra, unseen + self._timing_j(edge)

    def window(self, t0: int, t1: int) -> tuple[float, float] | None:
        """(J, bound J) over [t0, t1]; None without two counter updates."""
        if not self.usable or t1 < t0:
            return None
        t = self.t
        inside = [float(e) for e in (t0, t1) if t[0] <= e < t[-1]]
        near = len(inside) == 2 and np.searchsorted(t, t1) - np.searchsorted(t, t0) <= 3
        found: dict[float, tuple[float, float]] = {}
        # A window shorter than an update period is split evenly (unless SHORT_SPLIT and the driver's samples
        # cover it): the field's readings (~25 ms of every ~100) are too few to tell where in the period its
        # work fell, a load that repeats with the sensor would mislead them, and even the driver's samples
        # did no better on the simulated GPU.
        short = (t1 - t0) < float(np.median(np.diff(t))) and not (SHORT_SPLIT and self.shape.dense)
        for group in [inside] if near else [[e] for e in inside]:
            found.update(zip(group, self._local(group, even_only=short), strict=True))
        e0, err0 = found.get(float(t0)) or self._outside(float(t0))
        e1, err1 = found.get(float(t1)) or self._outside(float(t1))
        return e1 - e0, math.hypot(err0, err1) + 2 * COUNTER_RESOLUTION_J


def energy_window(
    samples: np.ndarray,
    energy: np.ndarray,
    gpu: int,
    t0: int | None = None,
    t1: int | None = None,
    fused: FusedEnergy | None = None,
    driver_power: np.ndarray | None = None,
) -> EnergyWindow:
    """The EnergyWindow of ``gpu`` over [t0, t1] (defaults: the span of its samples); ``fused``: the trace's
    FusedEnergy, when the caller has built it for many windows."""
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
    fused_j = (fused or FusedEnergy(samples, energy, gpu, driver_power)).window(t0, t1)
    counter_j, counter_err = fused_j if fused_j is not None else (None, None)
    inside = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    inside = inside[(inside["t_end_ns"] >= t0) & (inside["t_start_ns"] <= t1)]
    c0 = int(inside["t_start_ns"][0]) if fused_j is not None and inside.size else None
    c1 = int(inside["t_end_ns"][-1]) if fused_j is not None and inside.size else None
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
