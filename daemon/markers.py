"""Phase markers: a job's worker tells the daemon when each phase begins and ends.

Transport: one end of an ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, inherited by the worker as the file
descriptor named in ``$GPUPROF_MARKER_FD``; one msgpack map per record (format in docs/jobspec.md). A marker
is stamped with CLOCK_MONOTONIC (``time.monotonic_ns``, the sampler's ``t_ns`` clock) when the worker calls
the writer, so the worker must first wait for the GPU work the marker closes (``torch.cuda.synchronize()``).
"""

from __future__ import annotations

import collections
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from gpuprof.client.wire.errors import GpuprofError

__all__ = [
    "KINDS",
    "MARKER_FD_ENV",
    "MAX_MARKER_BYTES",
    "Marker",
    "MarkerChannelError",
    "MarkerError",
    "MarkerReader",
    "MarkerWriter",
    "PhaseWindow",
    "decode_marker",
    "encode_marker",
    "windows",
]

MARKER_FD_ENV = "GPUPROF_MARKER_FD"
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


def _check_marker(kind: object, name: object, t_ns: object, attrs: object) -> Marker:
    if kind not in KINDS or not isinstance(kind, str):
        raise MarkerError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not (isinstance(name, str) and len(name) <= MAX_NAME_CHARS and _NAME.fullmatch(name)):
        raise MarkerError(f"name must match {_NAME.pattern} (at most {MAX_NAME_CHARS} chars), got {name!r}")
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


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_TEXT_CHARS else line[: MAX_TEXT_CHARS - 3] + "..."


class MarkerWriter:
    """The worker's side: sends markers stamped with ``clock()`` at the call (CLOCK_MONOTONIC ns).

    Synchronize the GPU before calling: a marker's time is when it is written, not when queued GPU work
    ends. Owns ``fd`` (closed by close()).
    """

    def __init__(self, fd: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        try:
            self._sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise MarkerChannelError(f"marker fd {fd} is not a socket: {exc.strerror}") from None
        if self._sock.family != socket.AF_UNIX or self._sock.type != socket.SOCK_SEQPACKET:
            self._sock.detach()
            raise MarkerChannelError(f"marker fd {fd} is not an AF_UNIX SOCK_SEQPACKET socket")
        self._clock = clock

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MarkerWriter:
        """The writer on the fd named by $GPUPROF_MARKER_FD."""
        value = (os.environ if environ is None else environ).get(MARKER_FD_ENV, "")
        if not value.isdigit():
            raise MarkerChannelError(f"${MARKER_FD_ENV} must name an inherited socket fd, got {value!r}")
        return cls(int(value))

    def _send(self, kind: str, name: str, attrs: dict[str, Any]) -> None:
        data = encode_marker(Marker(kind, name, self._clock(), attrs))
        try:
            self._sock.send(data)
        except OSError as exc:
            raise MarkerChannelError(f"cannot send marker {name!r}: {exc.strerror or exc}") from None

    def begin(self, name: str, **attrs: Any) -> None:
        """Phase ``name`` starts now."""
        self._send("begin", name, attrs)

    def end(self, name: str, **attrs: Any) -> None:
        """Phase ``name`` ends now (its GPU work is done); attrs add to the begin's."""
        self._send("end", name, attrs)

    def event(self, name: str, **attrs: Any) -> None:
        """A point in time worth recording."""
        self._send("event", name, attrs)

    def set_clocks(self, sm_clock_mhz: int | None, timeout_s: float = 60.0) -> dict[str, Any]:
        """Asks gpuprofd to lock the SM clock (one of the job's sweep), or with None to reset it; waits.

        The request is an ``event`` named ``dvfs``; the daemon answers on the same socket with a msgpack
        map ``{ok, sm_clock_mhz, error}``. A refusal raises MarkerChannelError with the daemon's reason.
        """
        return self._ask("dvfs", {"sm_clock_mhz": sm_clock_mhz}, "clock change", timeout_s)

    def energy_so_far(self, point: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Asks gpuprofd for the energy per request of ``point``'s finished batches: ``{ok, requests,
        mean_j, ci95_j}`` (an ``event`` named ``energy_query``), to decide whether to repeat it."""
        return self._ask("energy_query", {"point": point}, "energy query", timeout_s)

    def _ask(self, name: str, attrs: dict[str, Any], what: str, timeout_s: float) -> dict[str, Any]:
        """Sends an event the daemon answers on the same socket (a msgpack map), and waits for the answer."""
        self._send("event", name, attrs)
        self._sock.settimeout(timeout_s)
        try:
            data = self._sock.recv(MAX_MARKER_BYTES)
        except OSError as exc:
            raise MarkerChannelError(f"no answer from gpuprofd to a {what} request: {exc}") from None
        finally:
            self._sock.settimeout(None)
        try:
            reply = msgpack.unpackb(data, raw=False)
        except Exception:  # any malformed answer is the same failure
            reply = None
        if not isinstance(reply, dict):
            raise MarkerChannelError(f"gpuprofd's answer to a {what} request is not a msgpack map")
        if not reply.get("ok"):
            raise MarkerChannelError(f"{what} refused: {reply.get('error', 'no reason given')}")
        return reply

    def status(self, text: str) -> None:
        """A line of progress for the user."""
        self._send("status", "status", {"text": _one_line(text)})

    def fail(self, reason: str) -> None:
        """The job failed; ``reason`` is sent as one line."""
        self._send("fail", "fail", {"reason": _one_line(reason) or "unknown failure"})

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MarkerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DatagramSource(Protocol):
    """What MarkerReader reads from: a SOCK_SEQPACKET socket, or a fake in tests."""

    def recv(self, bufsize: int, flags: int = ...) -> bytes: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class MarkerReader:
    """The daemon's side: yields valid markers; malformed messages are counted, never raised.

    The stream ends at EOF (the worker closed its end or exited). At most ``max_markers`` are kept, and
    at most ``max_bytes`` of them as they came: a worker runs the user's code, and the daemon keeps a
    job's markers until it ends. Later ones count as errors.
    """

    def __init__(
        self, sock: DatagramSource, max_markers: int = 1_000_000, max_bytes: int = MAX_JOB_MARKER_BYTES
    ) -> None:
        self._sock = sock
        self.max_markers = max_markers
        self.max_bytes = max_bytes
        self.bytes = 0  # of the markers kept
        self.received = 0  # valid markers yielded
        self.errors = 0  # malformed or dropped messages
        self.error_messages: collections.deque[str] = collections.deque(maxlen=16)  # the latest few
        self.closed = False  # EOF seen
        self.more_waiting = False  # read_available stopped at its limit, not at an empty socket

    def fileno(self) -> int:
        """For select/poll: readable when a marker or EOF is waiting."""
        return self._sock.fileno()

    def _take(self, data: bytes) -> Marker | None:
        try:
            marker = decode_marker(data)
        except MarkerError as exc:
            self._count(str(exc))
            return None
        if self.received >= self.max_markers or self.bytes + len(data) > self.max_bytes:
            kept = self.received >= self.max_markers
            full = f"{self.max_markers} markers" if kept else f"{self.max_bytes:,} bytes of markers"
            self._count(f"more than {full} kept; dropped {marker.kind} {marker.name!r}")
            return None
        self.received += 1
        self.bytes += len(data)
        return marker

    def _count(self, message: str) -> None:
        self.errors += 1
        self.error_messages.append(message)

    def _recv(self, flags: int) -> bytes | None:
        """One message; None at EOF (a zero-length record reads as EOF too)."""
        data = self._sock.recv(MAX_MARKER_BYTES + 1, flags)  # a larger record arrives cut to this size
        if not data:
            self.closed = True
            return None
        return data

    def read_available(self, limit: int = 256) -> list[Marker]:
        """The markers waiting now, at most ``limit`` messages' worth, without blocking."""
        out: list[Marker] = []
        self.more_waiting = False
        for taken in range(limit + 1):
            if self.closed:
                break
            if taken == limit:
                self.more_waiting = True
                break
            try:
                data = self._recv(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionError:
                self.closed = True
                break
            if data is not None and (marker := self._take(data)) is not None:
                out.append(marker)
        return out

    def __iter__(self) -> Iterator[Marker]:
        """Markers as they arrive, until EOF; the socket must be in blocking mode."""
        while not self.closed:
            try:
                data = self._recv(0)
            except ConnectionError:
                self.closed = True
                break
            if data is not None and (marker := self._take(data)) is not None:
                yield marker

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class PhaseWindow:
    """A phase from its begin to its end marker; ``problem`` says why one edge was assumed, if it was."""

    name: str
    t_start_ns: int
    t_end_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.t_end_ns - self.t_start_ns


def windows(
    markers: Iterable[Marker], start_ns: int | None = None, end_ns: int | None = None
) -> list[PhaseWindow]:
    """Pairs begin and end markers into windows, ordered by start.

    A begin and an end pair when they have the same name and the same ``id`` attribute (none counts as
    one); begins of the same pair key nest (the latest open one closes first). The window's attrs are the
    begin's updated with the end's. Unbalanced markers are kept with a ``problem``: a begin without end
    closes at ``end_ns`` (default: the last marker's time), an end without begin opens at ``start_ns``
    (default: the first marker's time).
    """
    markers = list(markers)
    if not markers:
        return []
    first = min(m.t_ns for m in markers) if start_ns is None else start_ns
    last = max(m.t_ns for m in markers) if end_ns is None else end_ns
    open_: dict[tuple[str, Any], list[Marker]] = collections.defaultdict(list)
    out: list[PhaseWindow] = []
    for marker in markers:
        key = (marker.name, _hashable(marker.attrs.get("id")))
        if marker.kind == "begin":
            open_[key].append(marker)
        elif marker.kind == "end":
            if open_[key]:
                begin = open_[key].pop()
                problem = "ends before it begins" if marker.t_ns < begin.t_ns else None
                attrs = {**begin.attrs, **marker.attrs}
                out.append(PhaseWindow(marker.name, begin.t_ns, marker.t_ns, attrs, problem))
            else:
                problem = "end without begin: assumed to start with the job"
                out.append(PhaseWindow(marker.name, first, marker.t_ns, dict(marker.attrs), problem))
    for pending in open_.values():
        for begin in pending:
            problem = "begin without end: assumed to last until the job ended"
            out.append(PhaseWindow(begin.name, begin.t_ns, max(last, begin.t_ns), dict(begin.attrs), problem))
    out.sort(key=lambda w: w.t_start_ns)
    return out


def _hashable(value: object) -> object:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)
