"""The maps the daemon sends as typed records: a GPU of the ``gpus`` reply (``GpuInfo``) and a job
(``JobInfo``: the ``job`` and ``jobs`` replies, and job messages on the live socket). docs/protocol.md
describes each field; ``to_dict`` is exactly what goes on the wire, and ``from_dict`` checks a map's fields
and types (a field a newer daemon adds is ignored, one that is missing or mistyped is a ProtocolError)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .protocol import ProtocolError
from .states import FINAL_STATES, STATES

__all__ = ["GpuInfo", "JobInfo"]

_REQUIRED = object()


def _field(
    data: dict[str, Any], name: str, kinds: tuple[type, ...], what: str, default: Any = _REQUIRED
) -> Any:
    """``data[name]``, checked to be one of ``kinds`` (None only where NoneType is one of them)."""
    if name not in data:
        if default is _REQUIRED:
            raise ProtocolError("bad_request", f"malformed {what}: no {name!r}")
        return default
    value = data[name]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ProtocolError("bad_request", f"malformed {what}: {name} is a {type(value).__name__}")
    return value


def _ints(data: dict[str, Any], name: str, what: str) -> tuple[int, ...]:
    values = _field(data, name, (list, tuple), what)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ProtocolError("bad_request", f"malformed {what}: {name} holds a value that is not an integer")
    return tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as gpuprofd serves it: what NVML said of it when the daemon started."""

    index: int
    name: str
    uuid: str
    simulated: bool
    memory_clocks_mhz: tuple[int, ...]  # supported, highest first as NVML lists them
    graphics_clocks_mhz: tuple[int, ...]  # supported SM clocks at the highest memory clock
    power_limit_w: float
    min_power_limit_w: float
    max_power_limit_w: float

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["memory_clocks_mhz"] = list(self.memory_clocks_mhz)
        data["graphics_clocks_mhz"] = list(self.graphics_clocks_mhz)
        return data

    @classmethod
    def from_dict(cls, data: object) -> GpuInfo:
        what = "GPU map"
        if not isinstance(data, dict):
            raise ProtocolError("bad_request", f"malformed {what}: a {type(data).__name__}, not a map")
        number = (int, float)
        return cls(
            index=_field(data, "index", (int,), what),
            name=_field(data, "name", (str,), what),
            uuid=_field(data, "uuid", (str,), what),
            simulated=_field(data, "simulated", (bool,), what),
            memory_clocks_mhz=_ints(data, "memory_clocks_mhz", what),
            graphics_clocks_mhz=_ints(data, "graphics_clocks_mhz", what),
            power_limit_w=float(_field(data, "power_limit_w", number, what)),
            min_power_limit_w=float(_field(data, "min_power_limit_w", number, what)),
            max_power_limit_w=float(_field(data, "max_power_limit_w", number, what)),
        )


@dataclass(frozen=True)
class JobInfo:
    """One job: who submitted what, where it runs or ran, how it ended, and its result. The daemon's job
    store keeps exactly these fields."""

    id: str
    name: str
    user: str
    uid: int
    gpu: int
    state: str  # one of states.STATES
    reason: str | None  # why it ended (failed, cancelled, interrupted), or None
    created_ns: int  # wall clock (Unix epoch ns), like started_ns and finished_ns
    started_ns: int | None
    finished_ns: int | None
    spec: dict[str, Any]  # the job spec as data (JobSpec.to_dict, the daemon's defaults filled in)
    spec_text: str  # the YAML as submitted ("" when none was sent, and in listings)
    result: dict[str, Any] | None  # docs/protocol.md "Results", once the job has one
    simulated: bool
    worker_uid: int | None  # the uid its worker ran as
    slurm_job_id: str | None = None  # the Slurm job it belongs to, as gpuprofd attributed it (docs/slurm.md)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """Every field, as built-in types (msgpack- and JSON-ready); ``spec`` and ``result`` are shared.

        Not ``dataclasses.asdict``: its deep copy of results made listing 100 jobs ~7x slower.
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: object) -> JobInfo:
        what = "job map"
        if not isinstance(data, dict):
            raise ProtocolError("bad_request", f"malformed {what}: a {type(data).__name__}, not a map")
        state = _field(data, "state", (str,), what)
        if state not in STATES:
            raise ProtocolError("bad_request", f"malformed {what}: unknown state {state[:32]!r}")
        return cls(
            id=_field(data, "id", (str,), what),
            name=_field(data, "name", (str,), what),
            user=_field(data, "user", (str,), what),
            uid=_field(data, "uid", (int,), what),
            gpu=_field(data, "gpu", (int,), what),
            state=state,
            reason=_field(data, "reason", (str, type(None)), what),
            created_ns=_field(data, "created_ns", (int,), what),
            started_ns=_field(data, "started_ns", (int, type(None)), what),
            finished_ns=_field(data, "finished_ns", (int, type(None)), what),
            spec=_field(data, "spec", (dict,), what),
            spec_text=_field(data, "spec_text", (str,), what, default=""),
            result=_field(data, "result", (dict, type(None)), what),
            simulated=_field(data, "simulated", (bool,), what),
            worker_uid=_field(data, "worker_uid", (int, type(None)), what),
            slurm_job_id=_field(data, "slurm_job_id", (str, type(None)), what, None),
        )
