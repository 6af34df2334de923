"""A real gpuprofd process on a temporary ipc endpoint with simulated GPUs, and a raw protocol client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from gpuprof.client.wire import protocol


class RawClient:
    """A DEALER socket speaking the protocol directly (no client library in between)."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.next_id = 1

    def send_raw(self, *frames: bytes) -> None:
        self.socket.send_multipart(list(frames))

    def receive(self, timeout_s: float = 10.0) -> protocol.Reply:
        if not self.socket.poll(int(timeout_s * 1000)):
            raise TimeoutError("no reply from gpuprofd")
        return protocol.decode_reply(self.socket.recv_multipart()[-1])

    def request(
        self, type_: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> protocol.Reply:
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.socket.send(protocol.encode_request(type_, body, request_id))
        reply = self.receive(timeout_s)
        assert reply.id == request_id
        return reply

    def close(self) -> None:
        self.socket.close()


class DaemonProcess:
    """``gpuprofd serve --simulate`` in a subprocess, with its own state directory and simulated GPUs."""

    def __init__(self, root: Path, extra_config: str = "") -> None:
        self.root = root
        self.endpoint = f"ipc://{root}/gpuprofd.sock"
        self.state_dir = root / "state"
        self.config = root / "gpuprofd.toml"
        self.config.write_text(f"history_s = 60.0\n{extra_config}")
        self.log = root / "gpuprofd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        command = [
            sys.executable,
            "-m",
            "gpuprof.daemon.cli",
            "serve",
            "--simulate",
            "--config",
            str(self.config),
        ]
        command += ["--endpoint", self.endpoint, "--state-dir", str(self.state_dir)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
            )
        client = RawClient(self.endpoint)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"gpuprofd exited {self.process.returncode}: {self.log.read_text()[-2000:]}"
                    )
                try:
                    if client.request("hello", timeout_s=0.5).ok:
                        return self
                except TimeoutError:
                    client.close()
                    client = RawClient(self.endpoint)
            raise RuntimeError(f"gpuprofd did not answer: {self.log.read_text()[-2000:]}")
        finally:
            client.close()

    def kill(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=30)
