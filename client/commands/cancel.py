"""``gpuprof cancel``: cancel a queued or running job."""

from __future__ import annotations

import click

from ..api import Client
from ..job_render import job_json
from .common import echo_json, endpoint_option, json_option


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@endpoint_option
def cancel(job_id: str, as_json: bool, endpoint: str) -> None:
    """Cancel JOB: a queued job never starts, a running one is stopped and keeps what it recorded.

    \b
    Example:
      gpuprof cancel 3f2a9c
    """
    with Client(endpoint) as client:
        job = client.cancel(job_id)
    if as_json:
        echo_json(job_json(job))
    else:
        reason = f" ({job['reason']})" if job.get("reason") else ""
        click.echo(f"job {job['id']} {job['state']}{reason}")
