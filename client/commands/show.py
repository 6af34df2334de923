"""``gpuprof show``: one job's state and result."""

from __future__ import annotations

import click

from ..api import Client
from .common import endpoint_option, json_option, print_job


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@endpoint_option
def show(job_id: str, as_json: bool, endpoint: str) -> None:
    """Show JOB's state and, once finished, its energy per method and window, with bounds.

    For an llm job also its points (model x task x batch size) and steady-state energy per token; --json
    adds `requests`, one object per request.

    \b
    Examples:
      gpuprof show 01m97091dk4s                 any unique start of the job's id (4 or more)
      gpuprof show 01m97091dk4s --json | jq .energy_counter_j
      gpuprof show 01m97091dk4s --json | jq '.requests[] | {prompt_id, energy_j, ttft_s}'   (llm jobs)
    """
    with Client(endpoint) as client:
        job = client.job(job_id)
        print_job(job, as_json, client)
