"""gpuprofd's metrics in a real Prometheus: the exporter scraped every second, its series queried back.

Needs Debian's ``prometheus`` (``.ci/run`` installs it); skipped where it is missing. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_daemon import FINAL, burn, wait_state

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="needs Prometheus (apt-get install prometheus)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # 127.0.0.1 only
        return bytes(response.read())


def wait_until(what: str, probe: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


SLURM_JOB = "41"


class Stack:
    """A simulated gpuprofd, `gpuprof exporter` and Prometheus scraping it every second."""

    def __init__(self, root: Path) -> None:
        slurm = root / "slurm"  # one Slurm job of this test's user on the node: the prolog's record of it
        slurm.mkdir(mode=0o755)
        record = {"version": 1, "slurm_job_id": SLURM_JOB, "uid": os.getuid(), "gpus": [{"index": 0}]}
        (slurm / f"{SLURM_JOB}.json").write_text(json.dumps(record))
        self.daemon = DaemonProcess(root, f'slurm_jobs_dir = "{slurm}"\n').start()
        self.exporter_port, self.prometheus_port = free_port(), free_port()
        self.exporter = subprocess.Popen(
            [sys.executable, "-m", "gpuprof.client.cli", "exporter", "--listen",
             f"127.0.0.1:{self.exporter_port}", "--endpoint", self.daemon.endpoint],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        config = root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: gpuprof\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.exporter_port}']}}]\n"
        )
        assert PROMETHEUS is not None
        self.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def metrics(self) -> str:
        return get(f"http://127.0.0.1:{self.exporter_port}/metrics").decode()

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        answer = json.loads(get(url))
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def close(self) -> None:
        for process in (self.prometheus, self.exporter):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.daemon.kill()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_the_exporter_serves_each_gpu_and_no_user_names(stack: Stack) -> None:
    text = wait_until(
        "the exporter", lambda: "gpuprof_gpu_power_watts" in stack.metrics() and stack.metrics()
    )
    expected = (
        "gpuprof_up 1.0", "gpuprof_gpu_energy_joules_total{", "gpuprof_gpu_sm_clock_hertz{",
        'gpuprof_gpu_clock_event_active{gpu="0"', 'gpuprof_jobs_queued{gpu="0"} 0.0', "gpuprof_build_info{",
        'gpuprof_sampler_deadline_misses_total{cause="nvml_read"}',
    )  # fmt: skip
    for name in expected:
        assert name in text, name
    assert 'simulated="true"' in text


def test_prometheus_charges_a_job_and_its_slurm_job_the_energy_gpuprof_reports(stack: Stack) -> None:
    client = RawClient(stack.daemon.endpoint)
    try:
        reply = client.request("submit", {"spec": burn(2.0), "slurm_job_id": SLURM_JOB})
        assert reply.ok and reply.body["job"]["slurm_job_id"] == SLURM_JOB, reply
        job_id = reply.body["job"]["id"]
        done = wait_state(client, job_id, FINAL, timeout_s=60)
    finally:
        client.close()
    assert done["state"] == "succeeded", done.get("reason")
    result = done["result"]
    series = f'gpuprof_job_energy_joules_total{{job_id="{job_id}"}}'

    def final() -> float | None:
        found = stack.query(f"max_over_time({series}[10m])")
        ended = stack.query(f'{series} unless on() gpuprof_gpu_job_info{{job_id="{job_id}"}}')
        return float(found[0]["value"][1]) if found and ended else None

    joules = wait_until("Prometheus to scrape the job's final energy", final, timeout_s=60)
    # The counter's increase over the job, against the result's fused figure: they differ by the parts
    # of the counter's update periods at the job's edges, within the figure's bound and one update each.
    reported, bound = result["energy_counter_j"], result["energy_counter_uncertainty_j"]
    assert abs(joules - reported) <= bound + 2 * 0.1 * result["mean_power_w"], (joules, reported, bound)
    # Its Slurm job is charged the same, as the dashboard's per-Slurm-job panel sums it.
    charged = f'max_over_time(gpuprof_job_energy_joules_total{{slurm_job_id="{SLURM_JOB}"}}[10m])'
    per_slurm = stack.query(f"sum by (slurm_job_id) ({charged})")
    assert [row["metric"] for row in per_slurm] == [{"slurm_job_id": SLURM_JOB}]
    assert float(per_slurm[0]["value"][1]) == pytest.approx(joules)
    power = wait_until("power in Prometheus", lambda: stack.query('gpuprof_gpu_power_watts{gpu="0"}'))
    assert float(power[0]["value"][1]) > 0
    assert stack.query("gpuprof_up")[0]["value"][1] == "1"
