"""The Prometheus exporter's series from a metrics answer: names, units, labels; the dashboard's queries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from gpuprof.client.exporter import GpuprofCollector

ROOT = Path(__file__).resolve().parents[2]
ANSWER: dict[str, Any] = {
    "daemon_version": "0.1.0",
    "simulated": False,
    "uptime_s": 10.0,
    "gpus": [
        {"index": 0, "uuid": "GPU-a", "name": "H100", "energy_j": 1025.5, "power_w": 250.5,
         "sm_clock_mhz": 1410, "mem_clock_mhz": 2619, "clock_event_reasons": ["sw_power_cap"],
         "running_job": "j1", "slurm_job_id": "41", "queued": 2},
        {"index": 1, "uuid": "GPU-b", "name": "H100", "energy_j": None, "power_w": None, "sm_clock_mhz": None,
         "mem_clock_mhz": None, "clock_event_reasons": None, "running_job": None, "queued": 0},
    ],
    "jobs": {"j1": {"gpu": 0, "energy_j": 12.5, "running": True, "slurm_job_id": "41"},
             "j0": {"gpu": 1, "energy_j": None, "running": False}},
    "sampler": {"samples": 5000, "ticks": 5000, "deadline_misses": 7, "read_overrun_misses": 5,
                "energy_reads": 90},
}  # fmt: skip


def scrape(answer: dict[str, Any] | None) -> str:
    collector = GpuprofCollector("ipc:///nowhere")
    collector._ask = lambda: answer  # type: ignore[method-assign]
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_each_gpu_is_in_base_units_and_a_gpu_not_read_has_no_made_up_values() -> None:
    text = scrape(ANSWER)
    # the figures say whether they are simulated, so that no query mixes a simulated node with real ones
    assert 'gpuprof_gpu_energy_joules_total{gpu="0",simulated="false",uuid="GPU-a"} 1025.5' in text
    assert 'gpuprof_gpu_power_watts{gpu="0",simulated="false",uuid="GPU-a"} 250.5' in text
    assert 'gpuprof_gpu_sm_clock_hertz{gpu="0",uuid="GPU-a"} 1.41e+09' in text
    assert 'gpuprof_gpu_clock_event_active{gpu="0",reason="sw_power_cap",uuid="GPU-a"} 1.0' in text
    assert 'gpuprof_gpu_clock_event_active{gpu="0",reason="gpu_idle",uuid="GPU-a"} 0.0' in text
    assert 'gpuprof_gpu_job_info{gpu="0",job_id="j1",slurm_job_id="41",uuid="GPU-a"} 1.0' in text
    assert (
        'gpuprof_job_energy_joules_total{gpu="0",job_id="j1",simulated="false",slurm_job_id="41"} 12.5'
        in text
    )
    assert 'gpuprof_jobs_queued{gpu="0"} 2.0' in text
    assert 'gpuprof_sampler_deadline_misses_total{cause="nvml_read"} 5.0' in text
    assert 'gpuprof_sampler_deadline_misses_total{cause="late_wakeup"} 2.0' in text
    assert 'uuid="GPU-b"} ' not in text  # GPU 1 read nothing: no series of its figures
    assert "j0" not in text and "gpuprof_up 1.0" in text


def test_a_daemon_that_does_not_answer_is_gpuprof_up_0_and_nothing_else() -> None:
    text = scrape(None)
    assert "gpuprof_up 0.0" in text and "gpuprof_gpu_" not in text


def test_the_dashboard_queries_only_series_the_exporter_serves() -> None:
    served = set(re.findall(r"^(gpuprof_[a-z_]+)", scrape(ANSWER), re.MULTILINE))
    dashboard = json.loads((ROOT / "dashboards" / "gpuprof.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"gpuprof_[a-z_]+", query)}
    assert used and used <= served, used - served
