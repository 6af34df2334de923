"""``gpuprof gpus``: the node's GPUs, from gpuprofd, or from NVML itself where no gpuprofd answers."""

from __future__ import annotations

import click

from gpuprof.sampler.device import read_inventory
from gpuprof.sampler.library import resolve

from ..api import Client
from ..job_render import render_gpus
from ..wire.messages import GpuInfo
from .common import echo_json, endpoint_option, json_option
from .run import probe, simulate_without_driver


@click.command()
@click.option("--simulate", is_flag=True, help="List gpuprof's simulated GPUs (automatic without a driver).")
@json_option
@endpoint_option
def gpus(simulate: bool, as_json: bool, endpoint: str) -> None:
    """List the GPUs: name, UUID, supported SM clocks, power limits, simulated or real. From the gpuprofd at
    --endpoint when one answers (the GPUs it serves); otherwise, or with --simulate, read once from NVML
    here, like nvidia-smi, with no daemon.

    \b
    Examples:
      gpuprof gpus
      gpuprof gpus --json | jq '.[].graphics_clocks_mhz | length'
      gpuprof gpus --simulate
    """
    served = None if simulate else probe(endpoint)
    if served is not None:
        with Client(endpoint) as client:
            inventory = client.gpus()
    else:
        simulate = simulate_without_driver(simulate)
        if not simulate:
            click.echo(f"no gpuprofd answers at {endpoint}: read from NVML here", err=True)
        described, unreadable = read_inventory(resolve(simulate=simulate))
        inventory = [GpuInfo.from_dict(gpu) for gpu in described]
        for index, error in sorted(unreadable.items()):
            click.echo(f"GPU {index} could not be read: {error}", err=True)
    if as_json:
        echo_json([gpu.to_dict() for gpu in inventory])
    else:
        click.echo(render_gpus(inventory))
