"""The ``gpuprof`` command: one click group, one module per command, errors as one line and an exit code."""

from __future__ import annotations

import sys

import click

from gpuprof.client.wire.command import run_command

from .commands.cancel import cancel
from .commands.export import export
from .commands.exporter import exporter
from .commands.gpus import gpus
from .commands.jobs import jobs
from .commands.keygen import keygen
from .commands.report import report
from .commands.run import run
from .commands.sample import sample
from .commands.show import show
from .commands.sim import sim
from .commands.slurm import slurm
from .commands.status import status
from .commands.study import study
from .commands.submit import submit
from .commands.watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gpuprof", prog_name="gpuprof")
def cli() -> None:
    """Measure GPU power, energy and clocks while LLM inference runs.

    The commands that read a GPU themselves (run with a private daemon, sample, gpus without a daemon)
    take --simulate to use gpuprof's simulated H100 instead of the NVIDIA driver, and use it on their own
    where there is no driver, saying so; their output then says SIMULATED. The others show what gpuprofd
    serves, SIMULATED when it is.

    \b
    Examples:
      gpuprof run examples/burn.yaml                        run a job start to finish (no setup needed)
      gpuprof submit job.yaml --follow                      queue a job on gpuprofd and show progress
      gpuprof watch --gpu 0                                 live power and SM clock in the terminal
      gpuprof report JOB -o study/                          an llm job's clocks, optima and plots
      gpuprof sample --seconds 10 -o trace.parquet          record GPU 0 at 1 kHz for 10 s
      gpuprof sample --simulate --gpu 0 --gpu 1 -o t.csv    record two simulated GPUs until Ctrl-C
      gpuprof sim load --gpu 0 --util 80                    make the simulated GPU 0 busy
      gpuprof exporter --listen 127.0.0.1:9464              gpuprofd's metrics for Prometheus
    """


for command in (
    run, submit, jobs, show, watch, cancel, export, report, gpus, status, sample, sim, keygen, exporter,
    study, slurm,
):  # fmt: skip
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a GpuprofError becomes ``gpuprof: error: ...`` on stderr and its exit code."""
    return run_command(cli, argv, "gpuprof")


if __name__ == "__main__":
    sys.exit(main())
