"""What the daemon-facing commands share: the --endpoint and --json options, following and printing a job."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..api import DEFAULT_ENDPOINT, ENDPOINT_ENV, Client, JobHandle, configured_endpoint
from ..handle import JobProgress
from ..job_render import job_json, progress_line, render_job
from ..llm_render import requests_json
from ..wire.errors import JobUnsuccessful
from ..wire.states import FINAL_STATES

if TYPE_CHECKING:
    import pandas as pd

    from ..wire.jobspec import JobSpec

F = TypeVar("F", bound=Callable[..., Any])
LOG_EVERY_S = 5.0  # progress lines when stderr is not a terminal


def endpoint_option(command: F) -> F:
    """--endpoint, defaulting to $GPUPROF_ENDPOINT, then the client configuration's, then the system
    daemon's socket."""
    return click.option(
        "--endpoint",
        envvar=ENDPOINT_ENV,
        default=lambda: configured_endpoint()[0],
        show_default=f"{DEFAULT_ENDPOINT}, or endpoint in ~/.config/gpuprof/client.toml",
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


class ProgramCommand(click.Command):
    """A command whose arguments after ``--`` are a program to run (``gpuprof run -- CMD ARGS``), kept
    apart from its own arguments and options in ``ctx.meta["program"]``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["program"], args = tuple(args[split + 1 :]), args[:split]
        else:
            ctx.meta["program"] = ()
        return super().parse_args(ctx, args)


def env_option(command: F) -> F:
    """--env for a command job's program."""
    return click.option(
        "--env",
        "env",
        multiple=True,
        metavar="NAME[=VALUE]",
        help="Set NAME for the program (a command job): to VALUE, or without =VALUE to its value here. "
        "Repeatable.",
    )(command)


def _gives_cwd(job: Any) -> bool:
    """Whether the spec file itself names the command's directory (``command.cwd``)."""
    return ("command", "cwd") in job.lines


def job_spec_of(spec: str | None, env: tuple[str, ...] = ()) -> JobSpec:
    """The JobSpec to submit: the file ``spec``, and the program after ``--`` (a command job: it runs in
    this directory unless the spec says otherwise, its first word found on this PATH), with ``env``."""
    import dataclasses
    import os
    import shutil

    from ..wire.jobspec import CommandParams, JobSpecKeyError, command_job_spec, load_job_spec
    from ..wire.jobspec import JobSpec as Spec

    program = list(click.get_current_context().meta.get("program") or ())
    if spec is None and not program:
        raise click.UsageError(
            "give a job spec, or a program to run after -- (gpuprof run -- python3 bench.py)"
        )
    if program and "/" not in program[0]:
        found = shutil.which(program[0])  # the daemon's PATH may not be this shell's
        program[0] = found or program[0]
    job = command_job_spec(program, os.getcwd()) if spec is None else load_job_spec(spec, program or None)
    if spec is not None and program and isinstance(job.params, CommandParams) and not _gives_cwd(job):
        # A program given here runs here, as without a SPEC, unless the spec names its directory.
        job = dataclasses.replace(job, params=dataclasses.replace(job.params, cwd=os.getcwd()))
    if env:
        if not isinstance(job.params, CommandParams):
            raise click.UsageError(f"--env is for command jobs; {spec} is a {job.workload} job")
        extra = {}
        for item in env:
            name, sep, value = item.partition("=")
            if not sep:
                if name not in os.environ:
                    raise click.BadParameter(
                        f"{name} is not set here (give {name}=VALUE)", param_hint="--env"
                    )
                value = os.environ[name]
            extra[name] = value
        data = job.to_dict()
        data["command"]["env"] = {**data["command"]["env"], **extra}
        try:
            again = Spec.from_dict(data, raw_text=job.raw_text)
        except JobSpecKeyError as exc:
            raise click.BadParameter(
                exc.problem, param_hint=f"--env {exc.key.removeprefix('command.env.')}"
            ) from None
        job = dataclasses.replace(again, source=job.source, lines=job.lines, timeout_given=job.timeout_given)
    return job
