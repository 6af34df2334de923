"""``gpuprof slurm prolog`` and ``gpuprof slurm epilog``: Slurm's node prolog and epilog (client/slurm.py)."""

from __future__ import annotations

import os

import click

from .common import echo_json, endpoint_option, json_option

JOBS_DIR_HELP = "Where the records go: the directory gpuprofd's slurm_jobs_dir (gpuprofd.toml) names."


@click.group()
def slurm() -> None:
    """Slurm's node prolog and epilog: attribute gpuprof jobs to Slurm jobs, cancel them when their Slurm
    job ends, and write each Slurm job's GPU energy into its AdminComment.

    slurmd runs these as root (slurm.conf: Prolog=/etc/gpuprof/slurm-prolog.sh,
    Epilog=/etc/gpuprof/slurm-epilog.sh; both scripts ship in slurm/). They always exit 0, so a problem
    never drains the node: it is said on stderr, in slurmd's log. docs/slurm.md explains the whole.
    """


_jobs_dir_option = click.option(
    "--jobs-dir",
    default="/run/gpuprof/slurm",
    envvar="GPUPROF_SLURM_JOBS_DIR",
    show_default=True,
    show_envvar=True,
    help=JOBS_DIR_HELP,
)


def _run(step: str, action: object, as_json: bool = False) -> None:
    """Runs the step; says what it did on stderr (slurmd's log), with --json also as one object on stdout."""
    try:
        message, ok = action(), True  # type: ignore[operator]
    except Exception as exc:  # never fail: a failing prolog or epilog drains the node
        message, ok = str(exc), False
    click.echo(f"gpuprof slurm {step}: {message}", err=True)
    if as_json:
        echo_json({"step": step, "ok": ok, "message": message})


@slurm.command()
@_jobs_dir_option
@json_option
@endpoint_option
def prolog(jobs_dir: str, as_json: bool, endpoint: str) -> None:
    """Record the starting Slurm job's user and GPUs ($SLURM_JOB_ID, $SLURM_JOB_UID, $SLURM_JOB_GPUS) for
    gpuprofd, with each GPU's UUID and energy counter. Always exits 0.

    \b
    Example (what slurmd runs, as root):
      SLURM_JOB_ID=42 SLURM_JOB_UID=1000 SLURM_JOB_GPUS=0,1 gpuprof slurm prolog
    """
    from ..slurm import prolog as write_record

    _run("prolog", lambda: write_record(os.environ, jobs_dir, endpoint), as_json)


@slurm.command()
@_jobs_dir_option
@click.option(
    "--no-account",
    is_flag=True,
    help="Leave the Slurm job's AdminComment alone (only cancel its gpuprof jobs).",
)
@json_option
@endpoint_option
def epilog(jobs_dir: str, no_account: bool, as_json: bool, endpoint: str) -> None:
    """Cancel the ending Slurm job's gpuprof jobs, wait for them (20 s at most), and say what it cost as
    "gpuprof key=value ...": its GPUs' energy from prolog to epilog, and its gpuprof jobs' energy. That
    goes to stderr (slurmd's log) and, with accounting by slurmdbd, into the job's AdminComment. Always
    exits 0.

    \b
    Example (what slurmd runs, as root):
      SLURM_JOB_ID=42 gpuprof slurm epilog
      sacct -j 42 -o JobID,AdminComment%300           with accounting by slurmdbd
    """
    from ..slurm import epilog as end

    _run("epilog", lambda: end(os.environ, jobs_dir, endpoint, account=not no_account), as_json)
