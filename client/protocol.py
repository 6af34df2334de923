"""gpuprof's wire protocol: versioned msgpack messages between clients and gpuprofd, as pure functions.

docs/protocol.md describes the same thing for clients written in other languages. Nothing here touches a
socket: encoding and decoding are tested on bytes alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # the daemon's config may change it

# Request type -> {field: (accepted Python types, required)}. Unknown fields are refused.
REQUEST_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {"client": ((str,), False), "versions": ((list,), False)},
    "gpus": {},
    "submit": {"spec": ((dict,), True), "spec_text": ((str,), False)},
    "jobs": {
        "user": ((str,), False),
        "state": ((str,), False),
        "gpu": ((int,), False),
        "limit": ((int,), False),
    },
    "job": {"id": ((str,), True)},
    "trace": {
        "id": ((str,), True),
        "table": ((str,), False),
        "offset": ((int,), False),
        "limit": ((int,), False),
    },
    "cancel": {"id": ((str,), True)},
    "time": {},
    "stats": {},
    "history": {"gpu": ((int,), True), "seconds": ((int, float), False), "max_points": ((int,), False)},
}
MAX_HISTORY_POINTS = 20_000
MAX_FIELD_INT = 2**63 - 1  # integer fields are indices, offsets and counts; SQLite's INTEGER holds them
TRACE_TABLES = ("samples", "energy", "requests")
MAX_TRACE_CHUNK = 50_000
ERROR_CODES = (
    "bad_request",  # not msgpack, not a map, wrong field types, unknown fields
    "unsupported_version",
    "unknown_type",
    "too_large",
    "not_found",
    "denied",
    "invalid_spec",
    "internal",
)


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A validated request: its type, the client's id for matching the reply, and its body."""

    type: str
    id: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A reply: ``ok`` with a body, or an error with ``code`` and ``message``."""

    id: int
    ok: bool
    body: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None


def _pack(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def _unpack(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError("bad_request", f"not a msgpack message ({type(exc).__name__})") from exc
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "a message must be a msgpack map")
    return message


def encode_request(type_: str, body: dict[str, Any] | None = None, request_id: int = 0) -> bytes:
    """The bytes of one request frame."""
    return _pack({"v": PROTOCOL_VERSION, "type": type_, "id": request_id, "body": body or {}})


def decode_request(payload: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Validate one request frame; raises ProtocolError naming what is wrong."""
    message = _unpack(payload, max_bytes)
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ProtocolError("bad_request", "field 'id' must be an integer")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {message.get('v')!r} not supported; this daemon speaks {PROTOCOL_VERSION}",
            request_id,
        )
    type_ = message.get("type")
    if type_ not in REQUEST_SCHEMAS:
        raise ProtocolError("unknown_type", f"unknown request type {type_!r}", request_id)
    body = message.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "field 'body' must be a map", request_id)
    extra = set(message) - {"v", "type", "id", "body"}
    if extra:
        raise ProtocolError("bad_request", f"unknown fields {sorted(extra)}", request_id)
    _check_body(str(type_), body, request_id)
    return Request(type=str(type_), id=request_id, body=body)


def _check_body(type_: str, body: dict[str, Any], request_id: int) -> None:
    schema = REQUEST_SCHEMAS[type_]
    for name in body:
        if name not in schema:
            raise ProtocolError("bad_request", f"{type_}: unknown field {name!r}", request_id)
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                raise ProtocolError("bad_request", f"{type_}: missing field {name!r}", request_id)
            continue
        value = body[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise ProtocolError(
                "bad_request",
                f"{type_}: field {name!r} must be {expected}, got {type(value).__name__}",
                request_id,
            )
        if isinstance(value, int) and not 0 <= value <= MAX_FIELD_INT:  # ids, offsets and limits
            raise ProtocolError(
                "bad_request", f"{type_}: field {name!r} must be in [0, 2**63), got {value}", request_id
            )
    if type_ == "history":
        seconds = body.get("seconds", 30)
        if not (0 < seconds < float("inf")) or not 1 <= body.get("max_points", 2000) <= MAX_HISTORY_POINTS:
            raise ProtocolError(
                "bad_request",
                f"history: seconds must be > 0 and max_points in 1..{MAX_HISTORY_POINTS}",
                request_id,
            )
    if type_ == "trace":
        if body.get("table", "samples") not in TRACE_TABLES:
            raise ProtocolError("bad_request", f"trace: table must be one of {TRACE_TABLES}", request_id)
        if body.get("offset", 0) < 0 or not (0 < body.get("limit", MAX_TRACE_CHUNK) <= MAX_TRACE_CHUNK):
            raise ProtocolError(
                "bad_request", f"trace: offset must be >= 0 and limit in 1..{MAX_TRACE_CHUNK}", request_id
            )


def encode_reply(request_id: int, body: dict[str, Any]) -> bytes:
    """The bytes of a successful reply."""
    return _pack({"v": PROTOCOL_VERSION, "type": "reply", "id": request_id, "body": body})


def encode_error(request_id: int | None, code: str, message: str) -> bytes:
    """The bytes of an error reply; ``request_id`` is None when the request's id could not be read."""
    body = {"code": code, "message": message}
    return _pack({"v": PROTOCOL_VERSION, "type": "error", "id": request_id, "body": body})


def decode_reply(payload: bytes, max_bytes: int = 1 << 30) -> Reply:
    """Parse a reply frame (client side)."""
    message = _unpack(payload, max_bytes)
    body = message.get("body") or {}
    request_id = message.get("id")
    if message.get("type") == "error":
        return Reply(
            id=request_id if isinstance(request_id, int) else -1,
            ok=False,
            code=str(body.get("code", "internal")),
            message=str(body.get("message", "")),
        )
    if message.get("type") != "reply" or not isinstance(request_id, int) or not isinstance(body, dict):
        raise ProtocolError("bad_request", "malformed reply from the daemon")
    return Reply(id=request_id, ok=True, body=body)


def topic_for_gpu(gpu: int) -> bytes:
    """PUB topic of a GPU's live samples."""
    return f"gpu/{gpu}".encode()


def topic_for_job(job_id: str) -> bytes:
    """PUB topic of a job's state changes, phase markers and samples."""
    return f"job/{job_id}".encode()


def encode_publish(kind: str, body: dict[str, Any]) -> bytes:
    """The payload frame of a published message (the topic frame goes before it)."""
    return _pack({"v": PROTOCOL_VERSION, "type": kind, "body": body})


def decode_publish(payload: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, body) of a published payload frame."""
    message = _unpack(payload, 1 << 30)
    body = message.get("body")
    if not isinstance(body, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_request", "malformed published message")
    return str(message["type"]), body
