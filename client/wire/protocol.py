"""gpuprof's wire protocol: versioned msgpack messages between clients and gpuprofd, as pure functions.

docs/protocol.md describes the same thing for clients written in other languages. Nothing here touches a
socket: encoding and decoding are tested on bytes alone.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack

from .states import STATES

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # the daemon's config may change it
MAX_STRING_FIELD_CHARS = 256  # every str field but submit's spec_text
MAX_SPEC_TEXT_CHARS = 64 * 1024  # the YAML kept with a job, for the record; a longer one is not sent
MAX_VERSIONS = 16  # hello's versions list
# Error replies and log lines quote what a client sent as a short, escaped excerpt, and an error's
# strings are clipped (in UTF-8 bytes) so that a whole error frame stays under MAX_ERROR_FRAME_BYTES.
MAX_EXCERPT_CHARS = 80
MAX_ERROR_MESSAGE_BYTES = 400
MAX_ERROR_KEY_BYTES = 96
MAX_ERROR_PROBLEM_BYTES = 300
MAX_ERROR_FRAME_BYTES = 1024
# Live-data subscriptions: a topic is ``gpu/N`` or ``job/ID`` (or a prefix of one); longer ones are
# refused. The daemon's XPUB drops a connection that sends a message (a subscription is one byte then the
# topic; a CURVE handshake's INITIATE is some 300 bytes) larger than MAX_SUBSCRIPTION_BYTES.
MAX_TOPIC_BYTES = 64
MAX_SUBSCRIPTION_BYTES = 1024
GPU_TOPIC_PREFIX = b"gpu/"
JOB_TOPIC_PREFIX = b"job/"
JOB_STATES = STATES

# Request type -> {field: (accepted Python types, required)}. Unknown fields are refused.
REQUEST_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {"client": ((str,), False), "versions": ((list,), False)},
    "gpus": {},
    "submit": {
        "spec": ((dict,), True),
        "spec_text": ((str,), False),
        "slurm_job_id": ((str,), False),
        "slurm_gpus": ((list,), False),
    },
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
    "metrics": {},
    "slurm_end": {"slurm_job_id": ((str,), True)},
    "history": {"gpu": ((int,), True), "seconds": ((int, float), False), "max_points": ((int,), False)},
}
MAX_HISTORY_POINTS = 20_000
MAX_SLURM_GPUS = 1024
# A job's id: 16 characters of Crockford's base32, lower case (the job store makes them, sortable by time).
JOB_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
JOB_ID_LENGTH = 16
SLURM_JOB_ID_RE = re.compile(r"[0-9]{1,12}")  # $SLURM_JOB_ID: a job's (or an array task's) number
MAX_FIELD_INT = 2**63 - 1  # integer fields are indices, offsets and counts; SQLite's INTEGER holds them
TRACE_TABLES = ("samples", "energy", "driver_power", "requests")
MAX_TRACE_CHUNK = 50_000
MAX_JOBS_LISTED = 10_000  # a jobs request's most (its limit)
MAX_REQUESTS_CHUNK = 2_000  # rows of an llm job's requests table per reply: each holds an answer's text
ERROR_CODES = (
    "bad_request",  # not msgpack, not a map, wrong field types, unknown fields
    "unsupported_version",
    "unknown_type",
    "too_large",
    "not_found",
    "denied",
    "invalid_spec",
    "rate_limited",  # the user sent more requests, or took more of the daemon's time, than allowed
    "quota_exceeded",  # the user has as many queued jobs as the daemon allows
    "internal",
)
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother, _EXCERPT.maxlong = 2, MAX_EXCERPT_CHARS, 24, 24
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 4


def excerpt(value: object) -> str:
    """A short, escaped quotation of a value a client sent, for error messages and log lines.

    Strings and bytes are cut in the middle and keep their length; nested values are cut at two levels.
    Never raises, whatever the value.
    """
    try:
        text = clip(_EXCERPT.repr(value), 2 * MAX_EXCERPT_CHARS)  # wide characters take up to 4 bytes each
    except Exception:  # a value whose repr fails is still named
        text = f"<{type(value).__name__}>"
    if isinstance(value, (str, bytes)) and len(value) > MAX_EXCERPT_CHARS:
        text += f" ({len(value):,} {'chars' if isinstance(value, str) else 'bytes'})"  # after the cut: kept
    return text


def clip(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, marked with "..." where it was cut."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(
        self,
        code: str,
        message: str,
        request_id: int | None = None,
        key: str | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.key = key  # the job spec key it is about, if any (a denied dvfs section: "dvfs")
        self.problem = problem  # with a key: what is wrong with it, without the key (a client's line)


@dataclass(frozen=True)
class Request:
    """A validated request: its type, the client's id for matching the reply, and its body."""

    type: str
    id: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A reply: ``ok`` with a body, or an error with ``code``, ``message`` and, in ``body``, any of ``key``
    and ``problem``."""

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
    """Validate one request frame; raises ProtocolError naming what is wrong, and nothing else.

    Every field is type-checked before it is used; what the client sent is quoted only as an excerpt.
    """
    message = _unpack(payload, max_bytes)
    request_id = message.get("id")
    if not _is_int(request_id):
        raise ProtocolError("bad_request", f"field 'id' must be an integer, got {_kind(request_id)}")
    version = message.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {excerpt(version)} not supported; this daemon speaks {PROTOCOL_VERSION}",
            request_id,
        )
    type_ = message.get("type")
    if not isinstance(type_, str) or type_ not in REQUEST_SCHEMAS:
        known = ", ".join(REQUEST_SCHEMAS)
        raise ProtocolError(
            "unknown_type", f"unknown request type {excerpt(type_)}; types: {known}", request_id
        )
    body = message.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", f"field 'body' must be a map, got {_kind(body)}", request_id)
    extra = [name for name in message if name not in ("v", "type", "id", "body")]
    if extra:
        raise ProtocolError("bad_request", f"unknown fields {excerpt(extra)}", request_id)
    _check_body(type_, body, request_id)
    return Request(type=type_, id=request_id, body=body)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[type, str] = {
    bool: "bool", int: "int", float: "float", str: "str", bytes: "bin", list: "array", dict: "map",
    type(None): "nil",
}  # fmt: skip


def _kind(value: object) -> str:
    """The msgpack-level kind of a value, for errors about a field of the wrong type."""
    return _KINDS.get(type(value), type(value).__name__)


def _check_body(type_: str, body: dict[Any, Any], request_id: int) -> None:
    schema = REQUEST_SCHEMAS[type_]
    for name in body:
        if not isinstance(name, str) or name not in schema:
            fields = ", ".join(schema) or "none"
            raise ProtocolError(
                "bad_request", f"{type_}: unknown field {excerpt(name)} (fields: {fields})", request_id
            )
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                raise ProtocolError("bad_request", f"{type_}: missing field {name!r}", request_id)
            continue
        value = body[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_KINDS.get(t, t.__name__) for t in types)
            raise ProtocolError(
                "bad_request",
                f"{type_}: field {name!r} must be {expected}, got {_kind(value)}",
                request_id,
            )
        if isinstance(value, int) and not 0 <= value <= MAX_FIELD_INT:  # ids, offsets and limits
            raise ProtocolError(
                "bad_request",
                f"{type_}: field {name!r} must be in [0, 2**63), got {excerpt(value)}",
                request_id,
            )
        longest = MAX_SPEC_TEXT_CHARS if name == "spec_text" else MAX_STRING_FIELD_CHARS
        if isinstance(value, str) and len(value) > longest:
            raise ProtocolError(
                "bad_request",
                f"{type_}: field {name!r} is {len(value):,} characters; at most {longest:,}",
                request_id,
            )
    _check_values(type_, body, request_id)


def _check_values(type_: str, body: dict[str, Any], request_id: int) -> None:
    """The checks of one request type's values beyond their types."""
    if type_ == "hello":
        versions = body.get("versions", [])
        if len(versions) > MAX_VERSIONS or not all(_is_int(v) for v in versions):
            raise ProtocolError(
                "bad_request",
                f"hello: versions must be a list of at most {MAX_VERSIONS} integers",
                request_id,
            )
    if type_ == "jobs" and body.get("state", "queued") not in JOB_STATES:
        raise ProtocolError(
            "bad_request",
            f"jobs: unknown state {excerpt(body['state'])}; states: {', '.join(JOB_STATES)}",
            request_id,
        )
    if type_ == "jobs" and not 1 <= body.get("limit", 100) <= MAX_JOBS_LISTED:
        raise ProtocolError("bad_request", f"jobs: limit must be in 1..{MAX_JOBS_LISTED}", request_id)
    if type_ == "history":
        seconds = body.get("seconds", 30)
        if not (0 < seconds < float("inf")) or not 1 <= body.get("max_points", 2000) <= MAX_HISTORY_POINTS:
            raise ProtocolError(
                "bad_request",
                f"history: seconds must be > 0 and max_points in 1..{MAX_HISTORY_POINTS}",
                request_id,
            )
    slurm_job_id = body.get("slurm_job_id") if type_ in ("submit", "slurm_end") else None
    if slurm_job_id is not None and SLURM_JOB_ID_RE.fullmatch(slurm_job_id) is None:
        raise ProtocolError(
            "bad_request",
            f"{type_}: slurm_job_id must be a Slurm job id (1 to 12 digits), got {excerpt(slurm_job_id)}",
            request_id,
        )
    if type_ == "submit" and "slurm_gpus" in body:
        gpus = body["slurm_gpus"]
        if (
            "slurm_job_id" not in body
            or len(gpus) > MAX_SLURM_GPUS
            or not all(_is_int(g) and 0 <= g < MAX_SLURM_GPUS for g in gpus)
        ):
            raise ProtocolError(
                "bad_request",
                f"submit: slurm_gpus must be at most {MAX_SLURM_GPUS} GPU indices, sent with slurm_job_id",
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


def encode_error(
    request_id: int | None,
    code: str,
    message: str,
    key: str | None = None,
    problem: str | None = None,
) -> bytes:
    """The bytes of an error reply; ``request_id`` is None when the request's id could not be read.

    ``key`` and ``problem`` (a spec error's key path and what is wrong with it) let a client name the
    line of its own file. The frame is at most MAX_ERROR_FRAME_BYTES: every string is clipped.
    """
    body = {"code": code, "message": clip(message, MAX_ERROR_MESSAGE_BYTES)}
    if key is not None:
        body["key"] = clip(key, MAX_ERROR_KEY_BYTES)
    if problem is not None:
        body["problem"] = clip(problem, MAX_ERROR_PROBLEM_BYTES)
    return _pack({"v": PROTOCOL_VERSION, "type": "error", "id": request_id, "body": body})


def decode_reply(payload: bytes, max_bytes: int = 1 << 30) -> Reply:
    """Parse a reply frame (client side)."""
    message = _unpack(payload, max_bytes)
    body = message.get("body")
    request_id = message.get("id")
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "malformed reply from the daemon: its body is not a map")
    if message.get("type") == "error":
        details = {name: str(body[name]) for name in ("key", "problem") if isinstance(body.get(name), str)}
        return Reply(
            id=request_id if _is_int(request_id) else -1,
            ok=False,
            body=details,
            code=str(body.get("code", "internal")),
            message=str(body.get("message", "")),
        )
    if message.get("type") != "reply" or not _is_int(request_id):
        raise ProtocolError("bad_request", "malformed reply from the daemon")
    return Reply(id=request_id, ok=True, body=body)


def topic_for_gpu(gpu: int) -> bytes:
    """PUB topic of a GPU's live samples."""
    return GPU_TOPIC_PREFIX + str(gpu).encode()


def topic_for_job(job_id: str) -> bytes:
    """PUB topic of a job's state changes, phase markers and samples."""
    return JOB_TOPIC_PREFIX + job_id.encode()


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
