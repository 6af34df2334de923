"""The binary layout of power samples and energy-counter readings, shared by every sampler backend."""

from __future__ import annotations

import numpy as np

# One GPU read by the fast loop. Mirrors ``gp_sample_t`` in ``_records.pxd`` byte for byte (40 bytes);
# the pure-Python sampler fills the same layout, so both backends drain identical arrays.
SAMPLE_DTYPE = np.dtype(
    {
        "names": [
            "t_ns",
            "clock_event_reasons",
            "power_mw",
            "sm_clock_mhz",
            "mem_clock_mhz",
            "gpu",
            "missing",
            "util_pct",
            "temp_c",
            "power_source",
            "memory_power_mw",
        ],
        "formats": ["<i8", "<u8", "<u4", "<u4", "<u4", "<u2", "<u2", "u1", "u1", "u1", "<u4"],
        "offsets": [0, 8, 16, 20, 24, 28, 30, 32, 33, 34, 36],
        "itemsize": 40,
    }
)

# One reading of the energy counter by the slow loop (32 bytes); mirrors ``gp_energy_t``.
ENERGY_DTYPE = np.dtype(
    {
        "names": ["t_start_ns", "t_end_ns", "energy_mj", "gpu", "nvml_return"],
        "formats": ["<i8", "<i8", "<u8", "<u2", "<i4"],
        "offsets": [0, 8, 16, 24, 28],
        "itemsize": 32,
    }
)

# One sample of the driver's own buffer of total-power samples (nvmlDeviceGetSamples with
# NVML_TOTAL_POWER_SAMPLES, read by the energy thread): 16 bytes; mirrors ``gp_power_t``. t_ns is the
# driver's timestamp moved onto CLOCK_MONOTONIC; on an H100 the value is the mean power of the 25 ms ending
# 2 ms before it, one every ~20 ms (docs/measurement.md).
DRIVER_POWER_DTYPE = np.dtype(
    {
        "names": ["t_ns", "power_mw", "gpu"],
        "formats": ["<i8", "<u4", "<u2"],
        "offsets": [0, 8, 12],
        "itemsize": 16,
    }
)

# Bits of SAMPLE_DTYPE["missing"]: which reads of that sample failed (their value is 0, not a reading).
MISSING_POWER = 0x01
MISSING_SM_CLOCK = 0x02
MISSING_MEM_CLOCK = 0x04
MISSING_UTIL = 0x08
MISSING_TEMP = 0x10
MISSING_REASONS = 0x20
MISSING_MEMORY_POWER = 0x40  # also where the GPU reports no memory power (before Hopper)

# SAMPLE_DTYPE["power_source"]: where power_mw came from.
POWER_SOURCE_INSTANT = 0  # field NVML_FI_DEV_POWER_INSTANT (186): ~25 ms window, refreshed every ~100 ms
POWER_SOURCE_AVERAGE = 1  # nvmlDeviceGetPowerUsage: a 1 s average on Ampere and newer
POWER_SOURCE_NAMES = {POWER_SOURCE_INSTANT: "instant", POWER_SOURCE_AVERAGE: "average_1s"}

# NVML field ids and clock types the samplers read.
FIELD_POWER_INSTANT = 186
FIELD_POWER_AVERAGE = 185  # with scope POWER_SCOPE_MEMORY: the memory's average power
POWER_SCOPE_MEMORY = 2
CLOCK_SM = 1
CLOCK_MEM = 2
TEMPERATURE_GPU = 0

# Jitter histogram: bin i counts intervals whose |interval - period| is in [i, i+1) microseconds;
# the last bin counts everything larger.
JITTER_BINS = 65536


def concat(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Concatenate record arrays keeping ``dtype`` exactly (np.concatenate drops structured padding)."""
    out = np.empty(sum(a.size for a in arrays), dtype=dtype)
    start = 0
    for array in arrays:
        out[start : start + array.size] = array
        start += array.size
    return out
