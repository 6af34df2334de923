"""gpuprof.Monitor in this process and a gpuprofd job agree on the same work: both sample one simulated GPU
(the state file every process shares, $GPUPROF_SIM_STATE), and the Monitor measures the interval of the
job's ``measure`` window (CLOCK_MONOTONIC ns, the clock of both)."""

from __future__ import annotations

from pathlib import Path

from daemon_harness import DaemonProcess, RawClient
from test_daemon import FINAL, burn, submit, wait_state

from gpuprof import Monitor
from gpuprof.sampler.sim import SimulatedNvml


def test_a_monitor_and_a_job_state_the_same_energy_for_the_jobs_measure_window(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path)
    daemons.append(daemon)
    client = RawClient(daemon.start().endpoint)
    try:
        # One sampler in gpuprofd, one in this process, on the same GPU; the Monitor keeps all of the job.
        with Monitor(simulate=True, history_s=60.0) as monitor:
            done = wait_state(client, submit(client, burn(1.5, period_s=0.3, duty_cycle=0.6)), FINAL, 60)
            assert done["state"] == "succeeded", done.get("reason")
            (job,) = [w for w in done["result"]["windows"] if w["name"] == "measure"]
            ours = monitor.interval("measure", job["t_start_ns"], job["t_end_ns"])
    finally:
        client.close()
        daemon.kill()
    start, end = SimulatedNvml().exact_energy_j(0, [job["t_start_ns"], job["t_end_ns"]])
    truth = end - start
    figures = ours.gpus[0]
    assert ours.simulated and figures.method == "fused"
    assert figures.energy_j is not None and figures.energy_uncertainty_j is not None
    assert ours.duration_s == job["duration_s"]
    # The two fused figures, each within the other's bound plus its own; and each covers the exact energy.
    difference = abs(figures.energy_j - job["energy_counter_j"])
    assert difference <= figures.energy_uncertainty_j + job["energy_counter_uncertainty_j"], (ours, job)
    assert abs(figures.energy_j - truth) <= figures.energy_uncertainty_j
    assert abs(job["energy_counter_j"] - truth) <= job["energy_counter_uncertainty_j"]
    # Integrated power from two samplers reading the same sensor: the same readings, seen at other ticks.
    assert figures.integrated_energy_j is not None and figures.integrated_uncertainty_j is not None
    integrated_bounds = figures.integrated_uncertainty_j + job["energy_integrated_uncertainty_j"]
    assert abs(figures.integrated_energy_j - job["energy_integrated_j"]) <= integrated_bounds
    assert figures.sm_clock_mhz_median == job["sm_clock_median_mhz"]
    assert set(figures.clock_event_reasons) <= set(job["clock_event_reasons"]) | {"gpu_idle"}
