"""Jobs and GPUs for the terminal and for --json: a job's result, job tables, GPU tables, progress lines."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .formats import energy
from .formats import number as _num
from .handle import JobProgress, job_json
from .llm_render import render_llm, render_sweep
from .phase_render import render_phase_clocks
from .wire.messages import GpuInfo

__all__ = ["job_json", "progress_line", "render_gpus", "render_job", "render_jobs"]

SENSOR_NOTE = "shorter than one power-sensor update (~100 ms): energy unreliable"
MAX_WINDOW_ROWS = 20


def _energy(value: float | None, bound: float | None) -> str:
    return energy(value, bound, unbounded=" (no bound)")


def _when(wall_ns: int | None) -> str:
    if not wall_ns:
        return "-"
    return dt.datetime.fromtimestamp(wall_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _clocks(figures: dict[str, Any]) -> str:
    low, high = figures.get("sm_clock_min_mhz"), figures.get("sm_clock_max_mhz")
    if low is None and isinstance(figures.get("sm_clock_range_mhz"), list | tuple):
        low, high = figures["sm_clock_range_mhz"]
    return "n/a" if low is None else f"{low}-{high} MHz"


def _energy_lines(figures: dict[str, Any], indent: str) -> list[str]:
    integrated = _energy(figures.get("energy_integrated_j"), figures.get("energy_integrated_uncertainty_j"))
    counter = _energy(figures.get("energy_counter_j"), figures.get("energy_counter_uncertainty_j"))
    duration = figures.get("duration_s")
    window = f"over {duration:.3f} s" if duration is not None else ""
    # The fused figure is the whole window's energy: the counter between its updates, the edges estimated.
    fused = figures.get("energy_counter_j") is not None
    counter_window = window if fused else "(fewer than two counter updates)"
    reasons = ", ".join(figures.get("clock_event_reasons") or []) or "none"
    counter_method = figures.get("energy_counter_method") or "energy counter difference"
    integrated_method = figures.get("energy_integrated_method") or "integrated power (sample and hold)"
    power = f"mean {_num(figures.get('mean_power_w'), 'W')}, peak {_num(figures.get('peak_power_w'), 'W')}"
    lines = [
        f"{indent}power ({figures.get('power_source', 'instant')})  {power}",
        f"{indent}energy, counter           {counter}  {counter_window}".rstrip(),
        f"{indent}  method: {counter_method}",
        f"{indent}energy, integrated power  {integrated}  {window}".rstrip(),
        f"{indent}  method: {integrated_method}",
        f"{indent}SM clock {_clocks(figures)}; clock-event reasons: {reasons}",
    ]
    if figures.get("shorter_than_sensor_update"):
        lines.append(f"{indent}warning: window {SENSOR_NOTE}")
    return lines


def _window_name(window: dict[str, Any]) -> str:
    """A window's name with what tells it from its namesakes: a point's task, batch size and clock, a
    steady-state or warmup window's id (``m0.bs4``: model 0, batch size 4)."""
    name, attrs = str(window.get("name", "?")), window.get("attrs") or {}
    if not isinstance(attrs, dict):
        return name
    if name == "point":
        parts = [str(attrs[k]) for k in ("task",) if attrs.get(k)]
        parts += [f"batch {attrs['batch_size']}"] if attrs.get("batch_size") else []
        parts += [f"{attrs['sm_clock_mhz']} MHz"] if attrs.get("sm_clock_mhz") else []
        return f"point {attrs.get('id', '')} ({', '.join(parts)})" if parts else name
    ident = attrs.get("id")
    return f"{name} {ident}" if ident is not None and name != "batch" else name


def _window_lines(windows: list[dict[str, Any]]) -> list[str]:
    """Marked windows as a table; the methods are stated once above it."""
    if not windows:
        return []
    first = windows[0]
    rows = []
    for window in windows[:MAX_WINDOW_ROWS]:
        rows.append(
            [
                _window_name(window),
                _num(window.get("duration_s"), "s", 3),
                _energy(window.get("energy_counter_j"), window.get("energy_counter_uncertainty_j")),
                _energy(window.get("energy_integrated_j"), window.get("energy_integrated_uncertainty_j")),
                _num(window.get("mean_power_w"), "W"),
                _num(window.get("peak_power_w"), "W"),
                _clocks(window),
                "SHORT" if window.get("shorter_than_sensor_update") else "",
            ]
        )
    header = ["WINDOW", "DURATION", "COUNTER", "INTEGRATED", "MEAN", "PEAK", "SM CLOCK", ""]
    lines = [
        f"  windows ({len(windows)}): energy ± bound over each window's DURATION, by the counter "
        f"({first.get('energy_counter_method') or 'energy counter difference'})",
        f"    and by integrated power ({first.get('energy_integrated_method') or 'sample and hold'})",
    ]
    lines += ["    " + line for line in _table(header, rows).splitlines()]
    if len(windows) > MAX_WINDOW_ROWS:
        lines.append(f"    ... and {len(windows) - MAX_WINDOW_ROWS} more (--json lists every window)")
    if any(w.get("shorter_than_sensor_update") for w in windows):
        lines.append(f"    SHORT: {SENSOR_NOTE}")
    return lines


def _command_lines(command: dict[str, Any], failed: bool) -> list[str]:
    """A command job's program: how it ended, what it wrote and where; the last lines of its output (more
    of them when the job failed)."""
    status = command.get("exit_status")
    ended = "did not start" if status is None else f"exit status {status}"
    lines = [
        f"  command         {' '.join(command.get('argv') or [])[:200]}",
        f"    {ended}, {command.get('runs')} run(s), {command.get('stdout_bytes')} bytes on stdout, "
        f"{command.get('stderr_bytes')} on stderr",
    ]
    if command.get("stdout_path"):
        lines.append(f"    output in {command['stdout_path']} and {command.get('stderr_path')}")
    if command.get("refused_lines"):
        lines.append(
            f"    {command['refused_lines']} marker line(s) refused (docs/protocol.md, Marker lines)"
        )
    for name in ("stdout", "stderr"):
        tail = (command.get(f"{name}_tail") or "").strip().splitlines()[-(20 if failed else 5) :]
        if tail:
            lines.append(f"    last lines of {name}:")
            lines += [f"      {line}" for line in tail]
    return lines


def render_job(job: dict[str, Any]) -> str:
    """A job's state and, once finished, every energy figure with its method, window and bound."""
    source = "SIMULATED GPU" if job.get("simulated") else "GPU"
    name = f"  {job['name']!r}" if job.get("name") else ""
    where = f"{source} {job.get('gpu', '?')}, user {job.get('user', '?')}"
    lines = [
        f"job {job['id']}{name}  {job['state']}  ({where})",
        f"  created {_when(job.get('created_ns'))}, started {_when(job.get('started_ns'))}, "
        f"finished {_when(job.get('finished_ns'))}",
    ]
    if job.get("reason"):
        lines.append(f"  reason          {job['reason']}")
    result = job.get("result")
    if not result:
        return "\n".join(lines)
    lines.append(f"  duration        {_num(result.get('duration_s'), 's', 3)}")
    dvfs = result.get("dvfs") or {}
    clocks = dvfs.get("set")
    if clocks:
        span, sweep = clocks.get("sm_clock_range_mhz"), clocks.get("sweep_sm_clocks_mhz")
        parts = [f"SM clock locked within {span[0]}-{span[1]} MHz"] if span else []
        if sweep:
            parts.append(f"SM clock locked per point, {len(sweep)} clocks, {min(sweep)}-{max(sweep)} MHz")
        if clocks.get("phase_clocks_mhz"):
            pairs = len(clocks["phase_clocks_mhz"])
            parts.append(f"SM clock switched at phase edges, {pairs} (prefill, decode) pairs")
        parts += [
            f"{label} {clocks[key]:g} {unit}"
            for key, label, unit in (
                ("sm_clock_mhz", "SM clock locked at", "MHz"),
                ("memory_clock_mhz", "memory clock locked at", "MHz"),
                ("power_limit_w", "power limit", "W"),
            )
            if clocks.get(key) is not None
        ]
        reset = dvfs.get("reset") or "at the job's end"
        lines.append(f"  clocks          {', '.join(parts)}; reset {reset}")
    lines += _energy_lines(result, "  ")
    lines += _window_lines(result.get("windows") or [])
    if result.get("command"):
        lines += _command_lines(result["command"], job["state"] != "succeeded")
    if result.get("llm"):
        lines += render_llm(result["llm"], bool(job.get("simulated")))
    lines += render_sweep(dvfs, bool(job.get("simulated")))
    lines += render_phase_clocks(dvfs.get("phase_clocks"), bool(job.get("simulated")))
    if job.get("simulated"):
        lines.append("  (SIMULATED: these figures come from gpuprof's simulated GPU, not a real one)")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    )


def render_jobs(jobs: list[dict[str, Any]]) -> str:
    """Jobs as a table, newest first."""
    if not jobs:
        return "no jobs"
    rows = []
    for job in jobs:
        result = job.get("result") or {}
        rows.append(
            [
                str(job["id"]),
                str(job.get("name") or ""),
                str(job["state"]) + (" (sim)" if job.get("simulated") else ""),
                str(job.get("user") or ""),
                str(job.get("gpu", "")),
                _when(job.get("created_ns")),
                _num(result.get("duration_s"), "s", 1) if result else "-",
                _energy(result.get("energy_counter_j"), result.get("energy_counter_uncertainty_j"))
                if result
                else "-",
            ]
        )
    header = ["ID", "NAME", "STATE", "USER", "GPU", "CREATED", "DURATION", "ENERGY (fused counter ± bound)"]
    return _table(header, rows)


def _gpu_name(gpu: GpuInfo) -> str:
    if gpu.simulated:
        return gpu.name.replace("(simulated)", "").strip() + " (SIMULATED)"
    return gpu.name


def render_gpus(gpus: list[GpuInfo]) -> str:
    """The daemon's GPUs as a table."""
    rows = []
    for gpu in gpus:
        clocks = gpu.graphics_clocks_mhz
        rows.append(
            [
                str(gpu.index),
                _gpu_name(gpu),
                gpu.uuid,
                f"{min(clocks)}-{max(clocks)} MHz ({len(clocks)})" if clocks else "n/a",
                f"{_num(gpu.power_limit_w, 'W', 0)} ({_num(gpu.min_power_limit_w, 'W', 0)}"
                f"-{_num(gpu.max_power_limit_w, 'W', 0)})",
            ]
        )
    return _table(["GPU", "NAME", "UUID", "SM CLOCKS", "POWER LIMIT (range)"], rows)


def progress_line(progress: JobProgress) -> str:
    """One line: the job's state, elapsed time, current power and clock, and phase."""
    parts = [f"job {progress.id}", f"{progress.state:<9}", f"{progress.elapsed_s:7.1f} s"]
    if progress.power_w is not None:
        parts.append(f"{progress.power_w:6.1f} W")
    if progress.sm_clock_mhz is not None:
        parts.append(f"{progress.sm_clock_mhz:4d} MHz")
    if progress.fraction is not None:
        left = progress.seconds_left
        parts.append(
            f"{progress.fraction:4.0%}" + (f" ~{left // 60:.0f}:{left % 60:02.0f} left" if left else "")
        )
    if progress.phase:
        parts.append(f"phase {progress.phase}")
    if progress.simulated:
        parts.append("SIMULATED")
    return "  ".join(parts)
