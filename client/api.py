"""gpuprof's Python API: a client of gpuprofd that submits jobs, lists them and fetches their traces.

>>> from gpuprof.client import Client
>>> with Client() as client:
...     job = client.submit("examples/burn.yaml")
...     result = job.result()          # waits; summary plus trace, energy and windows DataFrames
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pandas as pd
import zmq
from zmq.utils.monitor import recv_monitor_message

from gpuprof.sampler.trace import TRACE_DTYPES

from .handle import JobHandle, JobProgress, JobResult
from .keys import CurveKeys, curve_keys
from .stream import Subscription
from .wire.errors import (
    ConfigError,
    DaemonError,
    DaemonUnavailable,
    DeviceNotFound,
    GpuprofError,
    JobNotFound,
    JobSpecError,
    PermissionDenied,
    UsageError,
)
from .wire.messages import GpuInfo
from .wire.protocol import (
    JOB_ID_ALPHABET,
    JOB_ID_LENGTH,
    MAX_JOBS_LISTED,
    MAX_SPEC_TEXT_CHARS,
    MAX_TRACE_CHUNK,
    PROTOCOL_VERSION,
    SLURM_JOB_ID_RE,
    ProtocolError,
    decode_reply,
    encode_request,
)
from .wire.slurm_record import allocated_gpus
from .wire.states import FINAL_STATES

MIN_ID_PREFIX = 4  # characters of a job's id that name it, when no other job's id starts so
MAX_LISTED_JOBS = MAX_JOBS_LISTED  # the jobs a prefix is looked for among (a jobs request's most)

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "FINAL_STATES",
    "Client",
    "DaemonError",
    "DaemonUnavailable",
    "JobHandle",
    "JobNotFound",
    "JobProgress",
    "JobResult",
    "default_endpoint",
]

DEFAULT_ENDPOINT = "ipc:///run/gpuprof/gpuprofd.sock"
ENDPOINT_ENV = "GPUPROF_ENDPOINT"

# An llm job's requests table (docs/llm.md): counts are integers, times and energies floats.
REQUEST_INT_COLUMNS = ("batch_size", "rep", "index", "input_tokens", "output_tokens", "input_chars", "choice")
REQUEST_FLOAT_COLUMNS = (
    "tokenize_s", "prefill_s", "decode_s", "ttft_s", "tpot_s", "latency_s", "energy_j",
    "energy_uncertainty_j", "prefill_energy_j", "decode_energy_j", "j_per_token", "observed_sm_clock_mhz",
    "token_entropy", "unique_token_ratio", "entity_density", "reasoning_marker_density",
    "causal_question_score", "complexity_score", "quality", "exact_match",
)  # fmt: skip
REQUESTS_CHUNK = 1000  # rows per reply: each carries its answer's text (at most 2,000 characters)


def error_for(code: str, message: str, details: dict[str, Any] | None = None) -> GpuprofError:
    """The gpuprof exception for an error reply.

    One about a key of a submitted spec carries ``spec_key`` and ``spec_problem`` (``details``' key
    and problem), for the client to name the line of its own file.
    """
    error: GpuprofError
    if code == "not_found":
        error = JobNotFound(message)
    elif code == "denied":
        error = PermissionDenied(message)
    elif code == "invalid_spec":
        error = JobSpecError(message)
    else:
        error = DaemonError(code, message)
    details = details or {}
    if isinstance(details.get("key"), str):
        setattr(error, "spec_key", details["key"])  # noqa: B010 (not every error class has these)
        setattr(error, "spec_problem", str(details.get("problem") or message))  # noqa: B010
    return error


def _named_in(spec: SpecLike, error: GpuprofError) -> GpuprofError:
    """A daemon's refusal of a key of ``spec``, as an error naming the spec's file, line and key."""
    key = getattr(error, "spec_key", None)
    if key is None or not hasattr(spec, "key_error"):
        return error
    located = spec.key_error(key, getattr(error, "spec_problem", str(error)))
    if isinstance(error, PermissionDenied):
        where = located.source if located.line is None else f"{located.source}:{located.line}"
        return PermissionDenied(f"{where}: {located.key}: {error}")
    return located


def client_config_path() -> Path:
    """The client's own configuration: ``$XDG_CONFIG_HOME/gpuprof/client.toml`` (``~/.config`` by
    default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gpuprof" / "client.toml"


def configured_endpoint() -> tuple[str, Path | None]:
    """(the endpoint the client configuration names, its file), or (the system daemon's ipc path, None)
    without one. ``endpoint = "ipc:///tmp/gpuprof/d.sock"`` is its one key."""
    import tomllib

    path = client_config_path()
    try:
        with open(path, "rb") as file:
            settings = tomllib.load(file)
    except FileNotFoundError:
        return DEFAULT_ENDPOINT, None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(settings) - {"endpoint"})
    endpoint = settings.get("endpoint", DEFAULT_ENDPOINT)
    if unknown or not isinstance(endpoint, str) or not endpoint.startswith(("ipc://", "tcp://")):
        raise ConfigError(
            f"{path}: its one key is endpoint, an ipc:// or tcp:// address"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return endpoint, path if "endpoint" in settings else None


def default_endpoint() -> str:
    """$GPUPROF_ENDPOINT, else the client configuration's (``configured_endpoint``), else the system
    daemon's ipc path."""
    return os.environ.get(ENDPOINT_ENV) or configured_endpoint()[0]


def frame_from_chunks(chunks: Iterable[dict[str, Any]], table: str = "samples") -> pd.DataFrame:
    """One DataFrame from the ``columns`` of successive trace replies, typed like gpuprof sample's files."""
    columns: dict[str, list[Any]] = {}
    for chunk in chunks:
        for name, values in chunk.get("columns", {}).items():
            columns.setdefault(name, []).extend(values)
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    if table == "requests":
        return _typed_requests(frame)
    for name, dtype in TRACE_DTYPES.items():
        if name in frame:
            frame[name] = _typed(frame[name], dtype)
    return frame


def _typed_requests(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame:
        if name in REQUEST_FLOAT_COLUMNS:
            frame[name] = _typed(frame[name], "float64")
        elif name in REQUEST_INT_COLUMNS:
            frame[name] = _typed(frame[name], "int64")
        elif name in ("short_window", "simulated"):
            frame[name] = frame[name].astype("boolean")
        else:
            frame[name] = frame[name].astype("string")
    return frame


def _typed(column: pd.Series, dtype: str) -> pd.Series:
    if dtype == "float64":
        return pd.to_numeric(column, errors="coerce").astype("float64")
    if not dtype[0].isupper() and column.isna().any():
        dtype = dtype.capitalize()  # pandas' nullable integers keep a missing reading missing
    return column.astype(pd.api.types.pandas_dtype(dtype))


def _socket_denied(path: str) -> str:
    """Why this user may not connect to gpuprofd's socket file, and what to do about it."""
    import grp

    try:
        group = grp.getgrgid(os.stat(path).st_gid).gr_name
    except (KeyError, OSError):
        group = "its group"
    return (
        f"permission denied on {path}: gpuprofd serves members of the group {group!r} "
        f"(ask an admin: usermod -aG {group} $USER, then log in again)"
    )


class SpecLike(Protocol):
    """What submit needs of a job spec (client/wire/jobspec.py's JobSpec)."""

    @property
    def raw_text(self) -> str | None: ...

    def submitted(self) -> dict[str, Any]: ...


class Client:
    """A connection to gpuprofd: one request at a time, each matched to its reply by id.

    Not thread-safe (ZeroMQ sockets are not): use one Client per thread.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        timeout_s: float = 10.0,
        server_key: str | None = None,
        client_key: str | None = None,
    ) -> None:
        """``server_key`` and ``client_key`` (tcp:// endpoints only) default as client/keys.py says."""
        self.endpoint = endpoint or default_endpoint()
        self.timeout_s = timeout_s
        self._curve: CurveKeys | None = None
        if self.endpoint.startswith("tcp://"):
            self._curve = curve_keys(self.endpoint, server_key, client_key)
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._next_id = 0
        self._hello: dict[str, Any] | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and every stream it opened; it cannot be used afterwards."""
        self._socket = None
        self._context.destroy(linger=0)  # closes open subscriptions too, so this never blocks

    def _drop_socket(self) -> None:
        if self._socket is not None:
            if self._monitor is not None:
                self._socket.disable_monitor()
                self._monitor.close(linger=0)
                self._monitor = None
            self._socket.close(linger=0)
            self._socket = None

    def _connected(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            path = self.endpoint.removeprefix("ipc://")
            if path != self.endpoint and not path.startswith("@") and not os.path.exists(path):
                # Nothing can be listening: say so now rather than after the timeout.
                raise DaemonUnavailable(self.endpoint, f"no socket file {path}")
            if path != self.endpoint and not path.startswith("@") and not os.access(path, os.R_OK | os.W_OK):
                raise PermissionDenied(_socket_denied(path))
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self._curve is not None:
                self._curve.apply(socket)
                self._monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            try:
                socket.connect(self.endpoint)
            except zmq.ZMQError as exc:
                socket.close(linger=0)
                raise UsageError(
                    f"bad endpoint {self.endpoint!r}: {exc} (expected ipc://PATH or tcp://HOST:PORT)"
                ) from None
            self._socket = socket
        return self._socket

    def request(
        self, type_: str, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return its reply's body; error replies raise gpuprof exceptions."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self._next_id += 1
        request_id = self._next_id
        socket = self._connected()
        deadline = time.monotonic() + timeout
        try:
            socket.send(encode_request(type_, body, request_id), zmq.NOBLOCK)
        except zmq.Again:
            self._drop_socket()
            raise DaemonUnavailable(self.endpoint, "the request could not be queued") from None
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0 or not self._wait(socket, max(1, int(remaining_ms))):
                # A reply may still arrive for this id: a fresh socket (a new identity) never sees it.
                self._drop_socket()
                hint = " (over tcp: is the daemon's public key the right one?)" if self._curve else ""
                raise DaemonUnavailable(self.endpoint, f"no reply within {timeout:g} s{hint}")
            frames = socket.recv_multipart()
            try:
                reply = decode_reply(frames[-1])  # a REQ-style empty delimiter may precede the payload
            except ProtocolError:
                continue
            if reply.ok and reply.id == request_id:
                return reply.body
            # An error whose id the daemon could not read (e.g. too large) answers the one request in flight.
            if not reply.ok and reply.id in (request_id, -1):
                raise error_for(reply.code or "internal", reply.message or "", reply.body)

    def _wait(self, socket: zmq.Socket[bytes], timeout_ms: int) -> bool:
        """Whether a reply is ready within ``timeout_ms``; a refused CURVE key raises at once."""
        if self._monitor is None:
            return bool(socket.poll(timeout_ms))
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self._monitor in ready:
            event = recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._drop_socket()
                raise PermissionDenied(
                    f"gpuprofd at {self.endpoint} does not know this client's CURVE key "
                    f"(code {event['value']}): ask its admin to register your client.key "
                    "(gpuprofd keys add YOUR_USER client.key); `gpuprof keygen` makes one"
                )
        return socket in ready

    def hello(self) -> dict[str, Any]:
        """The daemon's versions, capabilities, live-data endpoint and whether its GPUs are simulated."""
        body = self.request("hello", {"client": "gpuprof-python", "versions": [PROTOCOL_VERSION]})
        self._hello = body
        return body

    def gpus(self) -> list[GpuInfo]:
        """The daemon's GPUs: name, UUID, clocks, power limits and whether each is simulated."""
        try:
            return [GpuInfo.from_dict(gpu) for gpu in self.request("gpus")["gpus"]]
        except ProtocolError as exc:  # a daemon that breaks the contract: one line, not a traceback
            raise DaemonError(exc.code, f"gpuprofd's gpus reply: {exc.message}") from None

    def counts_slurm_gpus(self) -> bool:
        """Whether a spec's ``gpu`` counts the GPUs of this process's Slurm job (from 0, as CUDA does
        there) rather than the node's: inside a Slurm job ($SLURM_JOB_ID), with the node's own gpuprofd
        (ipc), which attributes jobs to Slurm jobs (docs/slurm.md)."""
        if not SLURM_JOB_ID_RE.fullmatch(os.environ.get("SLURM_JOB_ID", "")):
            return False
        if not self.endpoint.startswith("ipc://"):
            return False  # a remote daemon's Slurm jobs are not this one's
        hello = self._hello or self.hello()
        return "slurm" in hello.get("capabilities", [])

    def submit(self, spec_or_path: str | os.PathLike[str] | SpecLike) -> JobHandle:
        """Validate a job spec here, submit it, and return a handle on the queued job."""
        if isinstance(spec_or_path, str | os.PathLike):
            from .wire.jobspec import load_job_spec

            spec: SpecLike = load_job_spec(Path(spec_or_path))
        else:
            spec = spec_or_path
        body: dict[str, Any] = {"spec": spec.submitted()}
        if spec.raw_text and len(spec.raw_text) <= MAX_SPEC_TEXT_CHARS:  # else the daemon keeps the data only
            body["spec_text"] = spec.raw_text
        if self.counts_slurm_gpus():  # a hint: gpuprofd checks it against the prolog's record
            body["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
            try:
                allocated = allocated_gpus(os.environ.get("SLURM_JOB_GPUS", ""))
            except ValueError:
                allocated = []
            if allocated:
                body["slurm_gpus"] = allocated
        try:
            job = self.request("submit", body)["job"]
        except (JobSpecError, PermissionDenied) as refused:  # found by the daemon, named in the user's file
            raise _named_in(spec, refused) from None
        return JobHandle(self, str(job["id"]), job)

    def jobs(
        self, user: str | None = None, state: str | None = None, gpu: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Job maps, newest first, filtered by user, state and GPU."""
        body: dict[str, Any] = {"limit": limit}
        body.update({k: v for k, v in (("user", user), ("state", state), ("gpu", gpu)) if v is not None})
        return list(self.request("jobs", body)["jobs"])

    def resolve(self, job_id: str) -> str:
        """The full id of the job ``job_id`` names: itself, or the one job of those the caller may see
        (the newest 10,000) whose id starts with it, as git takes a commit's prefix (at least 4
        characters). Raises JobNotFound for no such job, UsageError when several start so."""
        prefix = job_id.strip().lower()
        if not MIN_ID_PREFIX <= len(prefix) < JOB_ID_LENGTH or set(prefix) - set(JOB_ID_ALPHABET):
            return job_id  # a full id, or not an id at all: the daemon says which
        matches = [str(j["id"]) for j in self.jobs(limit=MAX_LISTED_JOBS) if str(j["id"]).startswith(prefix)]
        if not matches:
            raise JobNotFound(
                f"no job whose id starts with {prefix!r} (among the newest {MAX_LISTED_JOBS:,})"
            )
        if len(matches) > 1:
            shown = ", ".join(matches[:4]) + (", ..." if len(matches) > 4 else "")
            raise UsageError(f"{prefix!r} names {len(matches)} jobs ({shown}): give more of the id")
        return matches[0]

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's map: state, reason, times, spec and, once finished, its result. ``job_id`` may be a
        unique prefix of the id (``resolve``)."""
        return dict(self.request("job", {"id": self.resolve(job_id)})["job"])

    def handle(self, job_id: str) -> JobHandle:
        """A handle on an existing job (raises JobNotFound when there is none)."""
        job = self.job(job_id)
        return JobHandle(self, str(job["id"]), job)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; returns its map."""
        return dict(self.request("cancel", {"id": self.resolve(job_id)})["job"])

    def requests(self, job_id: str) -> pd.DataFrame:
        """An llm job's requests table: one row per request (docs/llm.md)."""
        return self.trace(job_id, "requests", REQUESTS_CHUNK)

    def trace(self, job_id: str, table: str = "samples", chunk_rows: int = MAX_TRACE_CHUNK) -> pd.DataFrame:
        """A job's whole table (``samples``, ``energy``, ``driver_power`` or, for an llm job, ``requests``),
        in chunks."""
        chunks: list[dict[str, Any]] = []
        offset: int | None = 0
        job_id = self.resolve(job_id)
        while offset is not None:
            chunk = self.request(
                "trace", {"id": job_id, "table": table, "offset": offset, "limit": chunk_rows}
            )
            chunks.append(chunk)
            following = chunk.get("next_offset")
            if following is not None and following <= offset:
                raise DaemonError("bad_reply", f"trace next_offset {following} does not pass {offset}")
            offset = following
        return frame_from_chunks(chunks, table)

    def time(self) -> dict[str, Any]:
        """The daemon's CLOCK_MONOTONIC and wall clock, read together (``monotonic_ns``, ``wall_ns``)."""
        return self.request("time")

    def history(self, gpu: int, seconds: float = 30.0, max_points: int = 2000) -> dict[str, Any]:
        """GPU ``gpu``'s samples of the last ``seconds`` from the daemon's in-memory history, as a batch.

        The batch has the columns of a live ``samples`` message. Longer spans are thinned to every
        ``stride``-th sample (at most ``max_points``); ``available`` tells how many the daemon held.
        Raises DeviceNotFound for a GPU the daemon does not serve.
        """
        try:
            return self.request("history", {"gpu": gpu, "seconds": seconds, "max_points": max_points})
        except JobNotFound as exc:  # what is not found here is the GPU (the message names those served)
            count = int((self._hello or self.hello()).get("gpus", 0))
            raise DeviceNotFound(gpu, count, str(exc)) from None

    def stats(self) -> dict[str, Any]:
        """The daemon's health: sampler counters (deadline misses, NVML errors), history, queues."""
        return self.request("stats")

    def stream(self, gpu: int | None = None, job: str | None = None) -> Subscription:
        """Live messages: a GPU's samples, a job's state changes, markers and samples, or everything.

        ``stream(gpu=N)``: GPU N's sample batches. ``stream(job=ID)``: the job's state changes and
        markers, and the samples its GPU took while it ran. Both: all of GPU N's samples plus the job's
        messages. Neither: everything the daemon publishes. See client/stream.py for the messages.
        """
        hello = self._hello or self.hello()
        sample_job = None
        if job is not None and gpu is None:
            gpu = int(self.job(job)["gpu"])
            sample_job = job
        endpoint = str(hello["pub_endpoint"])
        if self._curve is not None:
            if not hello.get("tcp_pub_port"):
                raise DaemonError("bad_reply", "the daemon published no tcp port for live data")
            endpoint = (
                f"tcp://{self.endpoint.removeprefix('tcp://').rpartition(':')[0]}:{hello['tcp_pub_port']}"
            )
        return Subscription(
            self._context, endpoint, gpu=gpu, job=job, sample_job=sample_job, curve=self._curve
        )
