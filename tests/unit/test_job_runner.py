"""A job's records in the runner: the driver's power samples of its GPU go with its samples and counter
readings into its saved trace and into every estimate of its energy (result, requests, energy queries)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgpack
import numpy as np
import pytest

from gpuprof.daemon.analysis import requests, results
from gpuprof.daemon.markers import Marker
from gpuprof.daemon.server.daemon import Daemon
from gpuprof.daemon.server.jobs import JobRunner, RunningJob
from gpuprof.daemon.server.store import JobRecord, JobStore
from gpuprof.sampler.library import NvmlLibrary
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE

MS = 1_000_000
T0 = 5_000 * MS
GPU = 1


def records(gpus: tuple[int, ...] = (0, GPU), seconds: float = 1.0) -> tuple[np.ndarray, ...]:
    """Samples at 1 kHz, counter readings at 10 Hz and driver power samples every 20 ms of 250 W on each
    GPU."""
    n, reads, driven = int(seconds * 1000), int(seconds * 10), int(seconds * 50)
    samples = np.zeros(n * len(gpus), SAMPLE_DTYPE)
    samples["t_ns"] = np.repeat(T0 + np.arange(n) * MS, len(gpus))
    samples["gpu"] = np.tile(gpus, n)
    samples["power_mw"] = 250_000
    energy = np.zeros(reads * len(gpus), ENERGY_DTYPE)
    at_ms = np.repeat(np.arange(reads) * 100, len(gpus))
    energy["t_start_ns"], energy["t_end_ns"] = T0 + at_ms * MS - 2 * MS, T0 + at_ms * MS + 2 * MS
    energy["energy_mj"] = 1_000_000 + 250 * at_ms
    energy["gpu"] = np.tile(gpus, reads)
    driver_power = np.zeros(driven * len(gpus), DRIVER_POWER_DTYPE)
    driver_power["t_ns"] = np.tile(T0 + np.arange(driven) * 20 * MS, len(gpus))
    driver_power["gpu"] = np.repeat(gpus, driven)
    driver_power["power_mw"] = 250_000 + 7 * driver_power["gpu"].astype(np.uint32)  # each GPU its own
    return samples, energy, driver_power


@dataclass
class FakeProcess:
    returncode: int = 0

    def poll(self) -> int:
        return self.returncode


@dataclass
class FakeChannel:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.sent.append(msgpack.unpackb(data))

    def close(self) -> None:
        pass


@pytest.fixture
def fused_with(fused_driver_power: Callable[..., list[np.ndarray | None]]) -> list[np.ndarray | None]:
    """The driver power each FusedEnergy of the daemon's analysis is built with, in order."""
    return fused_driver_power(results, requests)


def running_job(tmp_path: Path, workload: str) -> tuple[JobRunner, RunningJob]:
    store = JobStore(tmp_path / "state")
    spec = {"name": "job", "workload": workload, "gpu": GPU}
    record = store.create(spec, "", "ada", 1000, GPU, simulated=True)
    store.set_state(record.id, "running")
    runner = JobRunner(store, tmp_path, NvmlLibrary("simulated", simulated=True), lambda *_: None)
    job = RunningJob(
        record=cast(JobRecord, store.get(record.id)),
        process=cast(Any, FakeProcess()),
        channel=cast(Any, FakeChannel()),
        reader=cast(Any, None),
        started_mono_ns=T0,
        deadline_mono_ns=T0 + 60_000 * MS,
        exited_ns=T0 + 1_000 * MS,
    )
    runner.running[GPU] = job
    return runner, job


def own(driver_power: np.ndarray) -> np.ndarray:
    return driver_power[driver_power["gpu"] == GPU]


@pytest.mark.parametrize("workload", ["burn", "llm"])
def test_a_finished_jobs_trace_and_result_have_its_gpus_driver_power(
    tmp_path: Path, workload: str, fused_with: list[np.ndarray | None]
) -> None:
    runner, job = running_job(tmp_path, workload)
    samples, energy, driver_power = records()
    half = driver_power["t_ns"] < T0 + 500 * MS
    runner.feed(samples, energy, driver_power[half])
    runner.feed(samples[:0], energy[:0], driver_power[~half])  # as drained, in pieces
    runner._finish(GPU, job)

    saved = runner.store.load_driver_power(job.record.id)
    assert saved["t_ns"].tolist() == own(driver_power)["t_ns"].tolist()
    assert saved["gpu"].tolist() == [GPU] * own(driver_power).size and set(saved["power_w"]) == {250.007}
    record = runner.store.get(job.record.id)
    assert record is not None and record.state == "succeeded"
    assert record.result is not None and record.result["energy_counter_j"] is not None
    assert len(fused_with) == (1 if workload == "burn" else 2)  # the job's result; an llm job's requests
    for given in fused_with:
        assert given is not None and np.array_equal(given, own(driver_power))


def test_an_energy_query_is_answered_with_the_driver_power(
    tmp_path: Path, fused_with: list[np.ndarray | None]
) -> None:
    runner, job = running_job(tmp_path, "burn")
    samples, energy, driver_power = records()
    runner.feed(samples, energy, driver_power)
    job.markers += [
        Marker("begin", "point", T0 + 100 * MS, {"id": "p0"}),
        Marker("end", "point", T0 + 900 * MS, {"id": "p0", "ops": 8}),
    ]
    runner._take_marker(job, Marker("event", "energy_query", T0 + 950 * MS, {"point": "p0"}))
    (answer,) = cast(FakeChannel, job.channel).sent
    assert answer["ok"] and answer["mean_j"] == pytest.approx(250 * 0.8 / 8, rel=0.05)
    (given,) = fused_with
    assert given is not None and np.array_equal(given, own(driver_power))


def test_the_daemon_feeds_its_jobs_what_the_sampler_drained() -> None:
    samples, energy, driver_power = records()
    fed: list[tuple[np.ndarray, ...]] = []
    daemon = SimpleNamespace(
        sampler=SimpleNamespace(drain=lambda: (samples, energy), drain_driver_power=lambda: driver_power),
        history=SimpleNamespace(append=lambda *_: None),
        runner=SimpleNamespace(feed=lambda *drained: fed.append(drained)),
        gpus=[],
    )
    Daemon._drain_and_publish(cast(Daemon, daemon))
    ((_, _, given),) = fed
    assert given is driver_power
