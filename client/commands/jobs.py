"""``gpuprof jobs``: list gpuprofd's jobs, newest first."""

from __future__ import annotations

import click

from ..api import Client
from ..job_render import job_json, render_jobs
from ..wire.protocol import MAX_JOBS_LISTED
from ..wire.states import STATES
from .common import echo_json, endpoint_option, json_option


@click.command()
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--gpu", type=int, help="Only jobs on this GPU.")
@click.option("--user", help="Only this user's jobs.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_JOBS_LISTED),
    default=100,
    show_default=True,
    help="At most N jobs, newest first.",
)
@json_option
@endpoint_option
def jobs(
    state: str | None, gpu: int | None, user: str | None, limit: int, as_json: bool, endpoint: str
) -> None:
    """List jobs with their state, GPU, duration and energy.

    \b
    Examples:
      gpuprof jobs --state running
      gpuprof jobs --gpu 0 --limit 10 --json
    """
    with Client(endpoint) as client:
        found = client.jobs(user=user, state=state, gpu=gpu, limit=limit)
    if as_json:
        echo_json([job_json(job) for job in found])
    else:
        click.echo(render_jobs(found))
