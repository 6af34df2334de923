"""``gpuprof gpus``: the GPUs gpuprofd owns."""

from __future__ import annotations

import click

from ..api import Client
from ..job_render import render_gpus
from .common import echo_json, endpoint_option, json_option


@click.command()
@json_option
@endpoint_option
def gpus(as_json: bool, endpoint: str) -> None:
    """List the daemon's GPUs: name, UUID, supported SM clocks, power limits, simulated or real.

    \b
    Example:
      gpuprof gpus --json
    """
    with Client(endpoint) as client:
        inventory = client.gpus()
    if as_json:
        echo_json([gpu.to_dict() for gpu in inventory])
    else:
        click.echo(render_gpus(inventory))
