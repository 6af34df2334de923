"""One gpuprofd on an 8-GPU simulated node: jobs on different GPUs at once, kept apart in every figure.

Each test starts its own ``gpuprofd serve --simulate`` (tests/integration/daemon_harness.py) over eight
simulated H100s, and checks what a user of one GPU relies on while the others are busy: that their jobs run
at the same time, that each job's trace, energy and clocks are its own GPU's, and that a GPU whose NVML calls
fail costs only its own jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import start
from test_daemon import FINAL, burn, fetch_trace, submit, wait_for, wait_state

from gpuprof.client.cli import main
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

GPUS = 8
DUTY_CYCLE = {gpu: 0.2 + 0.1 * gpu for gpu in range(GPUS)}  # neighbours differ by 10 % of busy time
LOST = 5
GPU_IS_LOST = 15  # NVML_ERROR_GPU_IS_LOST
LOCKED_MHZ, OTHER_LOCKED_MHZ = 1410, 1005  # two of the simulated H100's supported SM clocks
# The simulated H100 left to itself (docs/simulated-gpu.md): 345 MHz idle, 1725 MHz busy under its 700 W cap.
UNLOCKED_MHZ = {345, 1725}
STALE_COUNTER_J = 100.0  # a counter reading is up to 100 ms old: at most 100 J behind at 1 kW


@pytest.fixture(autouse=True)
def eight_gpus() -> None:
    """Eight default simulated H100s; control calls allowed without root, so DVFS works as any user."""
    SimulatedNvml().configure(
        SimConfig(gpus=tuple(GpuSpec() for _ in range(GPUS)), allow_unprivileged_control=True)
    )


def measured(record: dict[str, Any]) -> dict[str, Any]:
    """A burn job's ``measure`` window: its whole on/off pattern, warmup and worker start left out."""
    (window,) = [w for w in record["result"]["windows"] if w["name"] == "measure"]
    return dict(window)


def within(columns: dict[str, list[Any]], name: str, t_start_ns: int, t_end_ns: int) -> list[Any]:
    """The values of trace column ``name`` sampled in [t_start_ns, t_end_ns]."""
    times = columns["t_ns"]
    return [v for t, v in zip(times, columns[name], strict=True) if t_start_ns <= t <= t_end_ns]


def locks() -> dict[int, int | None]:
    """The SM clock each locked simulated GPU is held to, by GPU."""
    return {s.index: s.locked_sm_clock_mhz for s in SimulatedNvml().status() if s.locked_sm_clock_range_mhz}


def newest_power(client: RawClient, gpu: int) -> float | None:
    """The power of ``gpu``'s newest sample in the daemon's history (None: that read failed)."""
    history = client.request("history", {"gpu": gpu, "seconds": 1, "max_points": 1})
    assert history.ok, history
    return history.body["power_w"][-1] if history.body["power_w"] else None


def test_eight_jobs_run_at_once_and_each_measures_only_its_own_gpu(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path).endpoint)
    before = SimulatedNvml().status()
    ids = {gpu: submit(client, burn(2.0, duty_cycle=DUTY_CYCLE[gpu], gpu=gpu)) for gpu in range(GPUS)}

    def all_running() -> dict[str, str] | None:
        running: dict[str, str] = client.request("stats").body["jobs"]["running"]
        return running if len(running) == GPUS else None

    assert wait_for(all_running, "a job running on every GPU") == {str(g): i for g, i in ids.items()}
    records = {gpu: wait_state(client, job_id, FINAL, timeout_s=30) for gpu, job_id in ids.items()}
    after = SimulatedNvml().status()

    assert {gpu: r["state"] for gpu, r in records.items()} == dict.fromkeys(range(GPUS), "succeeded")
    assert max(r["started_ns"] for r in records.values()) < min(r["finished_ns"] for r in records.values())
    windows = {gpu: measured(r) for gpu, r in records.items()}
    assert max(w["t_start_ns"] for w in windows.values()) < min(w["t_end_ns"] for w in windows.values())

    for gpu, record in records.items():
        result = record["result"]
        assert record["gpu"] == result["gpu"] == gpu
        samples, _ = fetch_trace(client, ids[gpu])
        assert set(samples["gpu"]) == {gpu} and None not in samples["power_w"]
        # The trace is this GPU's: busy (utilization 100) for its own job's share of the time, nearer to it
        # than to any neighbour's (10% apart; a starved worker turns its load on and off a little late).
        util = within(samples, "util_pct", windows[gpu]["t_start_ns"], windows[gpu]["t_end_ns"])
        assert util.count(100) / len(util) == pytest.approx(DUTY_CYCLE[gpu], abs=0.045), gpu
        energy, _ = fetch_trace(client, ids[gpu], table="energy")
        assert set(energy["gpu"]) == {gpu} and set(energy["nvml_return"]) == {0}
        # Its counter readings are this GPU's counter (each simulated GPU's starts 252 kJ from the next).
        low_j, high_j = before[gpu].energy_j - STALE_COUNTER_J, after[gpu].energy_j
        assert all(low_j <= mj / 1000 <= high_j for mj in energy["energy_mj"]), gpu
        # Both energy figures are what the GPU itself consumed over the job: the counter's within its
        # bound, integrated power's within two of its bounds (a standard error: docs/measurement.md).
        start_j, end_j = SimulatedNvml().exact_energy_j(gpu, [result["t_start_ns"], result["t_end_ns"]])
        truth_j = end_j - start_j
        counter_error_j = abs(result["energy_counter_j"] - truth_j)
        assert counter_error_j <= result["energy_counter_uncertainty_j"], (gpu, truth_j, result)
        integrated_error_j = abs(result["energy_integrated_j"] - truth_j)
        assert integrated_error_j <= 2 * result["energy_integrated_uncertainty_j"], (gpu, truth_j, result)
    # Mean power over each job's measured run rises with the duty cycle. Not over the whole job, nor energy
    # alone: on a loaded 2-core machine eight workers start at different speeds, so jobs' idle starts and
    # windows differ by more than the 10% of busy time that sets neighbours apart. Neighbours' order holds
    # within their bounds (a starved sampler's are wide); GPUs two apart (20% of busy time) are in order.
    seconds = [windows[gpu]["duration_s"] for gpu in range(GPUS)]
    powers = [windows[gpu]["energy_counter_j"] / seconds[gpu] for gpu in range(GPUS)]
    bounds = [windows[gpu]["energy_counter_uncertainty_j"] / seconds[gpu] for gpu in range(GPUS)]
    assert all(low < high for low, high in zip(powers, powers[2:], strict=False)), powers
    overlap = [powers[g] - bounds[g] < powers[g + 1] + bounds[g + 1] for g in range(GPUS - 1)]
    assert all(overlap), (powers, bounds)
    client.close()


def test_a_clock_lock_changes_its_own_gpu_and_no_other(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    daemon = start(daemons, tmp_path, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    locked = {3: LOCKED_MHZ, 6: OTHER_LOCKED_MHZ}
    ids = {gpu: submit(client, burn(2.5, gpu=gpu)) for gpu in range(GPUS) if gpu not in locked}
    ids[6] = submit(client, burn(2.5, gpu=6, dvfs={"sm_clocks": OTHER_LOCKED_MHZ}))
    ids[3] = submit(client, burn(1.0, gpu=3, dvfs={"sm_clocks": LOCKED_MHZ}))  # ends while 6 stays locked
    assert wait_for(lambda: locks() == locked, "GPUs 3 and 6 locked, no other")
    records = {gpu: wait_state(client, job_id, FINAL, timeout_s=30) for gpu, job_id in ids.items()}
    assert {gpu: r["state"] for gpu, r in records.items()} == dict.fromkeys(range(GPUS), "succeeded")

    assert locks() == {}
    assert json.loads((tmp_path / "state" / "clocks.json").read_text()) == {}
    calls = SimulatedNvml().control_log()
    assert sorted((c.gpu, c.call, c.args, c.result) for c in calls) == [
        (3, "nvmlDeviceResetGpuLockedClocks", (), 0),
        (3, "nvmlDeviceSetGpuLockedClocks", (LOCKED_MHZ, LOCKED_MHZ), 0),
        (6, "nvmlDeviceResetGpuLockedClocks", (), 0),
        (6, "nvmlDeviceSetGpuLockedClocks", (OTHER_LOCKED_MHZ, OTHER_LOCKED_MHZ), 0),
    ]
    (reset_3,) = [c for c in calls if c.gpu == 3 and c.call == "nvmlDeviceResetGpuLockedClocks"]
    for gpu, record in records.items():
        samples, _ = fetch_trace(client, ids[gpu])
        window = measured(record)
        clocks = set(within(samples, "sm_clock_mhz", window["t_start_ns"], window["t_end_ns"]))
        assert clocks == ({locked[gpu]} if gpu in locked else UNLOCKED_MHZ), gpu
        assert record["result"].get("dvfs", {}).get("set", {}).get("sm_clock_mhz") == locked.get(gpu)
    # GPU 6 ran at its own lock through its whole measured run, after GPU 3's lock was reset.
    assert reset_3.time_ns < measured(records[6])["t_end_ns"]
    client.close()


def test_a_failing_gpu_fails_its_own_job_and_the_others_keep_being_sampled(
    tmp_path: Path, daemons: list[DaemonProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start(daemons, tmp_path)
    client = RawClient(daemon.endpoint)
    sim = SimulatedNvml()
    sim.set_failure(LOST, GPU_IS_LOST)
    ids = {gpu: submit(client, burn(1.5, gpu=gpu)) for gpu in range(GPUS)}
    records = {gpu: wait_state(client, job_id, FINAL, timeout_s=30) for gpu, job_id in ids.items()}

    lost = records.pop(LOST)
    assert lost["state"] == "failed", lost
    assert lost["reason"] == (
        f"GPU {LOST} could not be read during the job (NVML_ERROR_GPU_IS_LOST): its energy is unknown"
    )
    assert lost["result"]["energy_counter_j"] is None and lost["result"]["energy_integrated_j"] is None
    assert {gpu: r["state"] for gpu, r in records.items()} == {g: "succeeded" for g in records}
    assert all((r["result"]["energy_counter_j"] or 0) > 0 for r in records.values()), records

    # Every tick still read every GPU: over the span all eight jobs ran, each trace holds as many samples,
    # GPU 5's all missing (a failed read is a missing value, never a zero), the others' all present.
    # "As many": each read is stamped when it is made, so the one tick that straddles either edge of the
    # span counts for the GPUs read on the inner side of that edge only: one sample per edge at most.
    t_start_ns = max(r["result"]["t_start_ns"] for r in [*records.values(), lost])
    t_end_ns = min(r["result"]["t_end_ns"] for r in [*records.values(), lost])
    powers = {gpu: within(fetch_trace(client, ids[gpu])[0], "power_w", t_start_ns, t_end_ns) for gpu in ids}
    counts = {gpu: len(power) for gpu, power in powers.items()}
    assert max(counts.values()) - min(counts.values()) <= 2 and min(counts.values()) > 0, counts
    assert set(powers.pop(LOST)) == {None}
    assert all(None not in power for power in powers.values())

    errors = client.request("stats").body["sampler"]["errors"]
    assert list(errors[str(LOST)]) == ["NVML_ERROR_GPU_IS_LOST"]
    assert not any(errors[str(gpu)] for gpu in records)
    assert main(["status", "--endpoint", daemon.endpoint]) == 0
    status = capsys.readouterr().out
    assert f"nvml       GPU {LOST}: NVML_ERROR_GPU_IS_LOST x" in status and "GPU 0: NVML" not in status

    # Healed, it is sampled again (same handle, no restart) and runs jobs.
    sim.set_failure(LOST, None)
    assert wait_for(lambda: newest_power(client, LOST), "GPU 5 read again")
    lost_reads = client.request("stats").body["sampler"]["errors"][str(LOST)]["NVML_ERROR_GPU_IS_LOST"]
    healed = wait_state(client, submit(client, burn(1.0, gpu=LOST)), FINAL)
    assert healed["state"] == "succeeded" and healed["result"]["energy_counter_j"] > 0, healed
    errors = client.request("stats").body["sampler"]["errors"]
    assert errors[str(LOST)] == {"NVML_ERROR_GPU_IS_LOST": lost_reads}  # none since it healed
    client.close()


def test_a_gpu_lost_before_the_daemon_starts_is_left_out_and_the_rest_served(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    SimulatedNvml().set_failure(LOST, GPU_IS_LOST)
    daemon = start(daemons, tmp_path)
    client = RawClient(daemon.endpoint)
    served = [g for g in range(GPUS) if g != LOST]
    assert [g["index"] for g in client.request("gpus").body["gpus"]] == served
    reply = client.request("submit", {"spec": burn(0.5, gpu=LOST)})
    assert not reply.ok and reply.code == "invalid_spec"
    assert (
        f"gpu: GPU {LOST} is not served here (NVML could not read it when gpuprofd started: "
        f"NVML_ERROR_GPU_IS_LOST); GPUs: {served}"
    ) in str(reply.message)
    assert wait_state(client, submit(client, burn(0.5, gpu=7)), FINAL)["state"] == "succeeded"
    assert f"GPU {LOST} not served: NVML cannot read it (NVML_ERROR_GPU_IS_LOST)" in daemon.log.read_text()
    client.close()


def test_a_gpu_lost_under_a_clock_lock_leaves_the_daemon_serving_and_is_unlocked_once_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = start(daemons, tmp_path, "allow_dvfs = true\n")
    client = RawClient(daemon.endpoint)
    sim = SimulatedNvml()
    locked_job = submit(client, burn(1.5, gpu=LOST, dvfs={"sm_clocks": LOCKED_MHZ}))
    neighbour = submit(client, burn(1.5, gpu=2))
    assert wait_for(lambda: locks() == {LOST: LOCKED_MHZ}, "GPU 5 locked")
    sim.set_failure(LOST, GPU_IS_LOST)
    wait_state(client, locked_job, FINAL)
    assert wait_state(client, neighbour, FINAL)["state"] == "succeeded"
    assert daemon.process is not None and daemon.process.poll() is None
    # Its reset could not reach the lost GPU: the lock stays, journaled, and holds up its next job.
    assert locks() == {LOST: LOCKED_MHZ}
    journal = json.loads((tmp_path / "state" / "clocks.json").read_text())
    assert [entry["index"] for entry in journal.values()] == [LOST]
    assert f"GPU {LOST}: clocks not reset" in daemon.log.read_text()
    held = wait_state(client, submit(client, burn(0.5, gpu=LOST)), FINAL)
    assert held["state"] == "failed"
    assert f"GPU {LOST} keeps clock changes of an earlier job, not put back: " in held["reason"]

    sim.set_failure(LOST, None)
    back = wait_state(client, submit(client, burn(0.5, gpu=LOST)), FINAL)
    assert back["state"] == "succeeded", back
    samples, _ = fetch_trace(client, back["id"])
    window = measured(back)
    assert set(within(samples, "sm_clock_mhz", window["t_start_ns"], window["t_end_ns"])) == UNLOCKED_MHZ
    assert locks() == {} and json.loads((tmp_path / "state" / "clocks.json").read_text()) == {}
    assert all(c.gpu == LOST for c in sim.control_log())
    client.close()
