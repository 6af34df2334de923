"""``gpuprof run``: run one job start to finish, on a private gpuprofd when none is running."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from click.core import ParameterSource

from gpuprof.sampler.library import LIBRARY_ENV, driver_available
from gpuprof.sampler.trace import check_writable

from ..api import Client, configured_endpoint
from ..wire.errors import DaemonUnavailable, GpuprofError, PrivateDaemonFailed
from .common import (
    ProgramCommand,
    endpoint_option,
    env_option,
    exit_unless_succeeded,
    follow,
    job_spec_of,
    json_option,
    print_job,
)
from .export import export_job
from .report import write_job_report

REPORT_PACKAGES = ("matplotlib", "scipy")  # the report extra's

PROBE_TIMEOUT_S = 1.0
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
NO_DRIVER = "no NVIDIA driver found: using the simulated GPU"


def probe(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
    """The hello of a daemon answering at ``endpoint``, or None."""
    with Client(endpoint, timeout_s=timeout_s) as client:
        try:
            return client.hello()
        except DaemonUnavailable:
            return None


def _stop_with_parent() -> None:
    # Linux's PR_SET_PDEATHSIG: the private daemon gets SIGTERM if gpuprof run dies without stopping it.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class PrivateDaemon:
    """A gpuprofd on a temporary ipc endpoint and state directory, stopped and removed on exit."""

    def __init__(
        self, simulate: bool, startup_timeout_s: float = STARTUP_TIMEOUT_S, allow_dvfs: bool = False
    ) -> None:
        # ipc paths are limited to ~107 bytes: keep the directory short even with a long $TMPDIR
        base = None if len(tempfile.gettempdir()) < 60 else "/tmp"
        self.directory = Path(tempfile.mkdtemp(prefix="gpuprof-run-", dir=base))
        self.endpoint = f"ipc://{self.directory}/gpuprofd.sock"
        self.log_path = self.directory / "gpuprofd.log"
        self.command = [sys.executable, "-m", "gpuprof.daemon.cli", "serve", "--endpoint", self.endpoint]
        self.command += ["--state-dir", str(self.directory / "state")] + (["--simulate"] if simulate else [])
        self.command += ["--allow-dvfs"] if allow_dvfs else []
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateDaemon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 12) -> str:
        """The last lines the daemon wrote to stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def start(self) -> None:
        """Start the daemon and wait until it answers hello; raises PrivateDaemonFailed with its log."""
        with open(self.log_path, "wb") as log:
            # Its own session: Ctrl-C reaches gpuprof run, which cancels the job before stopping the daemon.
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        with Client(self.endpoint, timeout_s=0.5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise PrivateDaemonFailed(
                        f"the private gpuprofd exited with status {self.process.returncode} before it "
                        f"answered. Its output:\n{self.log_tail()}"
                    )
                try:
                    client.hello()
                    return
                except DaemonUnavailable:
                    time.sleep(0.05)  # its socket file may not exist yet: that fails at once
        raise PrivateDaemonFailed(
            f"the private gpuprofd did not answer at {self.endpoint} within {self.startup_timeout_s:g} s. "
            f"Its output:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; then remove the temporary directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def simulate_without_driver(simulate: bool) -> bool:
    """Whether to use the simulated GPU: when asked, or, saying so, when there is no NVIDIA driver (unless
    $GPUPROF_NVML_LIBRARY names a library: then its error is the user's to see)."""
    if not simulate and not os.environ.get(LIBRARY_ENV) and not driver_available():
        click.echo(NO_DRIVER, err=True)
        return True
    return simulate


def private_daemon(stack: contextlib.ExitStack, simulate: bool, allow_dvfs: bool) -> str:
    """Starts a private gpuprofd for this command (on the simulated GPU when asked or when there is no
    NVIDIA driver), stopped when ``stack`` closes; returns its endpoint."""
    simulate = simulate_without_driver(simulate)
    click.echo(f"starting a private gpuprofd{' (simulated GPU)' if simulate else ''}...", err=True)
    return str(stack.enter_context(PrivateDaemon(simulate, allow_dvfs=allow_dvfs)).endpoint)


def follow_or_cancel(handle: Any) -> dict[str, Any]:
    """Waits for the job with progress; Ctrl-C (or a SIGTERM turned into one) cancels it first."""
    try:
        return follow(handle)
    except KeyboardInterrupt:
        with contextlib.suppress(GpuprofError):
            handle.cancel()
            click.echo(f"\ncancelled job {handle.id}", err=True)
        raise


@click.command(cls=ProgramCommand)
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@env_option
@click.option("--simulate", is_flag=True, help="Use gpuprof's simulated GPU (automatic without a driver).")
@click.option(
    "--private",
    is_flag=True,
    help="Start a private gpuprofd for this run even where one answers at --endpoint.",
)
@click.option("-o", "--output", help="Also write the job's trace here (.parquet or .csv), like export.")
@click.option(
    "--allow-dvfs",
    is_flag=True,
    help="Let the private daemon apply the spec's dvfs: section (NVML needs root for clock changes).",
)
@click.option(
    "--report",
    "report_dir",
    metavar="DIR",
    help="For an llm job (or a command job that marks requests): also write its report (tables, plots, "
    "one HTML page) into DIR, like report.",
)
@json_option
@endpoint_option
def run(
    spec: str | None,
    env: tuple[str, ...],
    simulate: bool,
    private: bool,
    output: str | None,
    allow_dvfs: bool,
    report_dir: str | None,
    as_json: bool,
    endpoint: str,
) -> None:
    """Run the job spec SPEC, or the program after --, and print its result: the one command to try gpuprof.

    After --, any program is a command job (docs/jobspec.md): it runs as you, in this directory, while
    gpuprof measures the GPU; it may mark its own windows, requests and clock-sweep points with
    gpuprof.markers. A SPEC given with it sets the rest (timeout_s, dvfs, ...).

    Uses the gpuprofd at --endpoint (or $GPUPROF_ENDPOINT) when one answers, and says so; otherwise, or
    with --private, starts a private one for this run (on the simulated GPU when asked or when there is
    no NVIDIA driver) and stops it afterwards. --allow-dvfs applies to a private one only.
    Ctrl-C cancels the job. The exit status is 12 when the job did not succeed (a command's own exit
    status is in the reason).

    \b
    Examples:
      gpuprof run examples/burn.yaml
      gpuprof run examples/burn.yaml --simulate --json
      gpuprof run examples/burn.yaml -o burn.parquet
      gpuprof run examples/sweep-sim.yaml --allow-dvfs --report sweep-report/
      gpuprof run examples/sweep-sim.yaml --private --simulate --allow-dvfs      whatever $GPUPROF_ENDPOINT
      gpuprof run -- python3 bench.py --n 64
      gpuprof run examples/command-sweep.yaml --allow-dvfs -- python3 bench.py
    """
    job_spec = job_spec_of(spec, env)  # a bad spec or output fails here, before any daemon starts
    if output is not None:
        check_writable(output)
    if report_dir is not None and job_spec.workload not in ("llm", "command"):
        raise click.UsageError(f"--report needs an llm or a command job; {spec} is a {job_spec.workload} job")
    if report_dir is not None:  # said now, not after the job has run
        missing = [name for name in REPORT_PACKAGES if find_spec(name) is None]
        if missing:
            raise click.UsageError(f"--report needs {' and '.join(missing)}: pip install 'gpuprof[report]'")
    hello = None if private else probe(endpoint)
    if hello is not None and simulate and not hello.get("simulated"):
        click.echo(f"the gpuprofd at {endpoint} uses real GPUs: starting a simulated one", err=True)
        hello = None
    if hello is not None:  # which daemon, and why: its configuration, not this command's flags, rules it
        source = click.get_current_context().get_parameter_source("endpoint")
        configured = configured_endpoint()[1]
        why = f"from {configured}" if configured is not None else "the node's"
        if source == ParameterSource.ENVIRONMENT:
            why = "from $GPUPROF_ENDPOINT"
        elif source == ParameterSource.COMMANDLINE:
            why = "from --endpoint"
        click.echo(f"using the gpuprofd at {endpoint} ({why}; --private starts one for this run)", err=True)
        if allow_dvfs:
            click.echo(
                "--allow-dvfs applies to a private gpuprofd only: this one allows clock changes as its "
                "gpuprofd.toml says (allow_dvfs)",
                err=True,
            )
    with contextlib.ExitStack() as stack:
        if hello is None:
            endpoint = private_daemon(stack, simulate, allow_dvfs)
        client = stack.enter_context(Client(endpoint))
        handle = client.submit(job_spec)
        click.echo(f"job {handle.id} submitted to gpuprofd at {endpoint}", err=True)
        job = follow_or_cancel(handle)
        if output is not None:
            written = export_job(client, handle.id, output)
            files = [written[key] for key in ("samples", "energy", "driver_power") if key in written]
            click.echo(f"wrote {', '.join(files)}", err=True)
        reporting = report_dir is not None and job["state"] == "succeeded"
        requests = client.requests(handle.id) if reporting else None  # fetched once for both
        print_job(job, as_json, client, requests)
        if report_dir is not None and requests is not None:
            # Now, while a private daemon still holds the job: it goes with the daemon.
            write_job_report([(job, requests)], report_dir, as_json=False, err=as_json)
    exit_unless_succeeded(job)
