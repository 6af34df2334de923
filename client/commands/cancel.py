"""``gpuprof cancel``: cancel a queued or running job, and wait until it has stopped."""

from __future__ import annotations

from typing import Any

import click

from ..api import Client
from ..job_render import job_json
from ..wire.errors import DaemonError
from ..wire.states import FINAL_STATES
from .common import echo_json, endpoint_option, json_option

STOP_WAIT_S = 60.0  # a running job's worker gets a grace period, then is killed: far less than this


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--no-wait", is_flag=True, help="Return once gpuprofd has been asked, not once the job stopped."
)
@json_option
@endpoint_option
def cancel(job_id: str, no_wait: bool, as_json: bool, endpoint: str) -> None:
    """Cancel JOB: a queued job never starts, a running one is stopped and keeps what it recorded. Waits
    until the job has stopped and prints its final state; a job already ended is left as it is (exit 0).

    \b
    Examples:
      gpuprof cancel 01m96z4917hxqfqw
      gpuprof cancel 01m96z49                        any unique start of the id
      gpuprof cancel 01m96z4917hxqfqw --no-wait     ask, and return at once
    """
    with Client(endpoint) as client:
        job = client.job(job_id)
        ended_before = job["state"] in FINAL_STATES
        if not ended_before:
            try:
                job = client.cancel(job_id)
            except DaemonError as exc:  # it ended between the two requests
                job = client.job(job_id)
                if job["state"] not in FINAL_STATES:
                    raise exc from None
                ended_before = True
        if not ended_before and not no_wait and job["state"] not in FINAL_STATES:
            if not as_json:
                click.echo(f"cancelling job {job['id']} ({job['state']}): waiting for it to stop", err=True)
            job = client.handle(job["id"]).wait(timeout_s=STOP_WAIT_S)
    if as_json:
        echo_json(job_json(job))
    else:
        click.echo(_said(job, ended_before))


def _said(job: dict[str, Any], ended_before: bool) -> str:
    reason = f" ({job['reason']})" if job.get("reason") else ""
    if ended_before:
        return f"job {job['id']} had already ended: {job['state']}{reason}; nothing to cancel"
    if job["state"] not in FINAL_STATES:
        return f"job {job['id']} is being cancelled ({job['state']}); gpuprof show {job['id']} tells when"
    return f"job {job['id']} {job['state']}{reason}"
