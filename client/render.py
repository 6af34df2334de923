"""Plain-text rendering of summaries for the terminal."""

from __future__ import annotations

from typing import Any

from .formats import energy as _energy
from .formats import number as _fmt


def nvml_errors_text(errors: dict[str, dict[str, int]]) -> str:
    """NVML error counts per GPU: ``GPU 0: NVML_ERROR_TIMEOUT x2; GPU 1: ...`` (GPUs without any left out)."""
    return "; ".join(
        f"GPU {gpu}: " + ", ".join(f"{name} x{count}" for name, count in codes.items())
        for gpu, codes in errors.items()
        if codes
    )


def render_summary(summary: dict[str, Any]) -> str:
    """The ``gpuprof sample`` summary as aligned lines; says "SIMULATED" when it is."""
    source = "SIMULATED GPU" if summary["simulated"] else "NVIDIA driver"
    lines = [
        f"gpuprof sample  ({source}, {summary['backend']} sampler)"
        + ("  [interrupted: kept what was recorded]" if summary["interrupted"] else ""),
        f"  duration        {summary['duration_s']:.3f} s",
        f"  samples         {summary['samples']:,} (achieved {summary['achieved_rate_hz']:,.1f} Hz "
        f"of {summary['requested_rate_hz']:,.0f} Hz requested)",
        f"  timing          jitter p50 {_fmt(summary['jitter_p50_us'], 'us', 0)}, "
        f"p99 {_fmt(summary['jitter_p99_us'], 'us', 0)}; {summary['deadline_misses']} deadline misses "
        f"({summary['read_overrun_misses']} in slow NVML reads); "
        f"{summary['overflows']} overflows",
    ]
    if summary["nvml_errors"]:
        lines.append(f"  NVML errors     {nvml_errors_text(summary['nvml_errors'])}")
    for gpu in summary["gpus"]:
        clocks = (
            f"{gpu['sm_clock_min_mhz']}-{gpu['sm_clock_max_mhz']} MHz"
            if gpu["sm_clock_min_mhz"] is not None
            else "n/a"
        )
        reasons = ", ".join(gpu["clock_event_reasons"]) or "none"
        integrated = _energy(gpu["energy_integrated_j"], gpu["energy_integrated_uncertainty_j"])
        counter = _energy(gpu["energy_counter_j"], gpu["energy_counter_uncertainty_j"])
        lines += [
            f"  GPU {gpu['gpu']}",
            f"    power ({gpu['power_source']})  mean {_fmt(gpu['mean_power_w'], 'W')}, "
            f"peak {_fmt(gpu['peak_power_w'], 'W')}; "
            f"{gpu['distinct_power_updates']:,} distinct sensor updates",
            f"    energy, integrated power  {integrated}  over {gpu['duration_s']:.3f} s",
            f"      method: {gpu.get('energy_integrated_method') or 'integrated power (sample and hold)'}",
            f"    energy, counter           {counter}  over {gpu['duration_s']:.3f} s"
            + ("" if gpu["energy_counter_j"] is not None else " (fewer than two counter updates)"),
            f"      method: {gpu.get('energy_counter_method') or 'energy counter'}",
            f"    SM clock {clocks} (median {_fmt(gpu['sm_clock_median_mhz'], 'MHz', 0)}); "
            f"clock-event reasons: {reasons}",
        ]
        if gpu["shorter_than_sensor_update"]:
            lines.append(
                "    warning: window shorter than one power-sensor update (~100 ms): energy unreliable"
            )
    if "output" in summary:
        lines.append(f"  written         {', '.join(summary['output'].values())}")
    return "\n".join(lines)
