"""The worker's half of the marker channel: markers sent to gpuprofd on the inherited socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from ..markers import (
    MARKER_FD_ENV,
    MAX_MARKER_BYTES,
    MAX_TEXT_CHARS,
    Marker,
    MarkerChannelError,
    MarkerError,
    encode_marker,
)

__all__ = ["MarkerWriter"]


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

    def _send(self, kind: str, name: str, attrs: dict[str, Any], t_ns: int | None = None) -> None:
        now = self._clock()
        if t_ns is not None and t_ns > now:
            raise MarkerChannelError(f"marker {name!r} stamped {t_ns - now} ns in the future")
        data = encode_marker(Marker(kind, name, now if t_ns is None else int(t_ns), attrs))
        try:
            self._sock.send(data)
        except OSError as exc:
            raise MarkerChannelError(f"cannot send marker {name!r}: {exc.strerror or exc}") from None

    def send(self, kind: str, name: str, attrs: dict[str, Any], t_ns: int | None = None) -> None:
        """A marker of any kind but ``fail`` with ``attrs`` as given (a program's marker line, whose attribute
        names may be anything); MarkerError if it is malformed."""
        if kind not in ("begin", "end", "event", "status"):
            raise MarkerError(f"kind must be begin, end, event or status, got {kind!r}")
        self._send(kind, name, attrs, t_ns)

    def begin(self, name: str, *, t_ns: int | None = None, **attrs: Any) -> None:
        """Phase ``name`` starts now, or at ``t_ns`` (CLOCK_MONOTONIC, past) where an engine timed it."""
        self._send("begin", name, attrs, t_ns)

    def end(self, name: str, *, t_ns: int | None = None, **attrs: Any) -> None:
        """Phase ``name`` ends now (its GPU work is done), or at ``t_ns``; attrs add to the begin's."""
        self._send("end", name, attrs, t_ns)

    def event(self, name: str, **attrs: Any) -> None:
        """A point in time worth recording."""
        self._send("event", name, attrs)

    def set_clocks(
        self, sm_clock_mhz: int | None, timeout_s: float = 60.0, phase: str | None = None
    ) -> dict[str, Any]:
        """Asks gpuprofd to lock the SM clock (one of the job's sweep), or with None to reset it; waits.

        The request is an ``event`` named ``dvfs`` (with ``phase``, a switch at a phase edge); the daemon
        answers on the same socket with a msgpack map ``{ok, sm_clock_mhz, applied_ns, error}``
        (``applied_ns``: CLOCK_MONOTONIC when its call returned). A refusal raises MarkerChannelError with
        the daemon's reason.
        """
        attrs: dict[str, Any] = {"sm_clock_mhz": sm_clock_mhz}
        if phase is not None:
            attrs["phase"] = phase
        return self._ask("dvfs", attrs, "clock change", timeout_s)

    def energy_so_far(self, point: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Asks gpuprofd for the energy per request of ``point``'s finished batches: ``{ok, requests,
        mean_j, ci95_j}`` (an ``event`` named ``energy_query``), to decide whether to repeat it."""
        return self._ask("energy_query", {"point": point}, "energy query", timeout_s)

    def steady_so_far(self, base: str, phase: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Asks gpuprofd for the energy per token of a steady phase's (``steady_prefill`` or
        ``steady_decode``) finished windows ``base.s<n>``: ``{ok, windows, mean_j_per_token,
        ci95_j_per_token}``, to decide whether to run another round."""
        return self._ask("energy_query", {"steady": base, "phase": phase}, "energy query", timeout_s)

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

    def status(self, text: str, done: float | None = None, total: float | None = None) -> None:
        """A line of progress for the user; with ``done`` of ``total`` (the job's own units, done <= total),
        clients show a percentage and the time left."""
        attrs: dict[str, Any] = {"text": _one_line(text)}
        if done is not None and total is not None and 0 <= done <= total and total > 0:
            attrs.update(done=float(done), total=float(total))
        self._send("status", "status", attrs)

    def fail(self, reason: str) -> None:
        """The job failed; ``reason`` is sent as one line."""
        self._send("fail", "fail", {"reason": _one_line(reason) or "unknown failure"})

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MarkerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
