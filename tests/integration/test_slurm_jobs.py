"""gpuprof's Slurm prolog and epilog on a real one-node cluster of two GPUs (slurm_cluster.py) and a
simulated gpuprofd: a gpuprof job submitted inside a Slurm job is attributed to it and runs on the GPU
Slurm gave it (its spec's gpu 0 is that job's first GPU), ``scancel`` of the Slurm job cancels it, and the
epilog says what the Slurm job cost, with slurmdbd in its AdminComment (docs/slurm.md)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, RawClient
from slurm_cluster import SlurmCluster, missing
from test_daemon import wait_for

from gpuprof.client.slurm import parse_comment
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimulatedNvml

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # for slurmd and the prolog or epilog it runs
BURN = "workload: burn\ntimeout_s: 300\nburn:\n  seconds: 240\n  warmup_s: 0\n"


def wrapper(path: Path, script: str, env: dict[str, str]) -> str:
    """A prolog or epilog for slurm.conf: slurmd gives it a bare environment, so it is told where things
    are; what it says goes to PATH.log."""
    exports = "".join(f"export {name}='{value}'\n" for name, value in env.items())
    path.write_text(f"#!/bin/sh\n{exports}exec {ROOT / 'slurm' / script} 2>>{path}.log\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(params=[False, True], ids=["no-accounting", "slurmdbd"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SlurmCluster, DaemonProcess, Path]]:
    """gpuprofd and the cluster, its prolog and epilog gpuprof's; with slurmdbd or without."""
    accounting = bool(request.param)
    if accounting and missing(accounting=True):
        pytest.skip(missing(accounting=True) or "")
    jobs_dir = tmp_path / "jobs"
    SimulatedNvml().configure(SimConfig(gpus=(GpuSpec(), GpuSpec())))  # two GPUs, as the cluster's node has
    (tmp_path / "d").mkdir()
    daemon = DaemonProcess(tmp_path / "d", f'slurm_jobs_dir = "{jobs_dir}"\n').start()
    env = {
        "GPUPROF": str(Path(sys.executable).parent / "gpuprof"),
        "GPUPROF_ENDPOINT": daemon.endpoint,
        "GPUPROF_SLURM_JOBS_DIR": str(jobs_dir),
        "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    scripts = f"Prolog={wrapper(tmp_path / 'prolog', 'prolog.sh', env)}\n"
    scripts += f"Epilog={wrapper(tmp_path / 'epilog', 'epilog.sh', env)}\nPrologFlags=Alloc\n"
    try:
        cluster = SlurmCluster(tmp_path / "slurm", gpus=2, extra_config=scripts, accounting=accounting)
        cluster.env.update(env)
        cluster.start()
        try:
            yield cluster, daemon, jobs_dir
        finally:
            cluster.stop()
    finally:
        daemon.kill()


def test_scancel_cancels_the_slurm_jobs_gpuprof_job_and_charges_it(
    tmp_path: Path, setup: tuple[SlurmCluster, DaemonProcess, Path]
) -> None:
    cluster, daemon, jobs_dir = setup
    spec = tmp_path / "burn.yaml"
    spec.write_text(BURN)  # gpu 0: the first GPU of the Slurm job that submits it
    # Another Slurm job holds the node's GPU 0, so the one that submits gets GPU 1.
    other = cluster.run(
        "sbatch", "--parsable", "--gres=gpu:1", "--cpus-per-task=1", f"--chdir={tmp_path}",
        f"--output={tmp_path / 'holder-%j.out'}", "--wrap", "sleep 300",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    holder = other.stdout.strip().split(";")[0]
    wait_for(lambda: _read(jobs_dir / f"{holder}.json"), "the other job's record", WAIT_S)
    batch = f'#!/bin/sh\n"$GPUPROF" submit {spec} && sleep 300\n'
    submitted = cluster.run(
        "sbatch", "--parsable", "--gres=gpu:1", "--cpus-per-task=1", f"--chdir={tmp_path}",
        f"--output={tmp_path / 'slurm-%j.out'}", "--wrap", batch,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    slurm_job = submitted.stdout.strip().split(";")[0]
    record = json.loads(wait_for(lambda: _read(jobs_dir / f"{slurm_job}.json"), "prolog record", WAIT_S))
    assert (record["uid"], [g["index"] for g in record["gpus"]]) == (0, [1])
    assert record["gpus"][0]["uuid"].startswith("GPU-") and record["gpus"][0]["energy_j"] > 0

    client = RawClient(daemon.endpoint)

    def running() -> dict | None:  # type: ignore[type-arg]
        jobs = client.request("jobs", {"state": "running"}).body["jobs"]
        return jobs[0] if jobs else None

    job = wait_for(running, "gpuprof job running", WAIT_S)
    assert (job["slurm_job_id"], job["gpu"]) == (slurm_job, 1)  # its gpu 0 is the node's GPU 1
    metrics = client.request("metrics").body["gpus"]
    assert (metrics[1]["running_job"], metrics[1]["slurm_job_id"]) == (job["id"], slurm_job)
    assert metrics[0]["running_job"] is None

    assert cluster.run("scancel", slurm_job).returncode == 0
    ended = wait_for(
        lambda: (r := client.request("job", {"id": job["id"]}).body["job"])["state"] == "cancelled" and r,
        "cancelled gpuprof job",
        WAIT_S,
    )
    assert ended["reason"] == f"cancelled by the end of Slurm job {slurm_job} (its epilog)"
    # What it cost: in slurmd's log (here the epilog's), and with slurmdbd in the job's AdminComment.
    said = wait_for(lambda: _read(tmp_path / "epilog.log"), "epilog output", WAIT_S)
    match = re.search(r"(gpuprof gpu_energy_j=[^;\n]*)", said)
    assert match, said
    cost = parse_comment(match.group(1))
    assert (cost["gpuprof_jobs"], cost["cancelled"], cost["simulated"]) == ("1", "1", "true"), said
    assert float(cost["gpu_energy_j"]) > 0 and cost["gpu1_uuid"] == record["gpus"][0]["uuid"]
    assert float(cost["gpuprof_jobs_energy_j"]) > 0 and float(cost["seconds"]) > 0
    assert float(cost["gpuprof_jobs_energy_bound_j"]) > 0
    assert cost["gpuprof_jobs_method"] == "fused-energy-counter"
    assert cost["method"] == "energy-counter-prolog-to-epilog"
    assert f"cancelled gpuprof jobs {job['id']}" in said
    if not cluster.accounting:
        refused = "AdminComment not set: sacctmgr: You are not running a supported accounting_storage plugin"
        assert refused in said
    else:
        assert "written to its AdminComment" in said, said
        shown = cluster.run("sacct", "-n", "-P", "-X", "-j", slurm_job, "-o", "AdminComment").stdout.strip()
        stored = parse_comment(shown)  # as sacctmgr keeps it: lowercased
        assert stored == {key: value.lower() for key, value in cost.items()}, (shown, said)
    wait_for(lambda: not (jobs_dir / f"{slurm_job}.json").exists(), "record removed", WAIT_S)
    assert cluster.run("scancel", holder).returncode == 0
    client.close()


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except OSError:
        return None
