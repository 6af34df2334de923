"""The daemon's half of the marker channel: a job's markers read from its worker's socket, bounded."""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterator
from typing import Protocol

from ..markers import MAX_JOB_MARKER_BYTES, MAX_MARKER_BYTES, Marker, MarkerError, decode_marker

__all__ = ["DatagramSource", "MarkerReader"]


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
