"""Control of gpuprof's simulated GPUs: configure them, read their true state, make them busy or fail.

The simulated NVML library keeps its GPUs in a state file shared by every process (``$GPUPROF_SIM_STATE``,
else a per-user default), so what one process sets here, the sampler in another sees. See
docs/simulated-gpu.md.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from .errors import DeviceNotFound, GpuprofError, NvmlError, PermissionDenied, UsageError, nvml_error_name
from .library import simulated_library_path
from .sim_config import MAX_GPUS, MAX_MEMORY_CLOCKS, GpuSpec, SimConfig, config_from_dict, load_config

__all__ = [
    "ControlCall",
    "GpuSpec",
    "SimConfig",
    "SimGpuStatus",
    "SimulatedNvml",
    "config_from_dict",
    "load_config",
    "slowdown",
]

API_VERSION = 3  # GPUPROF_SIM_API_VERSION in sampler/simnvml/gpuprof_sim.h
LOG_ENTRIES = 256
_SUCCESS, _INVALID_ARGUMENT, _NO_PERMISSION = 0, 2, 4
_BAD_GPU = 0xFFFFFFFF

# How work slows down on a simulated GPU (it models power, not computation): the share of a kernel's
# time at the top clock that scales with 1 / SM clock. The rest is bound by memory and does not.
COMPUTE_BOUND = 1.0  # matmuls, prefill
MEMORY_BOUND = 0.3  # copies, decode: mostly waiting on HBM


def slowdown(compute_share: float, top_mhz: float, mhz: float) -> float:
    """How many times longer work takes at SM clock ``mhz`` than at ``top_mhz`` (docs/simulated-gpu.md)."""
    return compute_share * top_mhz / max(mhz, 1.0) + 1.0 - compute_share


class _GpuConfigStruct(ctypes.Structure):
    """Mirror of gpuprofSimGpuConfig_t."""

    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("uuid", ctypes.c_char * 80),
        *[
            (name, ctypes.c_double)
            for name in (
                "idle_power_w",
                "core_dynamic_power_w",
                "memory_dynamic_power_w",
                "min_voltage_v",
                "max_voltage_v",
                "ripple_fraction",
                "ripple_period_ms",
                "power_limit_w",
                "default_power_limit_w",
                "min_power_limit_w",
                "max_power_limit_w",
                "ambient_temp_c",
                "thermal_resistance_c_per_w",
                "thermal_time_constant_s",
                "instant_power_period_ms",
                "instant_power_window_ms",
                "average_power_period_ms",
                "average_power_window_ms",
                "power_samples_period_ms",
                "power_samples_window_ms",
                "power_samples_lag_ms",
                "power_samples_jitter_ms",
                "energy_period_ms",
                "energy_call_latency_us",
                "read_stall_us",
                "read_stall_period_ms",
                "clock_lock_latency_us",
                "sensor_phase_ms",
                "initial_energy_j",
                "utilization_pct",
            )
        ],
        ("min_graphics_clock_mhz", ctypes.c_uint),
        ("max_graphics_clock_mhz", ctypes.c_uint),
        ("graphics_clock_step_mhz", ctypes.c_uint),
        ("memory_clock_count", ctypes.c_uint),
        ("memory_clocks_mhz", ctypes.c_uint * MAX_MEMORY_CLOCKS),
        ("instant_power_supported", ctypes.c_uint),
        ("reserved", ctypes.c_uint),
    ]


class _ConfigStruct(ctypes.Structure):
    """Mirror of gpuprofSimConfig_t."""

    _fields_ = [
        ("gpu_count", ctypes.c_uint),
        ("allow_unprivileged_control", ctypes.c_uint),
        ("manual_clock_ns", ctypes.c_longlong),
        ("gpus", _GpuConfigStruct * MAX_GPUS),
    ]


class _StatusStruct(ctypes.Structure):
    """Mirror of gpuprofSimGpuStatus_t."""

    _fields_ = [
        ("time_ns", ctypes.c_longlong),
        ("index", ctypes.c_uint),
        ("failing_code", ctypes.c_int),
        ("name", ctypes.c_char * 64),
        ("uuid", ctypes.c_char * 80),
        *[
            (name, ctypes.c_double)
            for name in (
                "utilization_pct",
                "memory_utilization_pct",
                "power_w",
                "energy_j",
                "temp_c",
                "power_limit_w",
                "default_power_limit_w",
            )
        ],
        ("clock_event_reasons", ctypes.c_ulonglong),
        *[
            (name, ctypes.c_uint)
            for name in (
                "sm_clock_mhz",
                "mem_clock_mhz",
                "locked_sm_min_mhz",
                "locked_sm_max_mhz",
                "locked_mem_min_mhz",
                "locked_mem_max_mhz",
                "applications_mem_clock_mhz",
                "applications_graphics_clock_mhz",
            )
        ],
    ]


class _ControlCallStruct(ctypes.Structure):
    """Mirror of gpuprofSimControlCall_t."""

    _fields_ = [
        ("seq", ctypes.c_ulonglong),
        ("time_ns", ctypes.c_longlong),
        ("pid", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("gpu", ctypes.c_uint),
        ("result", ctypes.c_int),
        ("arg_count", ctypes.c_uint),
        ("args", ctypes.c_uint * 2),
        ("call", ctypes.c_char * 48),
        ("reserved", ctypes.c_uint),
    ]


_DERIVED = {"uuid": b"", "power_limit_w": -1.0, "sensor_phase_ms": -1.0, "initial_energy_j": -1.0}


def _to_struct(spec: GpuSpec, out: _GpuConfigStruct) -> None:
    for field in fields(spec):
        value = getattr(spec, field.name)
        if value is None:
            setattr(out, field.name, _DERIVED[field.name])
        elif field.name == "memory_clocks_mhz":
            out.memory_clock_count = len(value)
            out.memory_clocks_mhz[:] = [*value, *[0] * (MAX_MEMORY_CLOCKS - len(value))]
        elif isinstance(value, str):
            setattr(out, field.name, value.encode())
        else:
            setattr(out, field.name, value)


def _from_struct(raw: _GpuConfigStruct) -> GpuSpec:
    values: dict[str, Any] = {}
    for field in fields(GpuSpec):
        value = getattr(raw, field.name)
        if field.name in _DERIVED and value == _DERIVED[field.name]:
            value = None
        elif field.name == "memory_clocks_mhz":
            value = tuple(value[: raw.memory_clock_count])
        elif isinstance(value, bytes):
            value = value.decode()
        elif field.name == "instant_power_supported":
            value = bool(value)
        values[field.name] = value
    return dataclasses.replace(GpuSpec(), **values)


@dataclass(frozen=True)
class SimGpuStatus:
    """One simulated GPU's true state at ``time_ns`` (model time): what its sensors are sampling."""

    index: int
    name: str
    uuid: str
    time_ns: int
    util_pct: float
    memory_util_pct: float
    sm_clock_mhz: int
    mem_clock_mhz: int
    locked_sm_clock_range_mhz: tuple[int, int] | None  # (min, max); None when unlocked
    locked_mem_clock_range_mhz: tuple[int, int] | None
    applications_clocks_mhz: tuple[int, int]  # (memory, graphics), NVML's argument order
    power_limit_w: float
    default_power_limit_w: float
    power_w: float  # modelled power at time_ns, ripple included
    energy_j: float  # the exact integral the energy counter quantizes
    temp_c: float
    clock_event_reasons: int
    failing_code: int | None  # the injected NVML error, None when healthy

    @property
    def locked_sm_clock_mhz(self) -> int | None:
        """The SM clock a busy GPU is held to (the lock's maximum); None when unlocked."""
        return self.locked_sm_clock_range_mhz[1] if self.locked_sm_clock_range_mhz else None

    @property
    def locked_mem_clock_mhz(self) -> int | None:
        """The memory clock the GPU is locked to; None when unlocked."""
        return self.locked_mem_clock_range_mhz[1] if self.locked_mem_clock_range_mhz else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields, with the lock's clock beside its range."""
        out = dataclasses.asdict(self)
        out["locked_sm_clock_mhz"] = self.locked_sm_clock_mhz
        out["locked_mem_clock_mhz"] = self.locked_mem_clock_mhz
        return out


@dataclass(frozen=True)
class ControlCall:
    """One NVML control call made on the simulated GPUs, allowed or not."""

    seq: int  # 0 for the first call since the state was configured
    time_ns: int  # model time
    pid: int
    uid: int
    gpu: int | None  # None when the handle was invalid
    call: str
    args: tuple[int, ...]
    result: int  # NVML return code

    @property
    def result_name(self) -> str:
        return nvml_error_name(self.result)


def _lock(low: int, high: int) -> tuple[int, int] | None:
    return (low, high) if high else None


def _status(raw: _StatusStruct) -> SimGpuStatus:
    return SimGpuStatus(
        index=raw.index,
        name=raw.name.decode(),
        uuid=raw.uuid.decode(),
        time_ns=raw.time_ns,
        util_pct=raw.utilization_pct,
        memory_util_pct=raw.memory_utilization_pct,
        sm_clock_mhz=raw.sm_clock_mhz,
        mem_clock_mhz=raw.mem_clock_mhz,
        locked_sm_clock_range_mhz=_lock(raw.locked_sm_min_mhz, raw.locked_sm_max_mhz),
        locked_mem_clock_range_mhz=_lock(raw.locked_mem_min_mhz, raw.locked_mem_max_mhz),
        applications_clocks_mhz=(raw.applications_mem_clock_mhz, raw.applications_graphics_clock_mhz),
        power_limit_w=raw.power_limit_w,
        default_power_limit_w=raw.default_power_limit_w,
        power_w=raw.power_w,
        energy_j=raw.energy_j,
        temp_c=raw.temp_c,
        clock_event_reasons=raw.clock_event_reasons,
        failing_code=raw.failing_code or None,
    )


class SimulatedNvml:
    """The control side of the simulated NVML library, bound to one state file.

    ``state_path`` defaults to the file NVML would use in this process now ($GPUPROF_SIM_STATE, else a
    per-user default); the binding is fixed at construction. Every method works whether or not NVML is
    initialized.
    """

    def __init__(self, library_path: str | None = None, state_path: str | None = None) -> None:
        self.library_path = library_path or simulated_library_path()
        self._lib = ctypes.CDLL(self.library_path)
        if not hasattr(self._lib, "gpuprofSimVersion"):
            raise GpuprofError(f"{self.library_path} is not gpuprof's simulated NVML library")
        self._declare()
        self._check_abi()
        self._path = self._resolve(state_path)

    @property
    def state_path(self) -> str:
        return self._path.decode()

    def _declare(self) -> None:
        lib, path, uint, c_int = self._lib, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int
        pointer = ctypes.POINTER
        lib.gpuprofSimVersion.restype = uint
        signatures: dict[str, list[type]] = {
            "gpuprofSimStructSizes": [pointer(uint)] * 4,
            "gpuprofSimDefaultConfig": [pointer(_ConfigStruct)],
            "gpuprofSimStatePath": [path, ctypes.c_char_p, uint],
            "gpuprofSimConfigure": [path, pointer(_ConfigStruct)],
            "gpuprofSimGetStatus": [path, pointer(_StatusStruct), uint, pointer(uint)],
            "gpuprofSimSetUtilization": [path, uint, ctypes.c_double, ctypes.c_double],
            "gpuprofSimSetFailure": [path, uint, c_int],
            "gpuprofSimSetClock": [path, ctypes.c_longlong],
            "gpuprofSimEnergyAt": [
                path,
                uint,
                ctypes.POINTER(ctypes.c_longlong),
                uint,
                ctypes.POINTER(ctypes.c_double),
            ],
            "gpuprofSimReadControlLog": [
                path,
                pointer(_ControlCallStruct),
                uint,
                pointer(uint),
                pointer(ctypes.c_ulonglong),
            ],
        }
        for name, argtypes in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = c_int

    def _check_abi(self) -> None:
        version = self._lib.gpuprofSimVersion()
        sizes = [ctypes.c_uint() for _ in range(4)]
        self._call("gpuprofSimStructSizes", *sizes)
        mirrors = (_ConfigStruct, _GpuConfigStruct, _StatusStruct, _ControlCallStruct)
        expected = [ctypes.sizeof(m) for m in mirrors]
        if version != API_VERSION or [s.value for s in sizes] != expected:
            raise GpuprofError(
                f"{self.library_path} does not match this gpuprof (API {version}, struct sizes "
                f"{[s.value for s in sizes]}; expected API {API_VERSION}, {expected}): reinstall gpuprof"
            )

    def _resolve(self, state_path: str | None) -> bytes:
        buffer = ctypes.create_string_buffer(4096)
        self._call("gpuprofSimStatePath", state_path.encode() if state_path else None, buffer, len(buffer))
        return buffer.value

    def _call(self, name: str, *args: object, gpu: int | None = None) -> None:
        code = getattr(self._lib, name)(*args)
        if code == _SUCCESS:
            return
        if gpu is not None and code == _INVALID_ARGUMENT:
            count = len(self.status())
            if gpu >= count:
                raise DeviceNotFound(gpu, count)
        if code == _NO_PERMISSION:
            raise PermissionDenied(
                f"cannot use the simulated GPU's state file {self.state_path!r}: "
                "it must be readable and writable by this user (set GPUPROF_SIM_STATE to another file)"
            )
        raise NvmlError(code, name, gpu)

    def configure(self, config: SimConfig, manual_clock_ns: int | None = None) -> None:
        """Resets the simulated node to ``config``: locks, limits, failures and the control log are cleared.

        ``manual_clock_ns`` stops the model's clock at that time (for deterministic tests; see set_clock).
        """
        if manual_clock_ns is not None and manual_clock_ns <= 0:
            raise UsageError(f"the manual clock must be > 0 ns, got {manual_clock_ns}")
        raw = _ConfigStruct()
        self._lib.gpuprofSimDefaultConfig(ctypes.byref(raw))
        raw.gpu_count = config.gpu_count
        raw.allow_unprivileged_control = int(config.allow_unprivileged_control)
        raw.manual_clock_ns = manual_clock_ns or 0
        for index, spec in enumerate(config.gpus):
            _to_struct(spec, raw.gpus[index])
        self._call("gpuprofSimConfigure", self._path, ctypes.byref(raw))

    def reset(self) -> None:
        """Resets the simulated node to the defaults: one idle H100."""
        self._call("gpuprofSimConfigure", self._path, None)

    def default_config(self) -> SimConfig:
        """The library's own defaults, as a SimConfig."""
        raw = _ConfigStruct()
        self._call("gpuprofSimDefaultConfig", ctypes.byref(raw))
        return SimConfig(
            gpus=tuple(_from_struct(raw.gpus[i]) for i in range(raw.gpu_count)),
            allow_unprivileged_control=bool(raw.allow_unprivileged_control),
        )

    def status(self) -> list[SimGpuStatus]:
        """Every simulated GPU's true state, from one consistent snapshot."""
        raw = (_StatusStruct * MAX_GPUS)()
        count = ctypes.c_uint()
        self._call("gpuprofSimGetStatus", self._path, raw, MAX_GPUS, ctypes.byref(count))
        return [_status(raw[i]) for i in range(count.value)]

    def set_utilization(self, gpu: int, util_pct: float, memory_util_pct: float | None = None) -> None:
        """Makes GPU ``gpu`` busy ``util_pct`` percent of the time; power and clocks follow at once."""
        for label, value in (("utilization", util_pct), ("memory utilization", memory_util_pct)):
            if value is not None and not (0 <= value <= 100):
                raise UsageError(f"{label} must be in [0, 100] %, got {value}")
        memory = -1.0 if memory_util_pct is None else memory_util_pct
        self._call("gpuprofSimSetUtilization", self._path, gpu, util_pct, memory, gpu=gpu)

    def set_failure(self, gpu: int, code: int | None) -> None:
        """Makes every NVML call on GPU ``gpu`` return NVML error ``code``; None heals it."""
        if code is not None and code <= 0:
            raise UsageError(f"an injected failure must be a positive NVML error code, got {code}")
        self._call("gpuprofSimSetFailure", self._path, gpu, code or 0, gpu=gpu)

    def set_clock(self, time_ns: int | None) -> None:
        """Stops the model's clock at ``time_ns`` (CLOCK_MONOTONIC ns, never backwards); None frees it."""
        if time_ns is not None and time_ns <= 0:
            raise UsageError(f"the manual clock must be > 0 ns, got {time_ns}")
        self._call("gpuprofSimSetClock", self._path, time_ns or 0)

    def exact_energy_j(self, gpu: int, times_ns: Sequence[int]) -> list[float]:
        """The exact energy (J) GPU ``gpu`` had used at each instant (CLOCK_MONOTONIC ns, none in the future):
        what the energy counter quantizes, so a window's true energy is the difference of its two edges."""
        count = len(times_ns)
        times = (ctypes.c_longlong * count)(*times_ns)
        out = (ctypes.c_double * count)()
        self._call("gpuprofSimEnergyAt", self._path, gpu, times, count, out, gpu=gpu)
        return list(out)

    def control_log(self) -> list[ControlCall]:
        """The most recent NVML control calls (up to 256), oldest first."""
        raw = (_ControlCallStruct * LOG_ENTRIES)()
        count, total = ctypes.c_uint(), ctypes.c_ulonglong()
        self._call(
            "gpuprofSimReadControlLog", self._path, raw, LOG_ENTRIES, ctypes.byref(count), ctypes.byref(total)
        )
        return [
            ControlCall(
                seq=entry.seq,
                time_ns=entry.time_ns,
                pid=entry.pid,
                uid=entry.uid,
                gpu=None if entry.gpu == _BAD_GPU else entry.gpu,
                call=entry.call.decode(),
                args=tuple(entry.args[: entry.arg_count]),
                result=entry.result,
            )
            for entry in raw[: count.value]
        ]
