"""The simulated GPUs' configuration: its dataclasses, their limits, and loading it from JSON.

The schema, with units and defaults, is documented in docs/simulated-gpu.md. The defaults are the
simulated H100 of the C library (sampler/simnvml/sim_config.c); a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from .errors import ConfigError
from .files import read_regular_file

MAX_CONFIG_BYTES = 1 << 20
MAX_GPUS = 16
MAX_MEMORY_CLOCKS = 8
MAX_GRAPHICS_CLOCKS = 512
NAME_BYTES = 64  # NVML_DEVICE_NAME_BUFFER_SIZE, terminator included
UUID_BYTES = 80

# Inclusive ranges of the numeric fields; the C library enforces the same ones.
_RANGES: dict[str, tuple[float, float]] = {
    "idle_power_w": (0, 5000),
    "core_dynamic_power_w": (0, 10000),
    "memory_dynamic_power_w": (0, 5000),
    "min_voltage_v": (0.01, 5),
    "max_voltage_v": (0.01, 5),
    "ripple_fraction": (0, 0.5),
    "ripple_period_ms": (1, 3_600_000),
    "power_limit_w": (1, 10000),
    "default_power_limit_w": (1, 10000),
    "min_power_limit_w": (1, 10000),
    "max_power_limit_w": (1, 10000),
    "min_graphics_clock_mhz": (1, 10000),
    "max_graphics_clock_mhz": (1, 10000),
    "graphics_clock_step_mhz": (1, 10000),
    "memory_clocks_mhz": (1, 100_000),
    "ambient_temp_c": (-50, 100),
    "thermal_resistance_c_per_w": (0, 10),
    "thermal_time_constant_s": (0.001, 3600),
    "instant_power_period_ms": (1, 10000),
    "instant_power_window_ms": (0.001, 10000),
    "average_power_period_ms": (1, 10000),
    "average_power_window_ms": (0.001, 10000),
    "power_samples_period_ms": (1, 10000),
    "power_samples_window_ms": (0.001, 10000),
    "power_samples_lag_ms": (0, 10000),
    "power_samples_jitter_ms": (0, 5000),  # and below half power_samples_period_ms
    "energy_period_ms": (1, 10000),
    "energy_call_latency_us": (0, 1_000_000),
    "read_stall_us": (0, 1_000_000),
    "read_stall_period_ms": (1, 100_000),
    "clock_lock_latency_us": (0, 1_000_000),
    "sensor_phase_ms": (0, 10000),
    "initial_energy_j": (0, 1e12),
    "utilization_pct": (0, 100),
}


class SimConfigKeyError(ConfigError):
    """A config value that is out of range or inconsistent; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class GpuSpec:
    """One simulated GPU: identity, power model, clocks and sensors. Units are in the names; None derives
    the value from the GPU's index (uuid, sensor phase, initial energy) or from another field (power limit).
    """

    name: str = "NVIDIA H100 80GB HBM3 (simulated)"
    uuid: str | None = None
    idle_power_w: float = 70.0
    core_dynamic_power_w: float = 670.0
    memory_dynamic_power_w: float = 80.0
    min_voltage_v: float = 0.70
    max_voltage_v: float = 1.05
    ripple_fraction: float = 0.03
    ripple_period_ms: float = 273.0
    power_limit_w: float | None = None
    default_power_limit_w: float = 700.0
    min_power_limit_w: float = 200.0
    max_power_limit_w: float = 700.0
    min_graphics_clock_mhz: int = 345
    max_graphics_clock_mhz: int = 1980
    graphics_clock_step_mhz: int = 15
    memory_clocks_mhz: tuple[int, ...] = (2619, 1593)
    ambient_temp_c: float = 30.0
    thermal_resistance_c_per_w: float = 0.06
    thermal_time_constant_s: float = 30.0
    instant_power_supported: bool = True
    instant_power_period_ms: float = 100.0
    instant_power_window_ms: float = 25.0
    average_power_period_ms: float = 80.0
    average_power_window_ms: float = 1000.0
    # nvmlDeviceGetSamples' total-power buffer: one sample every 20 ms, the mean of the 25 ms ending 2 ms
    # before its timestamp, each taken up to 6 ms off its tick (the H100's cadence wanders, 11.6-32.8 ms
    # between samples), as measured on the H100 (docs/measurement.md)
    power_samples_period_ms: float = 20.0
    power_samples_window_ms: float = 25.0
    power_samples_lag_ms: float = 2.0
    power_samples_jitter_ms: float = 6.0
    energy_period_ms: float = 100.0
    energy_call_latency_us: float = 2800.0
    read_stall_us: float = 0.0  # the H100 stalls ~3300 us once every ~100 ms; off unless asked for
    read_stall_period_ms: float = 100.0
    clock_lock_latency_us: float = 20_000.0  # an assumption, not measured: docs/simulated-gpu.md
    sensor_phase_ms: float | None = None
    initial_energy_j: float | None = None
    utilization_pct: float = 0.0

    def __post_init__(self) -> None:
        for key, (low, high) in _RANGES.items():
            value = getattr(self, key)
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None and not (low <= item <= high):  # NaN fails too
                    raise SimConfigKeyError(key, f"must be in [{low:g}, {high:g}], got {item!r}")
        _check_consistency(self)


def _check_consistency(spec: GpuSpec) -> None:
    """The checks that relate two fields or bound a string's length."""
    if not spec.name or len(spec.name.encode()) >= NAME_BYTES:
        raise SimConfigKeyError("name", f"must be 1 to {NAME_BYTES - 1} bytes long")
    if spec.uuid is not None and not (0 < len(spec.uuid.encode()) < UUID_BYTES):
        raise SimConfigKeyError("uuid", f"must be 1 to {UUID_BYTES - 1} bytes long, or null")
    if spec.max_voltage_v < spec.min_voltage_v:
        raise SimConfigKeyError("max_voltage_v", "must not be below min_voltage_v")
    if spec.max_power_limit_w < spec.min_power_limit_w:
        raise SimConfigKeyError("max_power_limit_w", "must not be below min_power_limit_w")
    for key in ("default_power_limit_w", "power_limit_w"):
        value = getattr(spec, key)
        if value is not None and not (spec.min_power_limit_w <= value <= spec.max_power_limit_w):
            raise SimConfigKeyError(key, "must be within [min_power_limit_w, max_power_limit_w]")
    if not spec.power_samples_jitter_ms < spec.power_samples_period_ms / 2:
        raise SimConfigKeyError("power_samples_jitter_ms", "must be below half power_samples_period_ms")
    if spec.max_graphics_clock_mhz < spec.min_graphics_clock_mhz:
        raise SimConfigKeyError("max_graphics_clock_mhz", "must not be below min_graphics_clock_mhz")
    span = spec.max_graphics_clock_mhz - spec.min_graphics_clock_mhz
    if span % spec.graphics_clock_step_mhz or span // spec.graphics_clock_step_mhz >= MAX_GRAPHICS_CLOCKS:
        raise SimConfigKeyError(
            "graphics_clock_step_mhz",
            f"must divide max - min graphics clock ({span} MHz) into at most {MAX_GRAPHICS_CLOCKS} clocks",
        )
    clocks = spec.memory_clocks_mhz
    if not (1 <= len(clocks) <= MAX_MEMORY_CLOCKS) or len(set(clocks)) != len(clocks):
        raise SimConfigKeyError("memory_clocks_mhz", f"must list 1 to {MAX_MEMORY_CLOCKS} distinct clocks")


@dataclass(frozen=True)
class SimConfig:
    """A simulated node: its GPUs, and whether control calls work without root."""

    gpus: tuple[GpuSpec, ...] = (GpuSpec(),)
    allow_unprivileged_control: bool = False

    def __post_init__(self) -> None:
        if not (1 <= len(self.gpus) <= MAX_GPUS):
            raise SimConfigKeyError("gpu_count", f"must be in [1, {MAX_GPUS}], got {len(self.gpus)}")

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


_GPU_HINTS = typing.get_type_hints(GpuSpec)
_TOP_KEYS = ("gpu_count", "allow_unprivileged_control", "gpu", "gpus")


def _unknown_key(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f"unknown key{f' (did you mean {close[0]!r}?)' if close else ''}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _convert(key: str, value: object) -> Any:
    """A JSON value as the field's Python type; raises SimConfigKeyError naming what was expected."""
    hint = _GPU_HINTS[key]
    optional = type(None) in typing.get_args(hint)
    if value is None:
        if optional:
            return None
        raise SimConfigKeyError(key, "must not be null")
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, str):
        return value
    if base is float and _is_number(value) and math.isfinite(value):
        return float(value)
    if base is int and _is_number(value) and float(value).is_integer():
        return int(value)
    if typing.get_origin(base) is tuple and isinstance(value, list):
        if all(_is_number(v) and float(v).is_integer() for v in value):
            return tuple(int(v) for v in value)
        raise SimConfigKeyError(key, f"must be a list of integers, got {value!r}")
    wanted = {bool: "true or false", str: "a string", float: "a number", int: "an integer"}[base]
    raise SimConfigKeyError(key, f"must be {wanted}{' or null' if optional else ''}, got {value!r}")


def _gpu_fields(section: object, where: str) -> dict[str, Any]:
    """A "gpu" or "gpus[i]" object's settings, type-checked; ``where`` prefixes error messages."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: must be an object of GPU settings")
    fields: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _GPU_HINTS:
            raise ConfigError(f"{where}.{key}: {_unknown_key(key, _GPU_HINTS)}")
        try:
            fields[key] = _convert(key, value)
        except SimConfigKeyError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    return fields


def config_from_dict(data: object, source: str = "<config>") -> SimConfig:
    """The SimConfig a parsed JSON document describes; errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a JSON object")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{source}: {key}: {_unknown_key(key, _TOP_KEYS)}")
    shared = _gpu_fields(data.get("gpu", {}), f"{source}: gpu")
    overrides_raw = data.get("gpus", [])
    if not isinstance(overrides_raw, list):
        raise ConfigError(f"{source}: gpus: must be a list of per-GPU objects")
    overrides = [_gpu_fields(o, f"{source}: gpus[{i}]") for i, o in enumerate(overrides_raw)]
    count = data.get("gpu_count", max(1, len(overrides)))
    if not (_is_number(count) and float(count).is_integer() and 1 <= count <= MAX_GPUS):
        raise ConfigError(f"{source}: gpu_count: must be an integer in [1, {MAX_GPUS}], got {count!r}")
    if len(overrides) > count:
        raise ConfigError(f"{source}: gpus: lists {len(overrides)} GPUs but gpu_count is {count}")
    allow = data.get("allow_unprivileged_control", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"{source}: allow_unprivileged_control: must be true or false, got {allow!r}")
    gpus = []
    for index in range(int(count)):
        own = overrides[index] if index < len(overrides) else {}
        try:
            gpus.append(dataclasses.replace(GpuSpec(), **{**shared, **own}))
        except SimConfigKeyError as exc:
            where = f"gpus[{index}]" if exc.key in own else "gpu"
            raise ConfigError(f"{source}: {where}.{exc}") from None
    return SimConfig(gpus=tuple(gpus), allow_unprivileged_control=allow)


def load_config(path: str | Path) -> SimConfig:
    """Reads a simulated-GPU config from a JSON file; ConfigError names the file, the line or the key."""
    try:
        text = read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read simulated-GPU config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    return config_from_dict(data, str(path))
