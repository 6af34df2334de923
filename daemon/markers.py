"""Phase markers: a job's worker tells the daemon when each phase begins and ends. This module is the
channel's format, shared by its two halves: the worker's writer (daemon/worker/markers.py) and the daemon's
reader (daemon/server/markers.py); analysis/windows.py pairs markers into phase windows.

Transport: one end of an ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, inherited by the worker as the file
descriptor named in ``$GPUPROF_MARKER_FD``; one msgpack map per record (format in docs/jobspec.md). A marker
is stamped with CLOCK_MONOTONIC (``time.monotonic_ns``, the sampler's ``t_ns`` clock) when the worker calls
the writer, so the worker must first wait for the GPU work the marker closes (``torch.cuda.synchronize()``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gpuprof.client.wire.errors import GpuprofError

from .worker_env import MARKER_FD_ENV

__all__ = [
    "KINDS",
    "MARKER_FD_ENV",
    "MAX_MARKER_BYTES",
    "Marker",
    "MarkerChannelError",
    "MarkerError",
    "decode_marker",
    "encode_marker",
]

MARKER_VERSION = 1
MAX_MARKER_BYTES = 64 * 1024
MAX_JOB_MARKER_BYTES = 256 * 1024 * 1024  # what the daemon keeps of one job's markers
MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 1000  # status text and fail reasons; longer ones are cut by the writer
MAX_ATTR_DEPTH = 8
MAX_T_NS = 2**63 - 1
KINDS = ("begin", "end", "event", "status", "fail")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_FIELDS = {"v", "kind", "name", "t_ns", "attrs"}


class MarkerError(GpuprofError):
    """A marker message that is malformed: not msgpack, wrong fields or types, or too large."""


class MarkerChannelError(GpuprofError):
    """The marker socket cannot be used: missing, not a SOCK_SEQPACKET socket, or closed by the daemon."""


@dataclass(frozen=True)
class Marker:
    """One marker: ``kind`` (begin, end, event, status, fail), ``name``, CLOCK_MONOTONIC ``t_ns``, ``attrs``.

    status markers are named "status" with ``attrs["text"]``; fail markers "fail" with ``attrs["reason"]``.
    """

    kind: str
    name: str
    t_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)


def _check_value(value: object, where: str, depth: int = 0) -> None:
    """Attribute values are JSON-like: None, bool, int, finite float, str, lists and str-keyed maps."""
    if depth > MAX_ATTR_DEPTH:
        raise MarkerError(f"{where}: nested deeper than {MAX_ATTR_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MarkerError(f"{where}: must be finite, got {value!r}")
    elif isinstance(value, list) or type(value) is tuple:  # not ExtType, a namedtuple
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MarkerError(f"{where}: keys must be strings, got {key!r}")
            _check_value(item, f"{where}.{key}", depth + 1)
    else:
        raise MarkerError(f"{where}: unsupported type {type(value).__name__}")


def check_name(name: object) -> str:
    """``name`` if it is a marker's name (``[A-Za-z_][A-Za-z0-9_.:-]*``, 64 chars at most); or MarkerError."""
    if not (isinstance(name, str) and len(name) <= MAX_NAME_CHARS and _NAME.fullmatch(name)):
        raise MarkerError(f"name must match {_NAME.pattern} (at most {MAX_NAME_CHARS} chars), got {name!r}")
    return name


def _check_marker(kind: object, name: object, t_ns: object, attrs: object) -> Marker:
    if kind not in KINDS or not isinstance(kind, str):
        raise MarkerError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    name = check_name(name)
    if not (isinstance(t_ns, int) and not isinstance(t_ns, bool) and 0 < t_ns <= MAX_T_NS):
        raise MarkerError(f"t_ns must be a positive 64-bit integer, got {t_ns!r}")
    if not isinstance(attrs, dict):
        raise MarkerError(f"attrs must be a map, got {type(attrs).__name__}")
    _check_value(attrs, "attrs")
    return Marker(kind, name, t_ns, attrs)


def encode_marker(marker: Marker) -> bytes:
    """One marker message: a msgpack map of v, kind, name, t_ns, attrs; MarkerError if it is invalid."""
    _check_marker(marker.kind, marker.name, marker.t_ns, marker.attrs)
    message = {"v": MARKER_VERSION, "kind": marker.kind, "name": marker.name, "t_ns": marker.t_ns}
    message["attrs"] = marker.attrs
    data: bytes = msgpack.packb(message, use_bin_type=True)
    if len(data) > MAX_MARKER_BYTES:
        raise MarkerError(f"marker {marker.name!r} is {len(data)} bytes; at most {MAX_MARKER_BYTES}")
    return data


def decode_marker(data: bytes) -> Marker:
    """The marker in one message; MarkerError says what is wrong with a malformed one."""
    if len(data) > MAX_MARKER_BYTES:
        raise MarkerError(f"message larger than {MAX_MARKER_BYTES} bytes")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises ValueError subclasses, TypeError and others on bad input
        raise MarkerError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(message, dict):
        raise MarkerError(f"message must be a map, got {type(message).__name__}")
    keys = set(message)
    if not {"v", "kind", "name", "t_ns"} <= keys <= _FIELDS:
        fields = ", ".join(sorted(map(repr, keys)))
        raise MarkerError(f"message must have the fields v, kind, name, t_ns (attrs optional), got {fields}")
    if message["v"] != MARKER_VERSION or isinstance(message["v"], bool):
        raise MarkerError(f"unsupported marker version {message['v']!r} (this daemon reads {MARKER_VERSION})")
    return _check_marker(message["kind"], message["name"], message["t_ns"], message.get("attrs", {}))
