"""The ``gpuprofd`` command."""

from __future__ import annotations

import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpuprof", prog_name="gpuprofd")
def cli() -> None:
    """gpuprofd, the gpuprof daemon that owns a node's GPUs."""


def main(argv: list[str] | None = None) -> int:
    """Run the daemon's command line."""
    try:
        cli.main(args=argv, prog_name="gpuprofd", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
