"""The command workload: the user's own program, run as the job's user, marking its windows in JSON lines.

The worker makes two FIFOs in a private directory and names them to the program: ``$GPUPROF_MARKERS``,
where the program (and its children) write marker lines, and ``$GPUPROF_MARKERS_REPLY``, where it reads
the answer to a ``next_point`` line. Each line is one JSON object ``{"kind", "name", "t_ns", "attrs"}``
(docs/protocol.md, "Marker lines"); the worker checks it and passes it on as a marker, stamped with the
program's ``t_ns`` (CLOCK_MONOTONIC, never in the future) or, without one, when read. A line it refuses
is counted and the first few are reported as status lines; the program is never stopped for one.

Markers of its own: ``measure`` around the whole job, ``point`` windows (one per run of the program,
or per ``next_point`` with ``points: marked``), and at the end a ``command`` event with the program's
exit status and the tails of its output. The program's stdout and stderr go to ``stdout.log`` and
``stderr.log`` in the job's directory (up to the job's file size limit). When the program exits, what is
left of its process group is stopped; a SIGTERM (cancel, timeout) stops the group too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from gpuprof.client.wire.command_spec import (
    MARKERS_ENV,
    MAX_LINE_BYTES,
    NEXT_POINT,
    PROGRAM_KINDS,
    REPLY_ENV,
    RESERVED_NAMES,
    CommandParams,
)
from gpuprof.client.wire.dvfs_spec import DvfsParams
from gpuprof.client.wire.errors import GpuprofError

from ...markers import MarkerChannelError, check_name
from ...worker_env import EXPECT_UID_ENV, JOB_SPEC_ENV, MARKER_FD_ENV, MAX_FILE_ENV
from ..markers import MarkerWriter
from .target import GpuTarget, sigterm_deferred

__all__ = ["run"]

TAIL_BYTES = 16 * 1024  # of stdout and of stderr, kept while the program runs
SUMMARY_TAIL_BYTES = 8000  # of each, in the result: both and the rest stay under a marker's 64 KiB
REPORTED_REFUSALS = 10  # refused marker lines reported one by one; the rest are counted
REPLY_TIMEOUT_S = 30.0  # for the program to open the reply FIFO after a next_point line
STOP_GRACE_S = (
    2.0  # between SIGTERM and SIGKILL of the program's group: well within gpuprofd's 5 s for the worker
)
MAX_PROGRAM_LINES = 200_000  # marker lines passed on per job; more are refused (each becomes a stored marker)
LEFTOVER_S = 1.0  # after the program exits, for its pipes to close before the group is stopped
POLL_S = 0.1
SWEEP_SEED = 0  # an interleaved command sweep's order
_WORKER_ONLY_ENV = (JOB_SPEC_ENV, MARKER_FD_ENV, MAX_FILE_ENV, EXPECT_UID_ENV)


class _Lines:
    """The FIFOs a program marks through, and the refusals of its lines."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gpuprof-markers-"))
        self.path, self.reply_path = self.directory / "markers", self.directory / "reply"
        os.mkfifo(self.path, 0o600)
        os.mkfifo(self.reply_path, 0o600)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # no EOF between two writers
        self.buffer = b""
        self.skipping = False  # inside a line too long to keep

    def read(self) -> list[bytes]:
        """The complete lines waiting in the FIFO."""
        lines: list[bytes] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
            *complete, self.buffer = self.buffer.split(b"\n")
            for line in complete:
                if self.skipping:  # the end of an over-long line
                    self.skipping = False
                    lines.append(b"\0too long")
                elif line.strip():
                    lines.append(line)
            if len(self.buffer) > MAX_LINE_BYTES:
                self.buffer, self.skipping = b"", True
        return lines

    def reply(self, answer: dict[str, Any], alive: Callable[[], bool]) -> bool:
        """Writes ``answer`` as one line to the reply FIFO once the program opened it; False if it never
        did within REPLY_TIMEOUT_S (or exited)."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.reply_path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                if not alive():
                    return False
                time.sleep(0.005)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, json.dumps(answer).encode() + b"\n")
            except OSError:
                return False
            finally:
                os.close(fd)
            return True
        return False

    def close(self) -> None:
        for fd in (self.fd, self._keep):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.directory, ignore_errors=True)


class _Output:
    """One of the program's output streams: into a file in the job's directory, its tail kept."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name, self.tail, self.bytes = name, deque[bytes](), 0
        self.kept = 0
        self.path: Path | None = (directory / f"{name}.log").resolve()
        self.file: IO[bytes] | None
        try:
            self.file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        except OSError:
            self.file = self.path = None

    def add(self, data: bytes) -> None:
        self.bytes += len(data)
        self.tail.append(data)
        self.kept += len(data)
        while self.kept - len(self.tail[0]) >= TAIL_BYTES:
            self.kept -= len(self.tail.popleft())
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError:  # EFBIG past the job's file size limit: the tail is still kept
                self.close()

    def text(self, max_bytes: int = TAIL_BYTES) -> str:
        """The last ``max_bytes`` of the stream as text (at most that many bytes once encoded again)."""
        text = b"".join(self.tail)[-max_bytes:].decode("utf-8", "replace")
        while len(text.encode("utf-8")) > max_bytes:  # U+FFFD for a cut byte is 3 bytes
            text = text[len(text) // 8 or 1 :]
        return text

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None


class _Points:
    """A job's points: one per run, or those the program asks for; each at its clock in a sweep."""

    def __init__(self, markers: MarkerWriter, dvfs: DvfsParams | None, marked: bool) -> None:
        self.markers, self.dvfs = markers, dvfs
        clocks: list[int | None] = list(dvfs.sweep) if dvfs is not None and dvfs.sweep else [None]
        if dvfs is not None and dvfs.sweep and dvfs.order == "interleaved":
            random.Random(SWEEP_SEED).shuffle(clocks)
        self.pending = clocks
        self.marked = marked
        self.count = 0
        self.current: tuple[str, int | None] | None = None
        self.answered = False  # whether a run's point was given to a next_point line already

    def begin(self) -> tuple[str, int | None] | None:
        """Starts the next point (its clock locked first); None when none is left."""
        if not self.pending:
            return None
        mhz = self.pending.pop(0)
        point = f"p{self.count}"
        self.count += 1
        if mhz is not None and self.dvfs is not None:
            if self.dvfs.cooldown_s > 0:
                self.markers.begin("cooldown", seconds=self.dvfs.cooldown_s)
                time.sleep(self.dvfs.cooldown_s)
                self.markers.end("cooldown")
            self.markers.set_clocks(mhz)
        self.markers.begin("point", id=point, sm_clock_mhz=mhz)
        self.current, self.answered = (point, mhz), False
        return self.current

    def end(self) -> None:
        """Ends the current point, and unlocks its clock however the point ended."""
        if self.current is None:
            return
        point, mhz = self.current
        self.current = None
        with sigterm_deferred():
            self.markers.end("point", id=point)
            if mhz is not None:
                self.markers.set_clocks(None)

    def next_for_program(self) -> dict[str, Any]:
        """The answer to a ``next_point`` line: with ``points: marked``, the next point (the current one
        ended); otherwise this run's point once, then done."""
        if self.marked:
            self.end()
            started = self.begin()
        else:
            started = None if self.answered else self.current
            self.answered = True
        if started is None:
            return {"done": True}
        return {"done": False, "point": started[0], "sm_clock_mhz": started[1]}


class _Run:
    """One run of the program: its process group, its output, and the marker lines it writes."""

    def __init__(
        self, params: CommandParams, environ: Mapping[str, str], lines: _Lines, markers: MarkerWriter,
        points: _Points, outputs: dict[str, _Output],
    ) -> None:  # fmt: skip
        self.params, self.lines, self.markers, self.points = params, lines, markers, points
        self.outputs, self.refused, self.passed = outputs, 0, 0
        env = {k: v for k, v in environ.items() if k not in _WORKER_ONLY_ENV}
        env.update(dict(params.env))
        env[MARKERS_ENV], env[REPLY_ENV] = str(lines.path), str(lines.reply_path)
        self.started_ns = time.monotonic_ns()
        if not Path(params.cwd).is_dir():
            raise GpuprofError(f"command.cwd {params.cwd}: no such directory (as the job's user)")
        try:
            self.process = subprocess.Popen(
                list(params.argv), cwd=params.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        except FileNotFoundError:
            raise GpuprofError(
                f"command {params.argv[0]!r} not found (in {params.cwd}, on PATH={env.get('PATH', '')})"
            ) from None
        except PermissionError:
            raise GpuprofError(f"command {params.argv[0]!r}: permission denied to the job's user") from None
        except OSError as exc:
            raise GpuprofError(f"command {params.argv[0]!r} cannot start: {exc.strerror or exc}") from None

    def wait(self) -> int:
        """Passes the program's lines on until it exits and its pipes close; returns its exit status."""
        selector = selectors.DefaultSelector()
        streams = {"stdout": self.process.stdout, "stderr": self.process.stderr}
        for name, stream in streams.items():
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ, name)
        selector.register(self.lines.fd, selectors.EVENT_READ, "markers")
        exited_at: float | None = None
        try:
            while True:
                for key, _ in selector.select(POLL_S):
                    if key.data == "markers":
                        self._lines()
                        continue
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        self.outputs[key.data].add(data)
                    else:
                        selector.unregister(key.fileobj)
                if self.process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    pipes_open = len(selector.get_map()) > 1
                    if not pipes_open or time.monotonic() - exited_at > LEFTOVER_S:
                        break
            self._lines()
            return int(self.process.returncode)
        finally:
            selector.close()
            self.stop()

    def stop(self) -> None:
        """Stops what is left of the program's process group: SIGTERM, then SIGKILL after a grace."""
        with sigterm_deferred():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                deadline = time.monotonic() + STOP_GRACE_S
                while time.monotonic() < deadline and _group_alive(self.process.pid):
                    self.process.poll()
                    time.sleep(0.02)
                if not _group_alive(self.process.pid):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE_S)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    def _lines(self) -> None:
        for line in self.lines.read():
            self.passed += 1
            if self.passed > MAX_PROGRAM_LINES:
                self._refuse(line, f"more than {MAX_PROGRAM_LINES} marker lines")
                continue
            try:
                self._forward(line)
            except MarkerChannelError:
                raise
            except Exception as exc:  # whatever one line holds, it is refused and the program goes on
                self._refuse(line, str(exc)[:200] or type(exc).__name__)

    def _refuse(self, line: bytes, why: str) -> None:
        self.refused += 1
        if self.refused <= REPORTED_REFUSALS:
            shown = line[:80].decode("utf-8", "replace") if not line.startswith(b"\0") else "(a line)"
            self.markers.status(f"marker line refused: {why}: {shown!r}")

    def _forward(self, line: bytes) -> None:
        if line.startswith(b"\0"):
            raise ValueError(f"longer than {MAX_LINE_BYTES} bytes")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        unknown = set(message) - {"kind", "name", "t_ns", "attrs"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} (kind, name, t_ns, attrs)")
        kind, name = message.get("kind"), message.get("name")
        attrs = message.get("attrs", {})
        if kind not in PROGRAM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PROGRAM_KINDS)}")
        if not isinstance(attrs, dict):
            raise ValueError("attrs must be an object")
        now = time.monotonic_ns()
        t_ns = message.get("t_ns", now)
        if not isinstance(t_ns, int) or isinstance(t_ns, bool) or not self.started_ns <= t_ns <= now:
            raise ValueError("t_ns must be CLOCK_MONOTONIC ns, from the program's start, not in the future")
        if kind == "status":
            if name is not None:
                check_name(name)  # a MarkerError: refused like any malformed line
            done, total = attrs.get("done"), attrs.get("total")
            if done is not None or total is not None:
                numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (done, total))
                if not numbers or not 0 <= done <= total:  # type: ignore[operator]
                    raise ValueError("a status's done and total must be numbers, 0 <= done <= total")
            self.markers.status(str(attrs.get("text", name or "")), done, total)
            return
        if name == NEXT_POINT and kind == "event":
            self._next_point()
            return
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is marked by gpuprof itself")
        point = self.points.current[0] if self.points.current else None
        if kind == "event" and name == "request":
            if not isinstance(attrs.get("id"), (str, int)) or isinstance(attrs.get("id"), bool):
                raise ValueError("a request needs an id (a string or an integer)")
            attrs = {"index": 0, "prompt_id": str(attrs["id"]), "point": point, **attrs}
        if "id" in attrs:  # ids are the program's own: each point's are kept apart by the point's id
            attrs = {**attrs, "id": f"{point}.{attrs['id']}" if point else str(attrs["id"])}
        self.markers.send(str(kind), str(name), attrs, t_ns)

    def _next_point(self) -> None:
        answer = self.points.next_for_program()
        if not self.lines.reply(answer, lambda: self.process.poll() is None):
            self.markers.status(
                "next_point: the program did not read its answer (from $GPUPROF_MARKERS_REPLY)"
            )


def _die_with_parent() -> None:
    """In the program, before it runs: SIGKILL when the worker dies (PR_SET_PDEATHSIG), however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _shown_argv(argv: tuple[str, ...]) -> list[str]:
    """The program's arguments as markers keep them: at most 64, each cut to 200 characters."""
    return [arg if len(arg) <= 200 else arg[:197] + "..." for arg in argv[:64]]


def _status_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


def run(
    params: CommandParams,
    markers: MarkerWriter,
    target: GpuTarget,
    dvfs: DvfsParams | None = None,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> None:
    """Runs the program (once, or once per clock of a sweep with ``points: run``), passing its marker
    lines on; fails with its exit status when it does not exit 0."""
    env = dict(os.environ if environ is None else environ)
    outputs = {name: _Output(name, directory or Path.cwd()) for name in ("stdout", "stderr")}
    lines = _Lines()
    marked = params.points == "marked"
    points = _Points(markers, dvfs, marked)
    codes: list[int] = []
    refused = 0
    started = time.monotonic()
    shown = _shown_argv(params.argv)
    markers.begin("measure", id="command", argv=shown, cwd=params.cwd[:1000], points=params.points,
                  simulated=target.simulated)  # fmt: skip
    try:
        while True:
            if not marked and points.begin() is None:
                break
            markers.status(f"running {' '.join(params.argv)[:200]}")
            program = _Run(params, env, lines, markers, points, outputs)
            try:
                codes.append(program.wait())
            finally:
                refused += program.refused
                points.end()
            if marked or codes[-1] != 0:
                break
    finally:
        with sigterm_deferred():
            points.end()
            lines.close()
            for output in outputs.values():
                output.close()
            summary = {
                "argv": shown,
                "exit_status": codes[-1] if codes else None,
                "runs": len(codes),
                "seconds": round(time.monotonic() - started, 3),
                "refused_lines": refused,
                **{f"{n}_bytes": o.bytes for n, o in outputs.items()},
                **{f"{n}_path": str(o.path) if o.path else None for n, o in outputs.items()},
                **{f"{n}_tail": o.text(SUMMARY_TAIL_BYTES) for n, o in outputs.items()},
            }
            with contextlib.suppress(GpuprofError):
                markers.event("command", **summary)
            with contextlib.suppress(GpuprofError):
                markers.end("measure", id="command")
    if codes and codes[-1] != 0:
        last = next((ln for ln in reversed(outputs["stderr"].text().splitlines()) if ln.strip()), "")
        raise GpuprofError(f"command {_status_text(codes[-1])}" + (f": {last.strip()[:300]}" if last else ""))
