"""The ``gpuprof`` command: one click group, one module per command, errors as one line and an exit code."""

from __future__ import annotations

import sys

import click

from gpuprof.sampler.command import run_command

from .commands.sample import sample
from .commands.sim import sim


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gpuprof", prog_name="gpuprof")
def cli() -> None:
    """Measure GPU power, energy and clocks while LLM inference runs.

    Every command that reads a GPU takes --simulate to use gpuprof's simulated H100 instead of the
    NVIDIA driver; its output then says "simulated".

    \b
    Examples:
      gpuprof sample --seconds 10 -o trace.parquet          record GPU 0 at 1 kHz for 10 s
      gpuprof sample --simulate --gpu 0 --gpu 1 -o t.csv    record two simulated GPUs until Ctrl-C
      gpuprof sim load --gpu 0 --util 80                    make the simulated GPU 0 busy
    """


cli.add_command(sample)
cli.add_command(sim)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a GpuprofError becomes ``gpuprof: error: ...`` on stderr and its exit code."""
    return run_command(cli, argv, "gpuprof")


if __name__ == "__main__":
    sys.exit(main())
