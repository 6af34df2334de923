"""The summary of a recording: per-GPU power, energy (counter and integrated) and clocks, plus run quality."""

from __future__ import annotations

from typing import Any

from .energy import energy_window
from .recording import Recording


def summarize(recording: Recording) -> dict[str, Any]:
    """A JSON-ready summary of ``recording``; every energy figure names its method, window and bound."""
    trace, stats = recording.trace, recording.stats
    gpus = sorted({int(g) for g in trace.samples["gpu"]}) if trace.samples.size else []
    windows = [
        energy_window(trace.samples, trace.energy, gpu, driver_power=trace.driver_power) for gpu in gpus
    ]
    duration = max((w.duration_s for w in windows), default=0.0)
    return {
        "simulated": trace.simulated,
        "interrupted": recording.interrupted,
        "library": trace.metadata.get("library"),
        "duration_s": duration,
        "samples": int(trace.samples.size),
        "energy_readings": int(trace.energy.size),
        "driver_power_samples": int(trace.driver_power.size),
        "requested_rate_hz": stats.rate_hz,
        "achieved_rate_hz": stats.achieved_rate_hz,
        "deadline_misses": stats.deadline_misses,
        "read_overrun_misses": stats.read_overrun_misses,
        "overflows": stats.overflows + stats.energy_overflows,
        "jitter_p50_us": stats.jitter_p50_us,
        "jitter_p99_us": stats.jitter_p99_us,
        "nvml_errors": {str(g): c for g, c in stats.errors.items() if c},
        "backend": stats.backend,
        "gpus": [w.as_dict() for w in windows],
    }
