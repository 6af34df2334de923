"""The ``gpuprofd`` command."""

from __future__ import annotations

import sys

import click

from gpuprof.sampler.command import run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpuprof", prog_name="gpuprofd")
def cli() -> None:
    """gpuprofd, the gpuprof daemon that owns a node's GPUs."""


def main(argv: list[str] | None = None) -> int:
    """Run the daemon's command line."""
    return run_command(cli, argv, "gpuprofd")


if __name__ == "__main__":
    sys.exit(main())
