"""``gpuprof report``: an llm job's analysis as CSV tables, PNG plots and one HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pandas as pd

from gpuprof.sampler.files import read_regular_file

from ..api import Client, frame_from_chunks
from ..report import CONFIDENCE, GROUP, Report, group_label, rows_of
from ..report_page import headline, write_report
from ..report_steady_page import steady_lines
from .common import echo_json, endpoint_option, json_option

MAX_SAVED_JOB_BYTES = 1 << 30  # a saved --json of a long llm job: its requests' answers, a line each
HEADLINE_BUDGET = 1.1  # the latency budget of the saving printed per group


def saved_job(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A job and its requests table from a file of ``gpuprof run --json`` or ``gpuprof show --json``."""
    try:
        data = json.loads(read_regular_file(path, MAX_SAVED_JOB_BYTES))
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot read it: {exc.strerror or exc}", param_hint="JOB") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"{path}: cannot read it as JSON ({exc})", param_hint="JOB") from None
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list) or not data["requests"]:
        raise click.BadParameter(
            f"{path}: not the --json output of a finished llm job (it has no requests list)", param_hint="JOB"
        )
    records = data.pop("requests")
    names = list(dict.fromkeys(name for record in records for name in record))
    columns = {name: [record.get(name) for record in records] for name in names}
    requests = frame_from_chunks([{"columns": columns}], "requests")  # typed as the daemon's table is
    return {**data, "result": data}, requests  # --json lifts the result's keys to the top level


def _mhz(value: Any) -> str:
    return "none (every point flagged)" if pd.isna(value) else f"{value} MHz"


def write_job_report(
    jobs: list[tuple[dict[str, Any], pd.DataFrame]], directory: str, as_json: bool, err: bool = False
) -> None:
    """Write the report of one or more jobs, each (job, requests), into ``directory`` and say what it found
    (on stderr when ``err``)."""
    analysis = Report.from_jobs(jobs)
    written = write_report(analysis, directory)
    if as_json:
        steady = analysis.steady_optima
        optima = steady.astype(object).where(steady.notna(), None).to_dict("records")
        found = {**written, "simulated": analysis.simulated}
        echo_json({**found, "steady_optima": optima} if optima else found)
        return
    within = analysis.savings[analysis.savings["latency_budget"] == HEADLINE_BUDGET]
    for row in analysis.optima.itertuples():
        line = (
            f"{group_label(row.model, row.engine, row.task, row.batch_size)}: "
            f"energy-optimal {_mhz(row.energy_optimal_mhz)}, EDP-optimal {_mhz(row.edp_optimal_mhz)}"
        )
        saved = rows_of(within, {c: getattr(row, c) for c in GROUP}).dropna(subset=["saving"])
        if len(saved):
            first = saved.iloc[0]
            low, high = first["saving_ci_low"], first["saving_ci_high"]
            interval = "" if pd.isna(low) else f" ({CONFIDENCE:.0%} CI {low:.1%} to {high:.1%})"
            line += (
                f", {first['saving']:.1%}{interval} less energy than {_mhz(row.default_clock_mhz)} "
                f"within {HEADLINE_BUDGET:g}x its latency"
            )
        click.echo(line, err=err)
    for line in headline(analysis.savings):
        click.echo(line, err=err)
    for line in steady_lines(analysis):
        click.echo(line, err=err)
    if analysis.simulated:
        click.echo("(SIMULATED: from gpuprof's simulated GPU, not a real one)", err=err)
    click.echo(
        f"wrote {len(written['tables'])} tables, {len(written['plots'])} plots, {written['page'][0]}", err=err
    )


def study_table(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A gathered study's requests (``gpuprof study gather``, .parquet or .csv) as one job's."""
    try:
        requests = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise click.BadParameter(
            f"{path}: cannot read it as a study table ({exc})", param_hint="JOB"
        ) from None
    if requests.empty or not {"energy_j", "study_point"} <= set(requests.columns):
        raise click.BadParameter(f"{path}: not a table of gpuprof study gather", param_hint="JOB")
    methods = sorted(set(map(str, requests.get("energy_method", pd.Series(dtype=str)).dropna())))
    simulated = "simulated" in requests and bool(requests["simulated"].fillna(False).astype(bool).any())
    job = {
        "id": path.stem,
        "name": f"study {path.stem}",
        "simulated": simulated,
        "result": {"dvfs": {"points": []}, "llm": {"energy_method": "; ".join(methods)}},
    }
    return job, requests


def _job_and_requests(job_id: str, endpoint: str) -> tuple[dict[str, Any], pd.DataFrame]:
    saved = Path(job_id)
    if saved.is_file() and saved.suffix in (".parquet", ".csv"):
        return study_table(saved)
    if saved.is_file():
        return saved_job(saved)
    with Client(endpoint) as client:
        job = client.job(job_id)
        if not ((job.get("result") or {}).get("llm") or {}).get("requests"):
            raise click.UsageError(f"job {job_id} has no requests table: only a finished llm job has one")
        return job, client.requests(job_id)


MAX_REPORT_JOBS = 64


@click.command()
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True)
@click.option(
    "-o", "--output", "directory", default=None, help="Directory for the files (default: report-JOB)."
)
@json_option
@endpoint_option
def report(job_ids: tuple[str, ...], directory: str | None, as_json: bool, endpoint: str) -> None:
    """Analyse finished llm JOBs: energy, latency, the GPU's measured power and EDP against SM clock per
    model x engine x task x batch size, each with its 95% interval; the energy- and EDP-optimal clocks; the
    energy saved against the default clock within latency budgets and a quality tolerance, with its
    interval; the Pareto frontier of energy against latency; and Pearson and Spearman correlations (95%
    intervals) of each input feature with energy and latency. Flagged points (the GPU ran below the clock
    asked) are left out of optima and savings. Writes clocks.csv, optima.csv, savings.csv, pareto.csv,
    correlations.csv, a PNG per plot and report.html (self-contained: the GPU, dates, spec and gpuprof
    version too). A sweep with steady state adds steady.csv (each point's energy per token, tokens/s and
    power per phase, with intervals, beside its per-request energy per token) and steady_optima.csv (the
    energy-optimal clock per phase, and whether it stands apart from the top clock by more than their
    intervals). Method: docs/report.md.

    Each JOB is a job id on gpuprofd, a file holding the output of `gpuprof run --json` or
    `gpuprof show --json` for an llm job, or the .parquet or .csv table of `gpuprof study gather` (no
    daemon needed then). Several JOBs make one report, their
    requests side by side (a `job` column says whose): run the same spec with `llm.engine: eager` and
    `llm.engine: compiled` to compare engines as clocks are compared.

    \b
    Examples:
      gpuprof report 3f2a9c                     writes report-3f2a9c/
      gpuprof report 3f2a9c -o study/ --json    prints the files written as JSON
      gpuprof run sweep.yaml --json > sweep.json && gpuprof report sweep.json -o sweep/
      gpuprof report eager.json compiled.json -o engines/
      gpuprof report study.parquet -o study-report/
    """
    if len(job_ids) > MAX_REPORT_JOBS:
        raise click.UsageError(f"at most {MAX_REPORT_JOBS} jobs make one report, got {len(job_ids)}")
    jobs = [_job_and_requests(job_id, endpoint) for job_id in job_ids]
    name = "+".join(str(job.get("id")) for job, _ in jobs)
    write_job_report(jobs, directory or f"report-{name[:100]}", as_json)
