"""The ``gpuprofd`` command: serve, and check a configuration before serving it."""

from __future__ import annotations

import logging
import sys

import click

from gpuprof.sampler.command import run_command

from .config import DEFAULT_CONFIG, load_config

_FLAGS = [
    click.option(
        "--config", "config_path", help=f"TOML configuration (default {DEFAULT_CONFIG} if present)."
    ),
    click.option("--simulate", is_flag=True, default=None, help="Serve gpuprof's simulated GPUs."),
    click.option("--state-dir", help="Where jobs, results and traces are kept (default /var/lib/gpuprof)."),
    click.option(
        "--endpoint", help="Request socket, ipc:// or tcp:// (default ipc:///run/gpuprof/gpuprofd.sock)."
    ),
]


def _with_flags(function: click.decorators.FC) -> click.decorators.FC:
    for flag in reversed(_FLAGS):
        function = flag(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpuprof", prog_name="gpuprofd")
def cli() -> None:
    """gpuprofd, the gpuprof daemon that owns a node's GPUs.

    It samples every configured GPU continuously, runs submitted jobs one at a time per GPU in worker
    processes, and keeps every job's trace and energy result in its state directory. Flags override the
    TOML configuration.

    \b
    Examples:
      gpuprofd serve --simulate --endpoint ipc:///tmp/gpuprof/d.sock --state-dir /tmp/gpuprof/state
      gpuprofd check-config --config /etc/gpuprof/gpuprofd.toml
    """


@cli.command()
@_with_flags
def serve(
    config_path: str | None, simulate: bool | None, state_dir: str | None, endpoint: str | None
) -> None:
    """Serve requests and run jobs until SIGTERM or SIGINT."""
    from .server import Daemon

    logging.basicConfig(level=logging.INFO, format="gpuprofd: %(levelname)s: %(message)s", stream=sys.stderr)
    config = load_config(config_path, {"simulate": simulate, "state_dir": state_dir, "endpoint": endpoint})
    Daemon(config).serve()


@cli.command("check-config")
@_with_flags
def check_config(
    config_path: str | None, simulate: bool | None, state_dir: str | None, endpoint: str | None
) -> None:
    """Validate the configuration and print what gpuprofd would use."""
    config = load_config(config_path, {"simulate": simulate, "state_dir": state_dir, "endpoint": endpoint})
    for key, value in vars(config).items():
        click.echo(f"{key} = {value!r}")
    click.echo(f"publish_endpoint = {config.publish_endpoint!r}")
    click.echo("configuration OK")


def main(argv: list[str] | None = None) -> int:
    """Run the daemon's command line."""
    return run_command(cli, argv, "gpuprofd")


if __name__ == "__main__":
    sys.exit(main())
