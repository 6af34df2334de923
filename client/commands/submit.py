"""``gpuprof submit``: queue a job on gpuprofd, optionally wait for it with live progress."""

from __future__ import annotations

import click

from ..api import Client
from ..job_render import job_json
from .common import (
    ProgramCommand,
    echo_json,
    endpoint_option,
    env_option,
    exit_unless_succeeded,
    follow,
    job_spec_of,
    json_option,
    print_job,
)


@click.command(cls=ProgramCommand)
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@env_option
@click.option("--wait", is_flag=True, help="Wait until the job ends, then print its result.")
@click.option("--follow", "follow_", is_flag=True, help="Like --wait, showing live progress on stderr.")
@json_option
@endpoint_option
def submit(
    spec: str | None, env: tuple[str, ...], wait: bool, follow_: bool, as_json: bool, endpoint: str
) -> None:
    """Submit the job spec SPEC (YAML), or the program after --, to gpuprofd; print the job id (alone on
    stdout, so JOB=$(gpuprof submit SPEC) works), or with --wait its result.

    The spec is checked here first; errors name the file, the line and the key. A program after -- is a
    command job run as you in this directory (see gpuprof run --help). Ctrl-C while waiting stops
    waiting, not the job. With --wait, the exit status is 12 when the job failed, was cancelled or was
    interrupted.

    \b
    Examples:
      gpuprof submit examples/burn.yaml
      JOB=$(gpuprof submit examples/burn.yaml) && gpuprof show "$JOB"
      gpuprof submit examples/burn.yaml --follow
      gpuprof submit examples/burn.yaml --wait --json > result.json
      gpuprof submit --env HF_HOME --follow -- python3 bench.py
    """
    job_spec = job_spec_of(spec, env)
    with Client(endpoint) as client:
        handle = client.submit(job_spec)
        if not (wait or follow_):
            if as_json:
                echo_json(job_json(handle.last))
            else:  # the id alone on stdout, for JOB=$(gpuprof submit ...); the sentence on stderr
                state, gpu = handle.last.get("state", "queued"), handle.last.get("gpu")
                click.echo(f"job {handle.id} {state} on GPU {gpu}", err=True)
                click.echo(handle.id)
            return
        if not as_json or follow_:
            click.echo(f"submitted job {handle.id}", err=True)
        try:
            job = follow(handle, show_progress=follow_)
        except KeyboardInterrupt:
            click.echo(f"\nstopped waiting; job {handle.id} goes on (gpuprof cancel {handle.id})", err=True)
            raise
        print_job(job, as_json, client)
        exit_unless_succeeded(job)
