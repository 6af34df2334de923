"""``gpuprof exporter``: gpuprofd's GPUs and jobs as Prometheus metrics, served over HTTP by an unprivileged
process, so that gpuprofd itself stays off the network.

Each scrape asks gpuprofd once (its ``metrics`` request) and turns the answer into metric families
(prometheus-client's custom collector): nothing is cached, and the counters are gpuprof's own (the GPU's
energy counter; each job's energy so far), so a scrape every 15 s loses nothing between scrapes. Names
follow Prometheus's conventions (docs/metrics.md): base units (joules, watts, hertz), ``_total`` counters,
``_info`` metadata. Labels name GPUs (index, UUID) and job ids, never users or job names. The HTTP endpoint
itself asks for no credentials: whoever reaches it (by default this host's users) sees those series.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuprof.sampler.energy import CLOCK_EVENT_REASONS

from .api import Client
from .wire.errors import GpuprofError

__all__ = ["REASONS", "GpuprofCollector"]

REASONS = tuple(CLOCK_EVENT_REASONS.values())  # each a gpuprof_gpu_clock_event_active series


class GpuprofCollector(Collector):
    """Asks gpuprofd at ``endpoint`` for its metrics at every scrape (one request at a time)."""

    def __init__(self, endpoint: str, timeout_s: float = 5.0) -> None:
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._lock = threading.Lock()  # a Client is one socket: one scrape at a time

    def _ask(self) -> dict[str, Any] | None:
        with self._lock:
            try:
                with Client(self.endpoint, timeout_s=self.timeout_s) as client:
                    return dict(client.request("metrics", {}))
            except GpuprofError:  # no daemon, no key, a refusal: this scrape says gpuprof_up 0
                return None

    def collect(self) -> Iterator[Metric]:
        answer = self._ask()
        up = GaugeMetricFamily("gpuprof_up", "1 if gpuprofd answered this scrape, else 0")
        up.add_metric([], 1.0 if answer is not None else 0.0)
        yield up
        if answer is None:
            return
        simulated = str(bool(answer.get("simulated"))).lower()  # the build, every energy and power series
        build = InfoMetricFamily("gpuprof_build", "gpuprofd's version, and whether its GPUs are simulated")
        build.add_metric([], {"version": str(answer.get("daemon_version")), "simulated": simulated})
        yield build
        yield from self._gpus(answer.get("gpus") or [], simulated)
        yield from self._jobs(answer.get("jobs") or {}, simulated)
        yield from self._sampler(answer.get("sampler") or {})

    def _gpus(self, gpus: list[dict[str, Any]], simulated: str) -> Iterator[Metric]:
        labels = ["gpu", "uuid"]
        energy = CounterMetricFamily(
            "gpuprof_gpu_energy_joules",
            "The GPU's energy counter (NVML's total energy since the driver loaded)",
            labels=[*labels, "simulated"],
        )
        power = GaugeMetricFamily(
            "gpuprof_gpu_power_watts", "The GPU's power, as last read", labels=[*labels, "simulated"]
        )
        sm = GaugeMetricFamily("gpuprof_gpu_sm_clock_hertz", "The SM clock, as last read", labels=labels)
        mem = GaugeMetricFamily(
            "gpuprof_gpu_memory_clock_hertz", "The memory clock, as last read", labels=labels
        )
        reasons = GaugeMetricFamily(
            "gpuprof_gpu_clock_event_active",
            "1 while a clock-event reason holds the GPU below its top clock",
            labels=[*labels, "reason"],
        )
        job = GaugeMetricFamily(
            "gpuprof_gpu_job_info",
            "1 for the job running on the GPU",
            labels=[*labels, "job_id", "slurm_job_id"],
        )
        queued = GaugeMetricFamily("gpuprof_jobs_queued", "Jobs waiting for the GPU", labels=["gpu"])
        for gpu in gpus:
            key = [str(gpu.get("index")), str(gpu.get("uuid"))]
            if gpu.get("energy_j") is not None:
                energy.add_metric([*key, simulated], float(gpu["energy_j"]))
            if gpu.get("power_w") is not None:
                power.add_metric([*key, simulated], float(gpu["power_w"]))
            if gpu.get("sm_clock_mhz") is not None:
                sm.add_metric(key, float(gpu["sm_clock_mhz"]) * 1e6)
            if gpu.get("mem_clock_mhz") is not None:
                mem.add_metric(key, float(gpu["mem_clock_mhz"]) * 1e6)
            active = gpu.get("clock_event_reasons")
            if active is not None:
                for reason in REASONS:
                    reasons.add_metric([*key, reason], 1.0 if reason in active else 0.0)
            if gpu.get("running_job"):
                job.add_metric([*key, str(gpu["running_job"]), str(gpu.get("slurm_job_id") or "")], 1.0)
            queued.add_metric([key[0]], float(gpu.get("queued") or 0))
        yield from (energy, power, sm, mem, reasons, job, queued)

    def _jobs(self, jobs: dict[str, dict[str, Any]], simulated: str) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            "gpuprof_job_energy_joules",
            "A running or lately ended job's energy: the energy counter's increase over the job so far",
            labels=["job_id", "gpu", "slurm_job_id", "simulated"],
        )
        for job_id, job in sorted(jobs.items()):
            if job.get("energy_j") is not None:
                slurm_job_id = str(job.get("slurm_job_id") or "")
                figure = [job_id, str(job.get("gpu")), slurm_job_id, simulated]
                energy.add_metric(figure, float(job["energy_j"]))
        yield energy

    def _sampler(self, sampler: dict[str, Any]) -> Iterator[Metric]:
        misses = CounterMetricFamily(
            "gpuprof_sampler_deadline_misses", "1 kHz slots the sampler missed, by cause", labels=["cause"]
        )
        total, overrun = sampler.get("deadline_misses"), sampler.get("read_overrun_misses")
        if total is not None and overrun is not None:
            misses.add_metric(["nvml_read"], float(overrun))  # a read that took longer than its slot
            misses.add_metric(["late_wakeup"], float(max(0, total - overrun)))  # the thread woken late
        samples = CounterMetricFamily(
            "gpuprof_sampler_samples", "Samples the sampler took, every GPU together"
        )
        if sampler.get("samples") is not None:
            samples.add_metric([], float(sampler["samples"]))
        yield from (misses, samples)
