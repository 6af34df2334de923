"""Marks from a program that gpuprofd runs (``workload: command``, ``gpuprof run -- CMD``): its windows,
requests and sweep points, so that gpuprof attributes energy to them as it does for its own llm jobs.

    import gpuprof.markers as markers

    for mhz in markers.sweep():                      # once, or once per clock of the job's sweep
        for i, prompt in enumerate(prompts):
            with markers.window("prefill", request=i, sync=torch.cuda.synchronize):
                ...
            with markers.window("decode", request=i, sync=torch.cuda.synchronize):
                ...
            markers.request(i, input_tokens=n_in, output_tokens=n_out)

Pure Python: it needs neither torch nor the daemon. Each call writes one JSON line to the FIFO named in
``$GPUPROF_MARKERS`` (docs/protocol.md, "Marker lines": any language can write the same lines), stamped
with ``time.monotonic_ns()``, the clock of gpuprof's trace. Outside a gpuprof job every call does nothing
(``active()`` says which), so a program runs unchanged with or without gpuprof.

A window's edges are stamped when the calls are made: work queued on a GPU must be finished first. Pass
``sync`` (``torch.cuda.synchronize``) and ``window`` calls it before stamping each edge.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "active",
    "begin",
    "end",
    "event",
    "next_point",
    "request",
    "request_from_vllm",
    "status",
    "sweep",
    "window",
]

MARKERS_ENV = "GPUPROF_MARKERS"  # as gpuprof.client.wire.command_spec names them
REPLY_ENV = "GPUPROF_MARKERS_REPLY"
ATOMIC_LINE_BYTES = 4096  # PIPE_BUF: a line up to this long reaches the FIFO whole, whoever else writes
MAX_LINE_BYTES = 65_536

_lock = threading.Lock()
_fd: int | None = None
_fd_pid: int | None = None


def active() -> bool:
    """Whether this process runs under a gpuprof job that reads its marks."""
    return bool(os.environ.get(MARKERS_ENV))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        return item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot mark a {type(value).__name__} (give JSON values: numbers, strings, lists, maps)")


def _write(kind: str, name: str, attrs: dict[str, Any], t_ns: int | None = None) -> None:
    global _fd, _fd_pid
    path = os.environ.get(MARKERS_ENV)
    if not path:
        return
    line = json.dumps(
        {"kind": kind, "name": name, "t_ns": t_ns or time.monotonic_ns(), "attrs": attrs},
        default=_plain, separators=(",", ":"), allow_nan=False,
    ).encode() + b"\n"  # fmt: skip
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"marker {name!r} is {len(line)} bytes as a line; at most {MAX_LINE_BYTES}")
    with _lock:
        if _fd is None or _fd_pid != os.getpid():  # a forked child opens its own
            _fd, _fd_pid = os.open(path, os.O_WRONLY | os.O_CLOEXEC), os.getpid()
        os.write(_fd, line)


def _with_id(attrs: dict[str, Any], request: object, window_id: object) -> dict[str, Any]:
    named = window_id if window_id is not None else request
    return {**attrs, "id": str(named)} if named is not None else attrs


def begin(name: str, *, request: object = None, id: object = None, **attrs: Any) -> None:
    """Window ``name`` begins now (``request``/``id``: whose window it is, as ``request()`` names it)."""
    _write("begin", name, _with_id(attrs, request, id))


def end(name: str, *, request: object = None, id: object = None, **attrs: Any) -> None:
    """Window ``name`` ends now; ``attrs`` add to its begin's."""
    _write("end", name, _with_id(attrs, request, id))


@contextlib.contextmanager
def window(
    name: str,
    *,
    request: object = None,
    id: object = None,
    sync: Callable[[], object] | None = None,
    **attrs: Any,
) -> Iterator[None]:
    """The block is window ``name``: ``prefill``, ``decode`` and ``tokenize`` with ``request=`` are that
    request's phases (docs/llm.md); any other name is a window of its own in the job's result. ``sync``
    runs before each edge is stamped (``torch.cuda.synchronize``: the GPU's queued work done)."""
    if sync is not None and active():
        sync()
    begin(name, request=request, id=id, **attrs)
    try:
        yield
    finally:
        if sync is not None and active():
            sync()
        end(name, request=request, id=id)


def event(name: str, **attrs: Any) -> None:
    """A point in time worth recording, with its attributes."""
    _write("event", name, attrs)


def status(text: str, done: float | None = None, total: float | None = None) -> None:
    """A line of progress, shown by ``gpuprof run`` and ``gpuprof watch``; with ``done`` of ``total`` (the
    program's own units, ``0 <= done <= total``), clients also show the share done and the time left."""
    attrs: dict[str, Any] = {"text": str(text)}
    if done is not None and total is not None:
        attrs.update(done=done, total=total)
    _write("status", "status", attrs)


def request(
    request_id: object,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    batch: object = None,
    **attrs: Any,
) -> None:
    """Request ``request_id`` is done: its tokens and anything else to keep with it (``input_chars``,
    ``quality``, ...). Its energy comes from its ``tokenize``, ``prefill`` and ``decode`` windows (those
    marked with ``request=request_id``, or ``id=batch`` when several requests ran as one batch and share
    the batch's phases by the documented rule), or, given ``scheduled_ns``, ``first_token_ns`` and
    ``last_token_ns`` (CLOCK_MONOTONIC ns, as vLLM times requests), from its own instants."""
    group = request_id if batch is None else batch
    _write(
        "event",
        "request",
        {**attrs, "id": str(group), "prompt_id": str(request_id), "input_tokens": input_tokens,
         "output_tokens": output_tokens},
    )  # fmt: skip


def request_from_vllm(output: Any, request_id: object = None) -> None:
    """A vLLM ``RequestOutput`` (from an engine with ``disable_log_stats=False``, its core in this process:
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) as a request with its own queued, scheduled, first-token and
    last-token instants. gpuprof shares the energy of each instant among the requests of the same point
    that vLLM ran in it, whichever call they came from."""
    stats = getattr(output, "metrics", None)
    if stats is None or not getattr(stats, "first_token_ts", 0):
        raise ValueError("this RequestOutput has no timings: run vLLM with disable_log_stats=False")
    ids = list(getattr(output, "prompt_token_ids", None) or [])
    generated = sum(len(o.token_ids) for o in output.outputs)
    request(
        request_id if request_id is not None else output.request_id,
        input_tokens=len(ids),
        output_tokens=generated,
        queued_ns=int(stats.queued_ts * 1e9),
        scheduled_ns=int(stats.scheduled_ts * 1e9),
        first_token_ns=int(stats.first_token_ts * 1e9),
        last_token_ns=int(max(stats.last_token_ts, stats.first_token_ts) * 1e9),
    )


def next_point(timeout_s: float = 600.0) -> dict[str, Any] | None:
    """Asks gpuprof for the next point of the job's sweep and waits until its clock is set: ``{"point":
    id, "sm_clock_mhz": MHz or None}``, or None when every point ran. Outside a job: None."""
    reply_path = os.environ.get(REPLY_ENV)
    if not active() or not reply_path:
        return None
    deadline = time.monotonic() + timeout_s
    fd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)  # open before asking: gpuprof answers once it is
    try:
        _write("event", "next_point", {})
        data = b""
        while not data.endswith(b"\n"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from gpuprof to next_point within {timeout_s:g} s")
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                chunk = b""
            if not chunk:
                time.sleep(0.002)
            data += chunk
    finally:
        os.close(fd)
    answer = json.loads(data)
    return None if answer.get("done") else {"point": answer["point"], "sm_clock_mhz": answer["sm_clock_mhz"]}


def sweep() -> Iterator[int | None]:
    """The job's points, each at its SM clock (None: the clock is not set): iterate and run the work to
    measure in the loop's body. Once per run of the program under ``points: run`` (the default), once per
    clock under ``points: marked``; once, with None, outside a job."""
    if not active():
        yield None
        return
    while True:
        point = next_point()
        if point is None:
            return
        yield point["sm_clock_mhz"]
