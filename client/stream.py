"""Live data from gpuprofd's PUB socket as plain dicts: sample batches, job state changes and markers.

Each message is the published body with two keys added, ``kind`` (``samples``, ``job`` or ``marker``)
and ``topic``. A marker's own kind (``begin``, ``end``, ``event``, ``status``, ``fail``) moves to
``marker``, so that ``kind`` always says what the message is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import zmq

from .keys import CurveKeys
from .wire.protocol import GPU_TOPIC_PREFIX, ProtocolError, decode_publish, topic_for_gpu, topic_for_job


def decode_live(topic: bytes, payload: bytes) -> dict[str, Any] | None:
    """The message dict of one published (topic, payload) pair; None when it cannot be read."""
    try:
        kind, body = decode_publish(payload)
    except ProtocolError:
        return None
    message = dict(body)
    if kind == "marker" and "kind" in message:
        message["marker"] = message.pop("kind")
    message["kind"] = kind
    message["topic"] = topic.decode(errors="replace")
    return message


class Subscription:
    """A SUB socket on the daemon's live data; iterate it (blocking) or ``poll`` it with a timeout."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        pub_endpoint: str,
        gpu: int | None = None,
        job: str | None = None,
        sample_job: str | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.pub_endpoint = pub_endpoint
        self.sample_job = sample_job  # keep only samples taken while this job ran
        self._socket: zmq.Socket[bytes] | None = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(self._socket)
        topics = [topic_for_gpu(gpu)] if gpu is not None else []
        topics += [topic_for_job(job)] if job is not None else []
        for topic in topics or [b""]:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic)
        self._socket.connect(pub_endpoint)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (iteration ends)."""
        if self._socket is not None and not self._socket.closed:
            self._socket.close(linger=0)
        self._socket = None

    def _accept(self, message: dict[str, Any]) -> bool:
        if message["kind"] != "samples":
            return True
        # Samples come from gpu/N topics only: one copy each, whatever else a job topic carries.
        if not message["topic"].startswith(GPU_TOPIC_PREFIX.decode()):
            return False
        return self.sample_job is None or message.get("job") == self.sample_job

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every message that arrives within ``timeout_s`` (returns as soon as at least one is there)."""
        if self._socket is not None and self._socket.closed:  # the client was closed under us
            self._socket = None
        if self._socket is None:
            return []
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        wait_ms = max(0, int(timeout_s * 1000))
        while self._socket.poll(wait_ms):
            frames = self._socket.recv_multipart()
            if len(frames) == 2:
                message = decode_live(frames[0], frames[1])
                if message is not None and self._accept(message):
                    messages.append(message)
            # Drain what is already queued, then return what we have; keep waiting only while empty.
            wait_ms = 0 if messages else max(0, int((deadline - time.monotonic()) * 1000))
        return messages

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self._socket is not None and not self._socket.closed:
            yield from self.poll(0.25)  # wakes up regularly so Ctrl-C and close() take effect
