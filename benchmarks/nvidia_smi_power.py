"""nvidia-smi's power and SM clock readings, each line stamped with CLOCK_MONOTONIC when it arrives.

A reference beside gpuprof's own sampler: ``nvidia-smi --query-gpu=power.draw.instant,clocks.sm -lms 100``
(``power.draw`` where the driver lacks the instant field), integrated sample-and-hold over a window. Only
queries; changes no GPU setting.
"""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import subprocess
import threading
import time
from typing import Any

import numpy as np

from gpuprof.sampler.energy import integrate_power


class NvidiaSmiPower:
    """``nvidia-smi --query-gpu=... -lms`` on a pseudo-terminal (line-buffered), lines stamped on receipt."""

    def __init__(self, gpu: int, period_ms: int = 100) -> None:
        self.gpu, self.period_ms = gpu, period_ms
        self.field = self._probe()
        self.lines: list[tuple[int, float | None, float | None]] = []  # (CLOCK_MONOTONIC ns, W, SM MHz)
        self.reads: list[int] = []  # lines per os.read: > 1 means they came bunched (stamped late)
        self.process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def _query(self, fields: str) -> list[str]:
        return ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", str(self.gpu)]

    def _probe(self) -> str | None:
        """The power field this nvidia-smi accepts (power.draw.instant, else power.draw), or None."""
        if shutil.which("nvidia-smi") is None:
            return None
        for field in ("power.draw.instant", "power.draw"):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                done = subprocess.run(self._query(field), capture_output=True, text=True, timeout=20)
                with contextlib.suppress(ValueError):
                    float(done.stdout.strip())
                    return field
        return None

    def __enter__(self) -> NvidiaSmiPower:
        assert self.field is not None
        master, slave = pty.openpty()  # on a pipe, nvidia-smi's stdout is block-buffered: stamps would lag
        command = [*self._query(f"{self.field},clocks.sm"), "-lms", str(self.period_ms)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        self._thread = threading.Thread(target=self._read, args=(master,), daemon=True)
        self._thread.start()
        return self

    def _read(self, master: int) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: nvidia-smi exited and the pty closed
                    break
                if not chunk:
                    break
                now = time.monotonic_ns()
                *complete, pending = (pending + chunk).split(b"\n")
                self.reads.append(len(complete))
                for line in complete:
                    self.lines.append((now, *self._parse(line)))
        finally:
            os.close(master)

    @staticmethod
    def _parse(line: bytes) -> tuple[float | None, float | None]:
        values: list[float | None] = []
        for cell in line.decode(errors="replace").strip().split(","):
            try:
                values.append(float(cell))
            except ValueError:
                values.append(None)  # [N/A], an error line
        padded = [*values, None, None]
        return padded[0], padded[1]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def energy_j(self, t0: int, t1: int) -> dict[str, Any]:
        """Sample-and-hold energy over [t0, t1], holding each line from its receipt to the next one."""
        good = [(t, w, c) for t, w, c in self.lines if w is not None]
        if not good:
            return {"lines": len(self.lines), "error": "no readable power line"}
        t = np.array([g[0] for g in good], np.int64)
        w = np.array([g[1] for g in good], np.float64)
        inside = (t >= t0) & (t <= t1)
        clocks = [round(c) for (tt, _, c) in good if t0 <= tt <= t1 and c is not None]
        return {
            "energy_j": integrate_power(t, w, t0, t1),
            "covered": float((t1 - max(t0, int(t[0]))) / (t1 - t0)),  # < 1: no line before t0
            "lines_in_window": int(inside.sum()),
            "rate_hz": float(inside.sum() / ((t1 - t0) / 1e9)),
            "bunched_reads": int(sum(1 for r in self.reads if r > 1)),
            "unreadable_lines": len(self.lines) - len(good),
            "sm_clock_min_mhz": min(clocks, default=None),
            "sm_clock_max_mhz": max(clocks, default=None),
        }
