"""A recorded trace: its samples, energy readings and driver power samples as DataFrames, and writing them
to Parquet or CSV."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import OutputError, UsageError
from .records import (
    DRIVER_POWER_DTYPE,
    ENERGY_DTYPE,
    MISSING_MEM_CLOCK,
    MISSING_MEMORY_POWER,
    MISSING_POWER,
    MISSING_REASONS,
    MISSING_SM_CLOCK,
    MISSING_TEMP,
    MISSING_UTIL,
    POWER_SOURCE_NAMES,
    SAMPLE_DTYPE,
    concat,
)

SAMPLE_COLUMNS = [
    "t_ns",
    "gpu",
    "power_w",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_pct",
    "temp_c",
    "clock_event_reasons",
    "power_source",
    "memory_power_w",
]
FORMATS = {".parquet": "parquet", ".csv": "csv"}
# Each column's pandas dtype, in the files and in what a client rebuilds from the wire (client/api.py);
# the nullable ones (capitalised) hold a failed read as missing, never as zero. power_source is categorical.
SAMPLE_DTYPES = {
    "t_ns": "int64",
    "gpu": "int16",
    "power_w": "float64",
    "sm_clock_mhz": "UInt32",
    "mem_clock_mhz": "UInt32",
    "util_pct": "UInt8",
    "temp_c": "UInt8",
    "clock_event_reasons": "UInt64",
    "memory_power_w": "float64",
}
ENERGY_DTYPES = {
    "t_ns": "int64",
    "t_start_ns": "int64",
    "t_end_ns": "int64",
    "gpu": "int16",
    "energy_mj": "UInt64",
    "nvml_return": "int32",
}
DRIVER_POWER_DTYPES = {"t_ns": "int64", "gpu": "int16", "power_w": "float64"}
TRACE_DTYPES = {**SAMPLE_DTYPES, **ENERGY_DTYPES, **DRIVER_POWER_DTYPES}


@dataclass
class Trace:
    """Samples, energy-counter readings and the driver's power samples of one recording, with its clock
    anchor and provenance."""

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, SAMPLE_DTYPE))
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0, ENERGY_DTYPE))
    monotonic_anchor_ns: int = 0  # CLOCK_MONOTONIC at the wall-clock anchor
    wall_anchor_ns: int = 0  # time.time_ns() read at the same instant
    simulated: bool = False
    metadata: dict[str, object] = field(default_factory=dict)
    driver_power: np.ndarray = field(default_factory=lambda: np.zeros(0, DRIVER_POWER_DTYPE))

    def extend(self, samples: np.ndarray, energy: np.ndarray, driver_power: np.ndarray | None = None) -> None:
        """Append drained batches."""
        if samples.size:
            self.samples = concat([self.samples, samples], SAMPLE_DTYPE)
        if energy.size:
            self.energy = concat([self.energy, energy], ENERGY_DTYPE)
        if driver_power is not None and driver_power.size:
            self.driver_power = concat([self.driver_power, driver_power], DRIVER_POWER_DTYPE)

    def wall_time_ns(self, t_ns: np.ndarray | int) -> np.ndarray | int:
        """Wall-clock (Unix epoch ns) time of monotonic timestamps, through the anchor."""
        return t_ns - self.monotonic_anchor_ns + self.wall_anchor_ns

    def samples_frame(self) -> pd.DataFrame:
        return samples_frame(self.samples)

    def energy_frame(self) -> pd.DataFrame:
        return energy_frame(self.energy)

    def driver_power_frame(self) -> pd.DataFrame:
        return driver_power_frame(self.driver_power)


def _masked(values: np.ndarray, missing: np.ndarray, bit: int, dtype: str) -> pd.Series:
    series = pd.Series(values, dtype=dtype)
    return series.mask((missing & bit) != 0)


def samples_frame(samples: np.ndarray) -> pd.DataFrame:
    """One row per GPU-sample; a failed read is a missing value, never a zero."""
    missing = samples["missing"]
    types = SAMPLE_DTYPES
    return pd.DataFrame(
        {
            "t_ns": samples["t_ns"].astype(types["t_ns"]),
            "gpu": samples["gpu"].astype(types["gpu"]),
            "power_w": _masked(samples["power_mw"] / 1000.0, missing, MISSING_POWER, types["power_w"]),
            "sm_clock_mhz": _masked(
                samples["sm_clock_mhz"], missing, MISSING_SM_CLOCK, types["sm_clock_mhz"]
            ),
            "mem_clock_mhz": _masked(
                samples["mem_clock_mhz"], missing, MISSING_MEM_CLOCK, types["mem_clock_mhz"]
            ),
            "util_pct": _masked(samples["util_pct"], missing, MISSING_UTIL, types["util_pct"]),
            "temp_c": _masked(samples["temp_c"], missing, MISSING_TEMP, types["temp_c"]),
            "clock_event_reasons": _masked(
                samples["clock_event_reasons"], missing, MISSING_REASONS, types["clock_event_reasons"]
            ),
            "power_source": pd.Categorical.from_codes(
                samples["power_source"].astype(np.int8),
                categories=pd.Index(list(POWER_SOURCE_NAMES.values())),
            ),
            # The memory's average power where NVML reports it (Hopper and newer), else missing.
            "memory_power_w": _masked(
                samples["memory_power_mw"] / 1000.0, missing, MISSING_MEMORY_POWER, types["memory_power_w"]
            ),
        },
        columns=SAMPLE_COLUMNS,
    )


def energy_frame(energy: np.ndarray) -> pd.DataFrame:
    """One row per energy-counter reading; ``t_ns`` is the middle of the ~4 ms call."""
    types = ENERGY_DTYPES
    return pd.DataFrame(
        {
            "t_ns": ((energy["t_start_ns"] + energy["t_end_ns"]) // 2).astype(types["t_ns"]),
            "t_start_ns": energy["t_start_ns"].astype(types["t_start_ns"]),
            "t_end_ns": energy["t_end_ns"].astype(types["t_end_ns"]),
            "gpu": energy["gpu"].astype(types["gpu"]),
            "energy_mj": _masked(
                energy["energy_mj"], (energy["nvml_return"] != 0).astype(np.uint8), 1, types["energy_mj"]
            ),
            "nvml_return": energy["nvml_return"].astype(types["nvml_return"]),
        }
    )


def driver_power_frame(driver_power: np.ndarray) -> pd.DataFrame:
    """One row per sample of the driver's power buffer; ``t_ns`` is the driver's timestamp on CLOCK_MONOTONIC,
    ``power_w`` the mean power of the span the driver averaged before it."""
    types = DRIVER_POWER_DTYPES
    return pd.DataFrame(
        {
            "t_ns": driver_power["t_ns"].astype(types["t_ns"]),
            "gpu": driver_power["gpu"].astype(types["gpu"]),
            "power_w": (driver_power["power_mw"] / 1000.0).astype(types["power_w"]),
        }
    )


def output_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """(samples file, energy file, format) for an output path ending in .parquet or .csv."""
    target = Path(path)
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise UsageError(f"output {str(target)!r} must end in .parquet or .csv")
    return target, target.with_name(f"{target.stem}.energy{target.suffix}"), fmt


def driver_power_path(path: str | os.PathLike[str]) -> Path:
    """The driver power file beside the samples file ``path``: ``NAME.driver_power.EXT``."""
    target = Path(path)
    return target.with_name(f"{target.stem}.driver_power{target.suffix}")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail early, before sampling, when the output cannot be written."""
    target, energy_path, _ = output_paths(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"cannot write {str(target)!r}: directory {str(directory)!r} does not exist")
    for candidate in (target, energy_path, driver_power_path(target)):
        if candidate.is_dir():
            raise OutputError(f"cannot write {str(candidate)!r}: it is a directory")
        probe = candidate if candidate.exists() else directory
        if not os.access(probe, os.W_OK):
            raise OutputError(f"cannot write {str(candidate)!r}: permission denied")


def write_trace(trace: Trace, path: str | os.PathLike[str], wall_clock: bool = False) -> tuple[Path, Path]:
    """Write samples to ``path``, energy readings beside it (``NAME.energy.EXT``) and the driver's power
    samples (``NAME.driver_power.EXT``); returns the first two paths (the third is ``driver_power_path``).
    ``wall_clock``: with a ``time`` column (``write_frames``)."""
    meta = {
        "monotonic_anchor_ns": trace.monotonic_anchor_ns,
        "wall_anchor_ns": trace.wall_anchor_ns,
        "simulated": trace.simulated,
        **trace.metadata,
    }
    return write_frames(
        trace.samples_frame(), trace.energy_frame(), path, meta, wall_clock, trace.driver_power_frame()
    )


def with_wall_clock(frame: pd.DataFrame, meta: dict[str, object]) -> pd.DataFrame:
    """``frame`` with a ``time`` column after its timestamp (``t_ns``, else ``t_start_ns``): the wall-clock
    instant, UTC, through the anchor in ``meta`` (the monotonic and wall clocks read together)."""
    anchor, wall = meta.get("monotonic_anchor_ns"), meta.get("wall_anchor_ns")
    column = "t_ns" if "t_ns" in frame else "t_start_ns" if "t_start_ns" in frame else None
    if column is None or not isinstance(anchor, int) or not isinstance(wall, int):
        return frame
    at = list(frame.columns).index(column) + 1
    times = pd.to_datetime(frame[column].astype("int64") - anchor + wall, unit="ns", utc=True)
    out = frame.copy()
    out.insert(at, "time", times)
    return out


def write_frames(
    samples: pd.DataFrame,
    energy: pd.DataFrame,
    path: str | os.PathLike[str],
    meta: dict[str, object],
    wall_clock: bool = False,
    driver_power: pd.DataFrame | None = None,
) -> tuple[Path, Path]:
    """Write sample and energy frames as ``path`` and ``NAME.energy.EXT``, and ``driver_power`` (when given)
    as ``NAME.driver_power.EXT``, atomically, with ``meta``; returns the first two paths. ``wall_clock``:
    each with a ``time`` column (UTC) beside its monotonic timestamps, for a reader's eyes (files a user
    asked for; the daemon's own keep only the monotonic ones)."""
    target, energy_path, fmt = output_paths(path)
    files = [(target, samples), (energy_path, energy)]
    if driver_power is not None:
        files.append((driver_power_path(target), driver_power))
    if wall_clock:
        files = [(file, with_wall_clock(frame, meta)) for file, frame in files]
    try:
        for file, frame in files:
            tmp = file.with_name(f".{file.name}.tmp")
            if fmt == "parquet":
                _write_parquet(frame, tmp, meta)
            else:
                frame.to_csv(tmp, index=False)
            os.replace(tmp, file)  # a reader never sees a half-written file
        if fmt == "csv":
            target.with_name(f"{target.stem}.meta.json").write_text(json.dumps(meta, indent=2, default=str))
    except OSError as exc:
        raise OutputError(f"cannot write {str(exc.filename or target)!r}: {exc.strerror}") from exc
    return target, energy_path


def _write_parquet(frame: pd.DataFrame, path: Path, meta: dict[str, object]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    merged = {**(table.schema.metadata or {}), b"gpuprof": json.dumps(meta, default=str).encode()}
    pq.write_table(table.replace_schema_metadata(merged), path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """The gpuprof metadata stored with a trace (Parquet schema metadata or the CSV's .meta.json)."""
    target, _, fmt = output_paths(path)
    if fmt == "csv":
        return dict(json.loads(target.with_name(f"{target.stem}.meta.json").read_text()))
    import pyarrow.parquet as pq

    raw = (pq.read_schema(target).metadata or {}).get(b"gpuprof", b"{}")
    return dict(json.loads(raw))
