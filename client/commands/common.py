"""What the daemon-facing commands share: the --endpoint and --json options, following and printing a job."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..api import DEFAULT_ENDPOINT, ENDPOINT_ENV, Client, JobHandle
from ..handle import JobProgress
from ..job_render import job_json, progress_line, render_job
from ..llm_render import requests_json
from ..wire.errors import JobUnsuccessful
from ..wire.states import FINAL_STATES

if TYPE_CHECKING:
    import pandas as pd

F = TypeVar("F", bound=Callable[..., Any])
LOG_EVERY_S = 5.0  # progress lines when stderr is not a terminal


def endpoint_option(command: F) -> F:
    """--endpoint, defaulting to $GPUPROF_ENDPOINT and then the system daemon's socket."""
    return click.option(
        "--endpoint",
        envvar=ENDPOINT_ENV,
        default=DEFAULT_ENDPOINT,
        show_default=True,
        show_envvar=True,
        help="gpuprofd's request socket (a ZeroMQ endpoint).",
    )(command)


def json_option(command: F) -> F:
    """--json: print data as JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(command)


def echo_json(data: Any) -> None:
    """Print ``data`` as one JSON document."""
    click.echo(json.dumps(data, default=str))


class ProgressPrinter:
    """Shows a job's progress on stderr: one rewritten line on a terminal, a line per change elsewhere."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._last = ""
        self._last_s = 0.0
        self._width = 0

    def __call__(self, progress: JobProgress) -> None:
        line = progress_line(progress)
        if self.interactive:
            self._width = max(self._width, len(line))
            click.echo("\r" + line.ljust(self._width), nl=False, err=True)
            return
        # A log, not an animation: every state change, and what it is doing every few seconds.
        now = time.monotonic()
        if progress.state != self._last or now - self._last_s >= LOG_EVERY_S:
            self._last, self._last_s = progress.state, now
            click.echo(line, err=True)

    def finish(self) -> None:
        """End the rewritten line."""
        if self.interactive and self._width:
            click.echo("", err=True)


def follow(handle: JobHandle, show_progress: bool = True) -> dict[str, Any]:
    """Wait for a job, showing progress; returns its final map."""
    printer = ProgressPrinter() if show_progress else None
    try:
        return handle.wait(progress=printer)
    finally:
        if printer is not None:
            printer.finish()


def print_job(
    job: dict[str, Any], as_json: bool, client: Client | None = None, requests: pd.DataFrame | None = None
) -> None:
    """A job's summary as text or JSON; with ``client`` (or its ``requests`` already fetched), an llm job's
    JSON lists its ``requests``."""
    if as_json:
        out = job_json(job)
        has_requests = bool(((job.get("result") or {}).get("llm") or {}).get("requests"))
        if requests is None and client is not None and has_requests:
            requests = client.requests(str(job["id"]))
        if requests is not None:
            out["requests"] = requests_json(requests)
        echo_json(out)
    else:
        click.echo(render_job(job))


def exit_unless_succeeded(job: dict[str, Any]) -> None:
    """Raise JobUnsuccessful (exit status 12) when the job ended failed, cancelled or interrupted."""
    if job["state"] in FINAL_STATES and job["state"] != "succeeded":
        reason = f": {job['reason']}" if job.get("reason") else ""
        raise JobUnsuccessful(f"job {job['id']} {job['state']}{reason}")
