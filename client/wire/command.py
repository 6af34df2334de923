"""Running a click command line the gpuprof way: a GpuprofError is one line on stderr and an exit code."""

from __future__ import annotations

import click

from .errors import GpuprofError, exit_code


def run_command(group: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run ``group`` on ``argv``; return the exit code instead of raising or printing a traceback."""
    try:
        returned = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except GpuprofError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        return exit_code(exc)
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return returned if isinstance(returned, int) else 0  # ctx.exit(n) comes back as n
