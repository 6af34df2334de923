"""Window-energy accuracy: gpuprof's estimators, its previous counter figure and Zeus on fixed-work windows.

    python benchmarks/window_bench.py [--simulate] [--gpu 0] [--lengths 1 0.25 0.1 0.05]
                                      [--shapes front uniform square] [--windows-scale X]
                                      [--energy-rate HZ] [--zeus-power-period 0.05] [--json OUT]
                                      [--uniform-period-ms 10] [--records OUT.npz]

In one process and one run, windows of each length follow each other back to back under three load
shapes, all busy 40% of the window: ``front`` (busy first, then idle), ``uniform`` (the work spread over the
window: on a real GPU bursts of bf16 8192x8192 matmuls on cuda:0 every 10 ms, ``--uniform-period-ms``;
on the simulated GPU a steady 40% utilization) and ``square`` (busy/idle cycles of at least 25 ms, at
most 4 per window). Each (shape, length) cell is a few warm-up windows, the measured windows and a short
tail of the same shape. Edges are stamped on the host with time.monotonic_ns() (and time.time() for
Zeus), after torch.cuda.synchronize().
Each window is idle a little past its nominal length, by 100 ms / (the cell's windows), so that over a cell
its edges meet every phase of the energy counter's ~100 ms updates (``--no-phase-walk``: exact lengths).

Every window is measured at once by: gpuprof's sampler running for the whole run (1 kHz power, the energy
counter read as the sampler reads it: back to back around each update): ``energy_window``'s counter
figure and integrated power, with their bounds; gpuprof's previous counter figure (the first and last
reading inside the window, extended at their mean power) on the readings a 10 Hz reader would have made;
and, on a real GPU with zeus importable, Zeus 0.16's ZeusMonitor windows and its PowerMonitor's get_energy.
Reference: on the simulated GPU the exact energy of each window; on a real GPU the counter over the whole
cell (energy_window from the first measured edge to the last) divided by the number of windows. Each cell
also gives ``agreement``, Pearson's r of gpuprof's figures with every other method's, window by window:
where Zeus's windows or integrated power follow gpuprof's (r >= 0.9), the windows' energies differ for
real, and a failing coverage goal says so (the cell's mean is then no per-window truth); ``drift``, how
the counter's own periods (no edge split) wandered over the cell, says the same without any estimate.
And each cell gives ``holdout``: the edge split checked against a reference a real GPU has, the
counter's own updates, each held out in turn (update_holdout.py).
Changes no GPU setting: it only runs work.
Prints one table per shape and the goals; writes one JSON with every window's figures (``--records``: and
an .npz of the sampler's records, which ``window_records.py`` studies again without the GPU). With the
defaults, ~180 s of windows (~3.5 minutes in all on a real GPU); ``--simulate --windows-scale 0.25`` takes
~1 minute.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sampler_bench import device_info, finite, run_info, simulate_node  # benchmarks/, beside this file
from update_holdout import holdout, holdout_line

from gpuprof.sampler import SamplerConfig, open_sampler
from gpuprof.sampler.backend import DEFAULT_ENERGY_RATE_HZ, MAX_ENERGY_RATE_HZ
from gpuprof.sampler.energy import FusedEnergy, counter_updates, energy_window
from gpuprof.sampler.library import resolve
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE, concat

SHAPES = ("front", "uniform", "square")
DEFAULT_LENGTHS = (1.0, 0.25, 0.1, 0.05)
# Measured windows per length: ~55 s of windows per shape, under 3 minutes for all three.
WINDOWS = {1.0: 20, 0.25: 60, 0.1: 120, 0.05: 160}
MIN_WINDOWS = 3
DUTY = 0.4  # busy share of every window, whatever the shape
SQUARE_MAX_CYCLES, SQUARE_MIN_CYCLE_S = 4, 0.025
UNIFORM_BURST_PERIOD_S = 0.010  # real GPU: one burst of matmuls every 10 ms
WARMUP_S, TAIL_S = 0.5, 0.3  # at least one window each; the tail keeps the load going past the last edge
# The energy counter updates about every 100 ms (docs/measurement.md). A window whose length is a multiple of
# that meets the updates at the same phase every time, so a figure read at its edges errs by the same amount
# in every window, which cancels across windows that tile the cell and hides from bias and CV alike. Each
# window is therefore longer than its nominal length by COUNTER_PERIOD_S / windows (idle, after its work):
# over a cell the edges meet every phase of the counter once. The work, and so the energy, of every window
# stays the same.
COUNTER_PERIOD_S = 0.1
MATRIX_SIZE = 8192
PRIME_MATMULS = 4  # queued at a busy edge, so the GPU works while Zeus reads its counter on this thread
PREVIOUS_RATE_HZ = 10.0
SENSOR_UPDATE_S = 0.100  # as in sampler/energy.py before the fused estimator (commit 77e047f)
COUNTER_RESOLUTION_J = 0.001
METHODS = {  # key: short column name
    "gpuprof": "gpuprof",
    "field_fused": "fused, field",
    "integrated": "integrated",
    "previous": "prev 10Hz",
    "zeus_window": "Zeus window",
    "zeus_power": "Zeus PowerMon",
}
# The methods that state a bound with each figure.
BOUNDED = ("gpuprof", "field_fused", "integrated", "previous")
REFERENCE = {
    True: "the exact energy of each window (SimulatedNvml.exact_energy_j at its two edges)",
    False: "the energy counter over the whole cell (energy_window's counter figure from the first measured "
    "edge to the last) / number of windows; per-window errors and coverage are against that mean",
}
ADDITIVE_NOTE = (
    "the windows tile each cell, so a figure that adds up over adjacent windows (gpuprof's counter figure, "
    "Zeus's windows) has ~0 bias against the cell reference by construction: on a real GPU bias tests only "
    "that; CV, p95 and coverage test each window (all do the same work), and an edge shift common to every "
    "window shows only on the simulated GPU"
)
GOALS = {
    "bias_long": "|bias| <= 1% at >= 0.25 s",
    "bias_100ms": "|bias| <= 3% at 0.1 s",
    "beats_zeus": "lower |bias| and CV than Zeus's windows at every length",
    "coverage": "coverage >= 95% (every cell)",
}


# ---- load ------------------------------------------------------------------------------------------------


def phases(
    shape: str, length_s: float, simulated: bool, uniform_period_s: float = UNIFORM_BURST_PERIOD_S
) -> list[tuple[float, float, float]]:
    """One window's load: (start_s, end_s, utilization %) from its start; every window ends idle or steady."""
    busy = DUTY * length_s
    if shape == "front":
        return [(0.0, busy, 100.0), (busy, length_s, 0.0)]
    if shape == "uniform" and simulated:
        return [(0.0, length_s, 100.0 * DUTY)]
    if shape == "uniform":
        cycles = max(1, round(length_s / uniform_period_s))
    else:
        cycles = max(1, min(SQUARE_MAX_CYCLES, int(length_s / SQUARE_MIN_CYCLE_S + 1e-9)))
    period = length_s / cycles
    out = []
    for i in range(cycles):
        out += [
            (i * period, i * period + DUTY * period, 100.0),
            (i * period + DUTY * period, (i + 1) * period, 0.0),
        ]
    return out


def sleep_until(deadline_ns: int) -> None:
    left = (deadline_ns - time.monotonic_ns()) / 1e9
    if left > 0:
        time.sleep(left)


class SimLoad:
    """The simulated GPU's utilization, switched at each phase; its exact energy at any past instant."""

    def __init__(self, gpu: int) -> None:
        from gpuprof.sampler.sim import SimulatedNvml

        self.sim, self.gpu, self.util = SimulatedNvml(), gpu, -1.0
        self.description = (
            f"simulated GPU {gpu}: utilization 100% when busy, 0% idle (uniform: 40% throughout)"
        )

    def sync(self) -> None:
        pass

    def enter(self, util: float, phase_s: float) -> None:
        if util != self.util:
            self.sim.set_utilization(self.gpu, util)
            self.util = util

    def hold(self, util: float, until_ns: int) -> None:
        sleep_until(until_ns)

    def truth_j(self, t_ns: int) -> float:
        return self.sim.exact_energy_j(self.gpu, [t_ns])[0]

    def close(self) -> None:
        self.sim.set_utilization(self.gpu, 0)


class TorchLoad:
    """bf16 matmuls on cuda:0: busy = a fixed number of them (the phase's length over one matmul's time at
    the start, rounded), then synchronize; idle = sleep until the phase's end. Every window does the same
    work whatever the clocks do (a capped GPU runs it longer, into the idle that follows)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.a = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda:0", dtype=torch.bfloat16)
        self.b = torch.randn(MATRIX_SIZE, MATRIX_SIZE, device="cuda:0", dtype=torch.bfloat16)
        for _ in range(20):  # kernels loaded, clocks up
            torch.mm(self.a, self.b)
        torch.cuda.synchronize()
        start = time.monotonic_ns()
        for _ in range(20):
            torch.mm(self.a, self.b)
        torch.cuda.synchronize()
        self.matmul_s = (time.monotonic_ns() - start) / 20 / 1e9
        self.pending = 0  # matmuls of the current busy phase not yet launched
        self.description = (
            f"{torch.cuda.get_device_name(0)} (cuda:0), torch {torch.__version__}: bf16 {MATRIX_SIZE}^2 "
            f"torch.mm, {self.matmul_s * 1e3:.2f} ms each at the start, a fixed number per busy phase"
        )

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def enter(self, util: float, phase_s: float) -> None:
        """Queue some of a busy phase's work now: it starts at its edge, not after the edge's bookkeeping."""
        self.pending = max(1, round(phase_s / self.matmul_s)) if util > 0 else 0
        for _ in range(min(PRIME_MATMULS, self.pending)):
            self.torch.mm(self.a, self.b)
            self.pending -= 1

    def hold(self, util: float, until_ns: int) -> None:
        if util <= 0:
            sleep_until(until_ns)
            return
        for _ in range(self.pending):
            self.torch.mm(self.a, self.b)
        self.pending = 0
        self.torch.cuda.synchronize()

    def close(self) -> None:
        self.torch.cuda.synchronize()


# ---- Zeus ------------------------------------------------------------------------------------------------


class ZeusMethods:
    """ZeusMonitor windows around each measured window and one PowerMonitor for the run."""

    def __init__(self, zeus_gpu: int, power_period_s: float) -> None:
        import zeus
        from zeus.monitor import ZeusMonitor
        from zeus.monitor.power import PowerMonitor

        self.gpu, self.version, self.power_period_s = zeus_gpu, zeus.__version__, power_period_s
        self.errors: list[str] = []  # a failed Zeus call costs its window's figure, not the run
        self.monitor: Any = ZeusMonitor(gpu_indices=[zeus_gpu], cpu_indices=[])
        self.power: Any = None
        try:
            self.power = PowerMonitor(
                gpu_indices=[zeus_gpu], update_period=power_period_s, power_domains=["device_instant"]
            )
        except Exception as exc:
            traceback.print_exc()
            self.errors.append(
                f"PowerMonitor failed to start, its column skipped: {type(exc).__name__}: {exc}"
            )
        self.windows: dict[str, tuple[float, float]] = {}  # name -> (J, Zeus's own window time in s)

    def edge(self, ended: str | None, begun: str | None) -> None:
        """At an edge: end the window that ends there, then begin the next (no sync: the bench syncs)."""
        try:
            if ended is not None:
                with warnings.catch_warnings():  # "energy measured as zero" on short windows: counted instead
                    warnings.simplefilter("ignore")
                    m = self.monitor.end_window(ended, sync_execution=False)
                self.windows[ended] = (float(m.gpu_energy[self.gpu]), float(m.time))
            if begun is not None:
                self.monitor.begin_window(begun, sync_execution=False)
        except Exception as exc:
            self.errors.append(f"ZeusMonitor at {ended or begun}: {type(exc).__name__}: {exc}")

    def power_energy_j(self, wall0: float, wall1: float) -> float | None:
        try:
            energy = self.power.get_energy(wall0, wall1)
        except Exception as exc:
            self.errors.append(f"PowerMonitor.get_energy: {type(exc).__name__}: {exc}")
            return None
        return None if energy is None else float(energy[self.gpu])

    def close(self) -> None:
        if self.power is not None:
            self.power.stop()


def open_zeus(args: argparse.Namespace, simulated: bool) -> tuple[ZeusMethods | None, str | None]:
    """Zeus's two methods, or None and why they are skipped."""
    if simulated:
        return None, "skipped: simulated GPU (Zeus reads the real NVML through pynvml)"
    try:
        # CUDA_VISIBLE_DEVICES names the GPU (main sets it): Zeus's index 0 is NVML's args.gpu
        return ZeusMethods(0, args.zeus_power_period), None
    except ImportError as exc:
        return None, f"skipped: zeus not importable ({exc})"
    except Exception as exc:  # a Zeus that fails to start must not cost gpuprof's figures
        traceback.print_exc()
        return None, f"skipped: Zeus failed to start ({type(exc).__name__}: {exc})"


# ---- the run ---------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One (shape, length) cell: its edges (warm-up, measured and tail windows) and per-edge readings."""

    shape: str
    length_s: float
    windows: int
    warmup: int
    tail: int
    step_s: float = 0.0  # idle added to every window past its nominal length (the phase walk)
    uniform_period_s: float = UNIFORM_BURST_PERIOD_S  # a real GPU's uniform load: one burst per this
    edges_ns: list[int] = field(default_factory=list)
    edges_wall: list[float] = field(default_factory=list)
    truth_j: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.length_s:g}s"

    @property
    def measured(self) -> range:
        """Indices of the measured windows (window i spans edges i and i + 1)."""
        return range(self.warmup, self.warmup + self.windows)


def plan(args: argparse.Namespace) -> list[Cell]:
    """The cells, shape by shape, each length in turn; a length not in WINDOWS gets ~15 s of windows."""
    cells = []
    for shape in args.shapes:
        for length in args.lengths:
            base = WINDOWS.get(length, max(10, min(200, round(15 / length))))
            n = max(MIN_WINDOWS, round(base * args.windows_scale))
            step = COUNTER_PERIOD_S / n if args.phase_walk else 0.0
            cells.append(
                Cell(
                    shape,
                    length,
                    n,
                    math.ceil(WARMUP_S / length),
                    math.ceil(TAIL_S / length),
                    step,
                    args.uniform_period_ms / 1e3,
                )
            )
    return cells


def run_cell(cell: Cell, load: SimLoad | TorchLoad, zeus: ZeusMethods | None, simulated: bool) -> None:
    """Run the cell's windows back to back on a grid of nominal edges, stamping the real ones."""
    shape = phases(cell.shape, cell.length_s, simulated, cell.uniform_period_s)
    begin_s, _, util = shape[-1]
    shape[-1] = (begin_s, cell.length_s + cell.step_s, util)  # the phase walk: the last phase runs longer
    total = cell.warmup + cell.windows + cell.tail
    length_ns = round((cell.length_s + cell.step_s) * 1e9)
    start_ns = time.monotonic_ns() + 1_000_000
    sleep_until(start_ns)
    for k in range(total + 1):  # edge k starts window k (the last one ends the tail)
        load.sync()
        cell.edges_ns.append(time.monotonic_ns())
        cell.edges_wall.append(time.time())
        if k < total:
            load.enter(shape[0][2], shape[0][1] - shape[0][0])
        if isinstance(load, SimLoad):
            cell.truth_j.append(load.truth_j(cell.edges_ns[-1]))
        if zeus is not None:
            ended = f"{cell.name}-{k - 1}" if k - 1 in cell.measured else None
            zeus.edge(ended, f"{cell.name}-{k}" if k in cell.measured else None)
        if k == total:
            break
        window_ns = start_ns + k * length_ns
        for i, (begin_s, end_s, util) in enumerate(shape):
            if i:
                load.enter(util, end_s - begin_s)
            load.hold(util, window_ns + round(end_s * 1e9))


def sampler_config(gpu: int, energy_rate_hz: float, buffer_s: float) -> tuple[SamplerConfig, str | None]:
    """The sampler's config; a counter rate above SamplerConfig's limit is set past its check, and said so."""
    checked = min(energy_rate_hz, MAX_ENERGY_RATE_HZ)
    config = SamplerConfig((gpu,), rate_hz=1000.0, energy_rate_hz=checked, buffer_seconds=buffer_s)
    if energy_rate_hz == checked:
        return config, None
    object.__setattr__(config, "energy_rate_hz", energy_rate_hz)  # frozen dataclass; as sampler_bench.unpaced
    return config, (
        f"--energy-rate {energy_rate_hz:g} Hz is above SamplerConfig's limit ({MAX_ENERGY_RATE_HZ:g} Hz) "
        "and was set past its check: the energy thread then reads back to back (a read blocks ~3 ms)"
    )


# ---- estimates -------------------------------------------------------------------------------------------


def ten_hz_readings(energy: np.ndarray, gpu: int, rate_hz: float = PREVIOUS_RATE_HZ) -> np.ndarray:
    """The readings a ``rate_hz`` reader would have made, rebuilt from the sampler's back-to-back reads.

    On a grid of ticks from the run's first good reading, a read starting at each tick (lasting the median
    call) returns what the last good reading started by then returned. The sampler may keep only the reads
    around each counter change (and one a second); the reads it dropped returned that same value.
    """
    good = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    if good.size == 0:
        return good
    starts = good["t_start_ns"].astype(np.int64)
    call_ns = int(np.median(good["t_end_ns"].astype(np.int64) - starts))
    ticks = np.arange(starts[0], starts[-1] + 1, round(1e9 / rate_hz), dtype=np.int64)
    out = good[np.searchsorted(starts, ticks, side="right") - 1]  # a copy, ENERGY_DTYPE kept
    out["t_start_ns"], out["t_end_ns"] = ticks, ticks + call_ns
    return out


def previous_counter_j(energy: np.ndarray, gpu: int, t0: int, t1: int) -> tuple[float, float] | None:
    """(J, bound) of gpuprof's previous counter figure (sampler/energy.py before the fused estimator, commit
    77e047f: counter_delta and its extension in energy_window): the difference between the first and last
    good readings whose call midpoint lies in [t0, t1], extended to the window at the mean power of those two
    readings."""
    rows = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    mid = (rows["t_start_ns"].astype(np.int64) + rows["t_end_ns"].astype(np.int64)) // 2
    inside = np.flatnonzero((mid >= t0) & (mid <= t1))
    if inside.size < 2:
        return None
    first, last = inside[0], inside[-1]
    raw_j = (int(rows["energy_mj"][last]) - int(rows["energy_mj"][first])) / 1000.0
    c0, c1 = int(mid[first]), int(mid[last])
    mean_w = raw_j / ((c1 - c0) / 1e9) if c1 > c0 else 0.0
    uncovered_s = max(0, (c0 - t0) + (t1 - c1)) / 1e9
    bound_j = abs(mean_w) * (SENSOR_UPDATE_S + uncovered_s) + 2 * COUNTER_RESOLUTION_J
    return raw_j + mean_w * uncovered_s, bound_j


def raw_counter_span_j(energy: np.ndarray, gpu: int, t0: int, t1: int) -> float | None:
    """The counter between the last good reading that ended by t0 and the first that started from t1."""
    rows = energy[(energy["gpu"] == gpu) & (energy["nvml_return"] == 0)]
    before = rows[rows["t_end_ns"] <= t0]
    after = rows[rows["t_start_ns"] >= t1]
    if before.size == 0 or after.size == 0:
        return None
    return (int(after["energy_mj"][0]) - int(before["energy_mj"][-1])) / 1000.0


def estimate_cell(
    cell: Cell,
    samples: np.ndarray,
    energy: np.ndarray,
    driver_power: np.ndarray,
    previous: np.ndarray,
    gpu: int,
    zeus: ZeusMethods | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every method's figure for each measured window, the reference, and the methods' labels."""
    lo, hi = cell.edges_ns[0] - 2_000_000_000, cell.edges_ns[-1] + 2_000_000_000
    s = samples[(samples["t_ns"] >= lo) & (samples["t_ns"] <= hi)]
    e = energy[(energy["t_start_ns"] >= lo) & (energy["t_start_ns"] <= hi)]
    d = driver_power[(driver_power["t_ns"] >= lo) & (driver_power["t_ns"] <= hi)]
    fused, field_fused = FusedEnergy(s, e, gpu, d), FusedEnergy(s, e, gpu)
    labels: dict[str, str] = {}
    windows = []
    for i in cell.measured:
        t0, t1 = cell.edges_ns[i], cell.edges_ns[i + 1]
        w = energy_window(s, e, gpu, t0, t1, fused)
        described = w.as_dict()
        labels["gpuprof"] = f"gpuprof energy_window counter figure: {described['energy_counter_method']}" + (
            ", the edges split by the driver's total-power samples"
            if d.size
            else " (no driver power samples: the edges split by the instant-power field)"
        )
        labels["field_fused"] = (
            "the same fused estimate with the instant-power field alone, as before the driver's samples"
        )
        labels["integrated"] = f"gpuprof energy_window: {described['energy_integrated_method']}"
        prev = previous_counter_j(previous, gpu, t0, t1)
        field_j = field_fused.window(t0, t1)
        figures: dict[str, dict[str, float | None]] = {
            "gpuprof": {"j": w.energy_counter_j, "bound_j": w.energy_counter_uncertainty_j},
            "field_fused": {
                "j": field_j[0] if field_j else None,
                "bound_j": field_j[1] if field_j else None,
            },
            "integrated": {"j": w.energy_integrated_j, "bound_j": w.energy_integrated_uncertainty_j},
            "previous": {"j": prev[0] if prev else None, "bound_j": prev[1] if prev else None},
        }
        if zeus is not None:
            j, zeus_s = zeus.windows.get(f"{cell.name}-{i}", (None, None))
            figures["zeus_window"] = {"j": j, "bound_j": None, "zeus_time_s": zeus_s}
            if zeus.power is not None:
                pm = zeus.power_energy_j(cell.edges_wall[i], cell.edges_wall[i + 1])
                figures["zeus_power"] = {"j": pm, "bound_j": None}
        windows.append(
            {
                "t0_ns": t0,
                "t1_ns": t1,
                "wall0": cell.edges_wall[i],
                "duration_s": (t1 - t0) / 1e9,
                "truth_j": cell.truth_j[i + 1] - cell.truth_j[i] if cell.truth_j else None,
                "methods": figures,
            }
        )
    t0, t1 = cell.edges_ns[cell.warmup], cell.edges_ns[cell.warmup + cell.windows]
    whole = energy_window(s, e, gpu, t0, t1, fused)
    raw = raw_counter_span_j(e, gpu, t0, t1)
    n = cell.windows
    ref = {
        "span_s": (t1 - t0) / 1e9,
        "counter_per_window_j": whole.energy_counter_j / n if whole.energy_counter_j is not None else None,
        "counter_bound_per_window_j": (
            whole.energy_counter_uncertainty_j / n if whole.energy_counter_uncertainty_j is not None else None
        ),
        "raw_counter_per_window_j": raw / n if raw is not None else None,
        "exact_per_window_j": (cell.truth_j[cell.warmup + n] - cell.truth_j[cell.warmup]) / n
        if cell.truth_j
        else None,
    }
    return {"windows": windows, "reference": ref}, labels


def method_stats(figures: list[dict[str, Any]], reference: np.ndarray, bounded: bool) -> dict[str, Any]:
    """Bias, CV, p95 |error| and coverage of one method over a cell's windows against ``reference``."""
    n = len(figures)
    have = [i for i, f in enumerate(figures) if f["j"] is not None]
    out: dict[str, Any] = {
        "windows": n,
        "none": n - len(have),
        "zero": sum(1 for f in figures if f["j"] == 0),
    }
    if not have:
        out |= dict.fromkeys(("mean_j", "bias", "cv", "p95_abs_err_j", "p95_abs_err_rel"))
        return out | {"coverage": 0.0 if bounded else None}
    est, ref = np.array([figures[i]["j"] for i in have], dtype=float), reference[have]
    err = np.abs(est - ref)
    bounds = [figures[i]["bound_j"] for i in have]
    covered = sum(1 for k, bound in enumerate(bounds) if bound is not None and err[k] <= bound)
    return out | {
        "mean_j": float(est.mean()),
        "bias": float(est.mean() / ref.mean() - 1) if ref.mean() else None,
        "cv": float(est.std(ddof=1) / est.mean()) if est.size > 1 and est.mean() else None,
        "p95_abs_err_j": float(np.percentile(err, 95)),
        "p95_abs_err_rel": float(np.percentile(err, 95) / ref.mean()) if ref.mean() else None,
        # a window with no figure counts as outside its bound; a method that states no bound has none
        "coverage": covered / n if bounded else None,
    }


def cell_stats(result: dict[str, Any], simulated: bool) -> dict[str, Any]:
    """Each method's statistics in a cell, against the exact energy (simulated) or the cell's mean (real)."""
    windows = result["windows"]
    if simulated:
        reference = np.array([w["truth_j"] for w in windows], dtype=float)
    else:
        reference = np.full(len(windows), result["reference"]["counter_per_window_j"] or np.nan)
    methods = windows[0]["methods"].keys()
    return {m: method_stats([w["methods"][m] for w in windows], reference, m in BOUNDED) for m in methods}


DRIFT_MIN_PERIODS = 5  # the counter's own periods averaged over at least this many (0.5 s), or one window


def counter_drift(energy: np.ndarray, gpu: int, t0: int, t1: int, length_s: float) -> dict[str, Any] | None:
    """How the GPU's own power wandered over a cell, from the counter's updates alone (no edge split): the
    mean power of every run of N consecutive update periods (N the larger of DRIFT_MIN_PERIODS and one
    window's worth), their CV and range, and the lag-1 autocorrelation of the single periods' powers.

    The work is the same in every window, so where these means spread as widely as gpuprof's windows do,
    the windows' true energies differ, and one mean per cell is no per-window reference.
    """
    t, _, joules = counter_updates(energy, gpu)
    inside = (t >= t0) & (t <= t1)
    t, joules = t[inside], joules[inside]
    if t.size < 3:
        return None
    period_s = float(np.median(np.diff(t))) / 1e9
    n = max(DRIFT_MIN_PERIODS, round(length_s / period_s))
    if t.size <= n + 1:
        return None
    means = (joules[n:] - joules[:-n]) / ((t[n:] - t[:-n]) / 1e9)
    power = np.diff(joules) / (np.diff(t) / 1e9)
    lag1 = float(np.corrcoef(power[:-1], power[1:])[0, 1]) if power.size > 2 and power.std() > 0 else None
    return {
        "periods": int(power.size),
        "span_periods": n,
        "cv": float(means.std(ddof=1) / means.mean()),
        "min_w": float(means.min()),
        "max_w": float(means.max()),
        "lag1_r": lag1,
    }


AGREEMENT_R = 0.9  # gpuprof's windows this correlated with another method's: their spread is the windows' own
AGREEING = ("zeus_window", "integrated")  # methods whose figures do not come from gpuprof's edge split


def agreement(result: dict[str, Any]) -> dict[str, float | None]:
    """Pearson's r between gpuprof's figure and each other method's, over the windows where both have one.

    On a real GPU the reference is one mean per cell; where independent methods rise and fall together
    window by window, the windows' energies differ for real, and a bound true to each window need not
    cover the mean.
    """
    ours = np.array([w["methods"]["gpuprof"]["j"] for w in result["windows"]], dtype=float)
    out: dict[str, float | None] = {}
    for m in result["windows"][0]["methods"]:
        if m == "gpuprof":
            continue
        theirs = np.array([w["methods"][m]["j"] for w in result["windows"]], dtype=float)
        both = np.isfinite(ours) & np.isfinite(theirs) & (theirs != 0)
        usable = both.sum() >= MIN_WINDOWS and ours[both].std() > 0 and theirs[both].std() > 0
        out[m] = float(np.corrcoef(ours[both], theirs[both])[0, 1]) if usable else None
    return out


# ---- report ----------------------------------------------------------------------------------------------


def pct(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.{digits}f}" if signed else f"{value * 100:.{digits}f}"


def shape_table(shape: str, cells: list[dict[str, Any]], methods: list[str], label: str) -> None:
    """Rows: window lengths; columns: each method's bias, CV and coverage (%)."""
    header = ["length", "ref J"] + [c for _ in methods for c in ("bias%", "CV%", "cov%")]
    rows = []
    for c in cells:
        ref = c["reference"]["mean_j"]
        row = [f"{c['length_s']:g} s", f"{ref:.2f}" if ref is not None else "-"]
        for m in methods:
            s = c["stats"][m]
            cov = "n/a" if s["coverage"] is None else pct(s["coverage"], digits=0)
            row += [pct(s["bias"], signed=True), pct(s["cv"]), cov]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    groups = [" " * (widths[0] + widths[1] + 2)]
    for j, m in enumerate(methods):
        span = sum(widths[2 + 3 * j : 5 + 3 * j]) + 4
        groups.append(METHODS[m].center(span))
    print(f"\n== {shape} ({label})")
    print("  ".join(groups).rstrip())
    for i, row in enumerate([header, *rows]):
        cells_text = [
            v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells_text))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for key, text in (("none", "no figure"), ("zero", "figure exactly 0 J")):
        found = [
            f"{METHODS[m]} {c['length_s']:g} s {c['stats'][m][key]}/{c['windows_n']}"
            for m in methods
            for c in cells
            if c["stats"][m][key]
        ]
        if found:
            print(f"  {text}: {', '.join(found)}")


def check_goals(cells: list[dict[str, Any]], zeus_reason: str | None) -> dict[str, dict[str, str]]:
    """PASS / FAIL / n/a per goal for gpuprof's counter figure, naming the cells that fail."""

    def verdict(
        chosen: list[dict[str, Any]], ok: Callable[[dict[str, Any]], tuple[bool, str]]
    ) -> dict[str, str]:
        if not chosen:
            return {"result": "n/a", "detail": "no such cell"}
        failed = [
            f"{c['shape']} {c['length_s']:g} s {why}" for c in chosen for good, why in [ok(c)] if not good
        ]
        detail = f"{len(chosen)} cells; failing: " + (", ".join(failed) or "none")
        return {"result": "FAIL" if failed else "PASS", "detail": detail}

    def bias_within(limit: float) -> Callable[[dict[str, Any]], tuple[bool, str]]:
        def ok(c: dict[str, Any]) -> tuple[bool, str]:
            bias = c["stats"]["gpuprof"]["bias"]
            return bias is not None and abs(bias) <= limit, f"({pct(bias, signed=True)}%)"

        return ok

    def covered(c: dict[str, Any]) -> tuple[bool, str]:
        coverage = c["stats"]["gpuprof"]["coverage"]
        why = f"({pct(coverage, digits=0)}%"
        agree = {m: r for m, r in (c.get("agreement") or {}).items() if m in AGREEING and r is not None}
        best = max(agree, key=lambda m: agree[m], default=None)
        if not c["simulated"] and best is not None and agree[best] >= AGREEMENT_R:
            why += f"; its windows differ for real: {METHODS[best]} follows gpuprof, r = {agree[best]:.3f}"
        drift = c.get("drift")
        if not c["simulated"] and drift:
            why += (
                f"; the counter's own {drift['span_periods']}-period means spread {pct(drift['cv'])}% "
                f"({drift['min_w']:.0f}-{drift['max_w']:.0f} W)"
            )
        return (coverage or 0.0) >= 0.95, why + ")"

    def beats_zeus(c: dict[str, Any]) -> tuple[bool, str]:
        ours, zeus = c["stats"]["gpuprof"], c["stats"]["zeus_window"]
        if ours["bias"] is None or ours["cv"] is None:
            return False, "(no figure)"
        zeus_bias = abs(zeus["bias"]) if zeus["bias"] is not None else math.inf
        zeus_cv = zeus["cv"] if zeus["cv"] is not None else math.inf
        why = f"(|bias| {pct(abs(ours['bias']))} vs {pct(zeus_bias)}, CV {pct(ours['cv'])} vs {pct(zeus_cv)})"
        return abs(ours["bias"]) < zeus_bias and ours["cv"] < zeus_cv, why

    return {
        "bias_long": verdict([c for c in cells if c["length_s"] >= 0.25 - 1e-9], bias_within(0.01)),
        "bias_100ms": verdict([c for c in cells if abs(c["length_s"] - 0.1) < 1e-9], bias_within(0.03)),
        "beats_zeus": (
            {"result": "n/a", "detail": f"Zeus {zeus_reason}"} if zeus_reason else verdict(cells, beats_zeus)
        ),
        "coverage": verdict(cells, covered),
    }


# ---- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--simulate", action="store_true", help="gpuprof's simulated GPU (its own state file)"
    )
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (default 0)")
    parser.add_argument(
        "--lengths", type=float, nargs="+", default=list(DEFAULT_LENGTHS), help="window lengths, s"
    )
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES), help="load shapes")
    parser.add_argument("--windows-scale", type=float, default=1.0, help="multiply every cell's window count")
    parser.add_argument(
        "--energy-rate",
        type=float,
        default=DEFAULT_ENERGY_RATE_HZ,
        help="gpuprof's counter reads per s between its updates (default: the sampler's)",
    )
    parser.add_argument(
        "--zeus-power-period", type=float, default=0.05, help="Zeus PowerMonitor update_period, s (0.05)"
    )
    parser.add_argument(
        "--no-phase-walk", dest="phase_walk", action="store_false",
        help="windows of exactly their nominal length (their edges then meet the counter at a fixed phase)",
    )  # fmt: skip
    parser.add_argument(
        "--uniform-period-ms",
        type=float,
        default=UNIFORM_BURST_PERIOD_S * 1e3,
        help="real GPU, uniform load: one burst of matmuls (40%% of it busy) every this many ms (10)",
    )
    parser.add_argument("--json", type=Path, help="results file (default out/window_bench_<date>.json)")
    parser.add_argument(
        "--records", type=Path, help="also save the sampler's records (samples, energy reads) to this .npz"
    )
    args = parser.parse_args(argv)
    if any(length <= 0 for length in args.lengths) or args.windows_scale <= 0:
        parser.error("lengths and --windows-scale must be > 0")
    if not 1 <= args.uniform_period_ms <= 1000:
        parser.error("--uniform-period-ms must be within 1 to 1000")
    return args


@dataclass
class Run:
    """What one run recorded: the sampler's arrays and statistics, and the cells it completed."""

    samples: np.ndarray
    energy: np.ndarray
    driver_power: np.ndarray
    stats: dict[str, Any]
    seconds: float
    cells: list[Cell]
    error: str | None


def run_all(
    cells: list[Cell], load: SimLoad | TorchLoad, zeus: ZeusMethods | None, sampler: Any, simulated: bool
) -> Run:
    """Every cell back to back under one sampler; a failure ends the run but keeps the cells completed."""
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    driven: list[np.ndarray] = []
    done: list[Cell] = []
    error = None
    started = time.monotonic()
    try:
        sampler.start()
        for cell in cells:
            began = time.monotonic()
            run_cell(cell, load, zeus, simulated)
            chunks.append(sampler.drain())
            driven.append(sampler.drain_driver_power())
            done.append(cell)
            took = time.monotonic() - began
            print(f"  {cell.shape:8} {cell.length_s:g} s: {cell.windows} windows ({took:.1f} s)")
    except Exception as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        print(f"  run FAILED after {len(done)} cells ({error})")
    finally:
        with contextlib.suppress(Exception):
            load.close()
        sampler.stop()
        chunks.append(sampler.drain())
        driven.append(sampler.drain_driver_power())
        stats = sampler.stats().as_dict()
        sampler.close()
    samples = concat([c[0] for c in chunks], SAMPLE_DTYPE)
    energy = concat([c[1] for c in chunks], ENERGY_DTYPE)
    driver_power = concat(driven, DRIVER_POWER_DTYPE)
    return Run(samples, energy, driver_power, stats, time.monotonic() - started, done, error)


def cell_span(cell: Cell) -> tuple[int, int]:
    """The cell's measured windows: its first edge and its last."""
    return cell.edges_ns[cell.warmup], cell.edges_ns[cell.warmup + cell.windows]


def estimate_all(
    run: Run, gpu: int, zeus: ZeusMethods | None, simulated: bool, errors: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each completed cell's windows, reference and statistics; the methods' labels."""
    previous = ten_hz_readings(run.energy, gpu)
    labels = {
        "previous": "previous counter (10 Hz, extended at the mean): sampler/energy.py before the fused "
        "estimator (commit 77e047f), counter_delta + energy_window's extension, on reads rebuilt at 100 ms "
        "ticks from the kept reads",
    }
    if zeus is not None:
        labels["zeus_window"] = (
            f"Zeus {zeus.version} ZeusMonitor begin/end_window (counter read at each edge)"
        )
        labels["zeus_power"] = (
            f"Zeus {zeus.version} PowerMonitor.get_energy (deduplicated instant power polled every "
            f"{zeus.power_period_s:g} s, trapezoid between the samples inside the window)"
        )
    results = []
    for cell in run.cells:
        try:
            result, cell_labels = estimate_cell(
                cell, run.samples, run.energy, run.driver_power, previous, gpu, zeus
            )
        except Exception as exc:  # one cell's failure must not cost the others
            traceback.print_exc()
            errors[cell.name] = f"{type(exc).__name__}: {exc}"
            continue
        labels.update(cell_labels)
        result.update(
            shape=cell.shape,
            length_s=cell.length_s,
            windows_n=cell.windows,
            warmup_windows=cell.warmup,
            window_step_s=cell.step_s,
            tail_windows=cell.tail,
            simulated=simulated,
            edges_ns=cell.edges_ns,
            edges_wall=cell.edges_wall,
        )
        result["stats"] = cell_stats(result, simulated)
        result["agreement"] = agreement(result)
        result["drift"] = counter_drift(run.energy, gpu, *cell_span(cell), cell.length_s)
        result["holdout"] = holdout(run.samples, run.energy, run.driver_power, gpu, *cell_span(cell))
        truth = [w["truth_j"] for w in result["windows"] if w["truth_j"] is not None]
        ref = result["reference"]
        ref["mean_j"] = float(np.mean(truth)) if simulated and truth else ref["counter_per_window_j"]
        results.append(result)
    return results, labels


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    labels: dict[str, str],
    zeus_reason: str | None,
    title: str,
    simulated: bool,
) -> dict[str, Any]:
    """Print the tables, the methods and the goals; the goals' verdicts."""
    methods = [m for m in METHODS if m in results[0]["stats"]]
    for shape in args.shapes:
        chosen = [r for r in results if r["shape"] == shape]
        if chosen:
            shape_table(shape, chosen, methods, title)
    print("\nmethods: " + "; ".join(f"{METHODS[m]} = {labels.get(m, m)}" for m in methods))
    print(f"reference: {REFERENCE[simulated]}")
    if zeus_reason is not None:
        print(f"Zeus columns {zeus_reason}")
    check = [
        r["reference"]
        for r in results
        if r["reference"]["exact_per_window_j"] and r["reference"]["counter_per_window_j"] is not None
    ]
    if check:  # the real GPU's reference, checked against the exact energy
        worst = max(abs(r["counter_per_window_j"] / r["exact_per_window_j"] - 1) for r in check)
        print(
            f"the real GPU's reference (cell counter / windows) against the exact energy: worst {pct(worst)}%"
        )
    print(
        "\nthe edge split against the counter's own updates, each held out in turn (update_holdout.py; "
        "edges ~100 ms from the nearest update left):"
    )
    for r in results:
        print(holdout_line(f"{r['shape']} {r['length_s']:g} s", r["holdout"]))
    held = [r["holdout"]["gpuprof"] for r in results if r["holdout"].get("gpuprof")]
    if held:  # a per-edge reference a real GPU has: beside the coverage goal, whose reference is a mean
        n = sum(h["n"] for h in held)
        covered = sum(h["coverage"] * h["n"] for h in held if h["coverage"] is not None) / n
        worst = min((h["coverage"] for h in held if h["coverage"] is not None), default=None)
        print(
            f"  held-out updates inside gpuprof's bound: {covered:.1%} of {n}"
            + (f" (worst cell {worst:.0%})" if worst is not None else "")
        )
    goals = check_goals(results, zeus_reason)
    print(f"\ngoals (gpuprof counter figure{', against the exact energy' if simulated else ''}):")
    for key, text in GOALS.items():
        print(f"  {text}: {goals[key]['result']} ({goals[key]['detail']})")
    if not simulated:
        print(f"  note: {ADDITIVE_NOTE}")
    return {GOALS[k]: v for k, v in goals.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    if args.simulate:
        simulate_node(args.gpu + 1)
    else:  # one GPU, named the same by NVML (gpuprof, Zeus) and CUDA (torch's cuda:0, Zeus's index 0)
        if os.environ.get("CUDA_VISIBLE_DEVICES", str(args.gpu)) != str(args.gpu):
            notes.append(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} replaced by {args.gpu}")
        os.environ.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(args.gpu))
    library = resolve(simulate=args.simulate)
    simulated, gpu = library.simulated, args.gpu
    now = datetime.datetime.now(datetime.UTC)
    label = "SIMULATED GPU" if simulated else "REAL GPU"
    device = device_info(library, (gpu,))
    cells = plan(args)
    spans = [(c.length_s + c.step_s) * (c.warmup + c.windows + c.tail) for c in cells]
    print(
        f"gpuprof window-energy benchmark -- {label}: {device['name']} "
        f"(driver {device.get('driver_version', '?')}), GPU {gpu}, {len(cells)} cells, "
        f"{sum(spans):.0f} s of windows"
    )
    load: SimLoad | TorchLoad = SimLoad(gpu) if simulated else TorchLoad()
    zeus, zeus_reason = open_zeus(args, simulated)
    print(f"  load: {load.description}")
    print(f"  Zeus: {'version ' + zeus.version if zeus else zeus_reason}")
    config, rate_note = sampler_config(gpu, args.energy_rate, max(spans) + 30)
    notes += [rate_note] if rate_note else []
    errors: dict[str, str] = {}
    try:
        run = run_all(cells, load, zeus, open_sampler(config, library), simulated)
        # energy_reads: the reads made (the sampler may keep only those around a change of the counter)
        reads = run.stats.get("energy_reads") or run.stats["energy_readings"]
        print(
            f"  gpuprof sampler: {run.stats['achieved_rate_hz']:.0f} Hz power, "
            f"{reads / run.seconds:.0f} counter reads/s (asked {config.energy_rate_hz:g} Hz; "
            f"{run.stats['energy_readings']} readings kept); driver power samples: "
            f"{run.driver_power.size / run.seconds:.1f}/s from {run.stats.get('driver_power_reads', 0)} reads"
        )
        if run.error:
            errors["run"] = run.error
        if args.records:  # the raw records, so the estimators can be studied again without the GPU
            args.records.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                args.records, samples=run.samples, energy=run.energy, driver_power=run.driver_power
            )
        results, labels = estimate_all(run, gpu, zeus, simulated, errors)
    finally:
        if zeus is not None:
            zeus.close()
    if zeus is not None and zeus.errors:
        errors["zeus"] = f"{len(zeus.errors)} failed calls, first: {zeus.errors[0]}"
    goals = (
        report(args, results, labels, zeus_reason, f"{label}, bias/CV/coverage in %", simulated)
        if results
        else {}
    )
    for key, error in errors.items():
        print(f"  ERROR {key}: {error}")
    for note in notes:
        print(f"  note: {note}")
    result = {
        "simulated": simulated,
        "device": device,
        "date": now.isoformat(timespec="seconds"),
        **run_info(),
        "gpu": gpu,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "duty": DUTY,
        "load": load.description,
        "matmul_s": getattr(load, "matmul_s", None),
        "reference": REFERENCE[simulated],
        "methods": {m: labels[m] for m in METHODS if m in labels},
        "zeus": {
            "version": zeus.version if zeus else None,
            "skipped": zeus_reason,
            "errors": zeus.errors if zeus else [],
        },
        "sampler": {"config": repr(config), "stats": run.stats, "energy_reads_per_s": reads / run.seconds},
        "run_s": run.seconds,
        "goals": goals,
        "errors": errors,
        "notes": notes + ([] if simulated else [ADDITIVE_NOTE]),
        "cells": results,
    }
    out = args.json or Path("out") / f"window_bench_{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=1) + "\n")
    print(f"\nwrote {out} ({run.seconds:.0f} s{', SIMULATED' if simulated else ''})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
