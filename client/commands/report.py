"""``gpuprof report``: an llm job's analysis as CSV tables, PNG plots and one HTML page."""

from __future__ import annotations

import click

from ..api import Client
from ..report import Report
from ..report_page import write_report
from .common import echo_json, endpoint_option, json_option


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "-o", "--output", "directory", default=None, help="Directory for the files (default: report-JOB)."
)
@json_option
@endpoint_option
def report(job_id: str, directory: str | None, as_json: bool, endpoint: str) -> None:
    """Analyse a finished llm JOB: energy, latency, power and EDP against SM clock per model x task x batch
    size, the energy- and EDP-optimal clocks, savings against the default clock within latency budgets,
    the Pareto frontier of energy against latency, and Pearson and Spearman correlations (95% intervals)
    of each input feature with energy and latency. Flagged points (the GPU ran below the clock asked)
    are left out of optima. Writes clocks.csv, optima.csv, pareto.csv, correlations.csv, a PNG per
    plot and report.html (self-contained). Method: docs/report.md.

    \b
    Examples:
      gpuprof report 3f2a9c                     writes report-3f2a9c/
      gpuprof report 3f2a9c -o study/ --json    prints the files written as JSON
    """
    with Client(endpoint) as client:
        job = client.job(job_id)
        if not ((job.get("result") or {}).get("llm") or {}).get("requests"):
            raise click.UsageError(f"job {job_id} has no requests table: only a finished llm job has one")
        analysis = Report.from_job(job, client.requests(job_id))
    written = write_report(analysis, directory or f"report-{job_id}")
    if as_json:
        echo_json(written)
        return
    optima = analysis.optima
    for row in optima.itertuples():
        saving = getattr(row, "saving_at_1_1x_latency", None)
        line = (
            f"{row.model} / {row.task} / batch {row.batch_size}: "
            f"energy-optimal {row.energy_optimal_mhz} MHz, "
            f"EDP-optimal {row.edp_optimal_mhz} MHz"
        )
        if saving is not None and saving == saving:
            line += f", {saving:.1%} less energy than {row.default_clock_mhz:g} MHz within 1.1x its latency"
        click.echo(line)
    if analysis.simulated:
        click.echo("(SIMULATED: from gpuprof's simulated GPU, not a real one)")
    click.echo(f"wrote {len(written['tables'])} tables, {len(written['plots'])} plots, {written['page'][0]}")
