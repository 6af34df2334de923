"""Slurm jobs on a node: the prolog's records, whom gpuprofd attributes a submit to, what the epilog
cancels and the cost it writes (docs/slurm.md). In-process, against the handlers of test_handlers.py; the
real Slurm runs in tests/integration/test_slurm_study.py."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_handlers import ADMIN, ALICE, BOB, Serve, burn
from test_handlers import serve as serve  # the fixture

from gpuprof.client.slurm import allocated_gpus, comment_text, cost, epilog, parse_comment, prolog
from gpuprof.client.wire import protocol
from gpuprof.daemon.server.slurm import AllocationError, SlurmJobs, cgroup_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="records are trusted only when root owns them")


def record(directory: Path, job_id: str, uid: int, gpus: list[int], mode: int = 0o644) -> Path:
    path = directory / f"{job_id}.json"
    entries = [{"index": g, "uuid": f"GPU-{g}", "energy_j": 100.0 * g} for g in gpus]
    path.write_text(json.dumps({"version": 1, "slurm_job_id": job_id, "uid": uid, "gpus": entries}))
    path.chmod(mode)
    return path


def in_cgroup(proc: Path, pid: int, line: str) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cgroup").write_text(line)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "slurm"
    directory.mkdir(mode=0o755)
    return directory


def test_a_submit_is_attributed_to_the_callers_slurm_job_and_shown(serve: Serve, jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    served = serve(slurm_jobs_dir=str(jobs_dir))
    named = served.ok(ALICE, "submit", {"spec": burn(), "slurm_job_id": "41"})["job"]
    alone = served.ok(ALICE, "submit", {"spec": burn()})["job"]  # her only Slurm job on the node
    assert named["slurm_job_id"] == alone["slurm_job_id"] == "41"
    assert served.ok(BOB, "submit", {"spec": burn()})["job"]["slurm_job_id"] is None  # he has none here


def test_a_user_cannot_claim_another_users_slurm_job(serve: Serve, jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    served = serve(slurm_jobs_dir=str(jobs_dir))
    reply = served.refused(BOB, "submit", {"spec": burn(), "slurm_job_id": "41"})
    assert reply.code == "denied" and "Slurm job 41 is not bob's" in str(reply.message), reply
    assert served.store.of_slurm_job("41") == []


def test_the_cgroup_of_the_caller_wins_over_what_it_claims(tmp_path: Path, jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    record(jobs_dir, "42", ALICE.uid, [1])
    proc = tmp_path / "proc"
    in_cgroup(proc, 500, "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n")
    in_cgroup(proc, 501, "12:devices:/slurm/uid_1001/job_41/step_batch\n4:cpu:/user.slice\n")
    in_cgroup(proc, 502, "0::/user.slice/user-1001.slice/session-3.scope\n")
    slurm = SlurmJobs(str(jobs_dir), enforce=False, daemon_uid=999, proc=str(proc))
    caller = dataclasses.replace(ALICE, pid=500)
    assert cgroup_job(500, str(proc)) == "42" and cgroup_job(501, str(proc)) == "41"
    assert cgroup_job(502, str(proc)) is None and cgroup_job(None, str(proc)) is None
    assert slurm.place(caller, "41", 0)[0].id == "42"  # type: ignore[union-attr]
    # A cgroup she made herself, or one of another user's Slurm job, names nothing of hers.
    in_cgroup(proc, 503, "0::/user.slice/user-1001.slice/user@1001.service/app.slice/job_43/x\n")
    record(jobs_dir, "43", BOB.uid, [1])
    in_cgroup(proc, 504, "0::/system.slice/slurmstepd.scope/job_43/step_0\n")
    assert cgroup_job(503, str(proc)) is None and cgroup_job(504, str(proc)) == "43"
    assert slurm.place(dataclasses.replace(ALICE, pid=504), None, 1)[0].id == "42"  # type: ignore[union-attr]
    assert slurm.place(dataclasses.replace(ALICE, pid=503), None, 3)[0] is None  # two of hers, none on GPU 3
    assert slurm.place(dataclasses.replace(ALICE, pid=504), "41", 0)[0].id == "41"  # type: ignore[union-attr]
    # No cgroup: two Slurm jobs of hers, told apart by the GPU asked for.
    outside = dataclasses.replace(ALICE, pid=502)
    assert slurm.place(outside, None, 1)[0].id == "42"  # type: ignore[union-attr]
    assert slurm.place(outside, None, 3)[0] is None


@pytest.mark.parametrize("bad", ["group-writable", "symlink", "not-json", "other-id", "too-large"])
def test_untrustworthy_records_are_ignored(jobs_dir: Path, tmp_path: Path, bad: str) -> None:
    path = record(jobs_dir, "41", ALICE.uid, [0])
    if bad == "group-writable":
        path.chmod(0o664)
    elif bad == "symlink":
        target = record(tmp_path, "41", ALICE.uid, [0])
        path.unlink()
        path.symlink_to(target)
    elif bad == "not-json":
        path.write_text("{")
    elif bad == "other-id":
        path.write_text(path.read_text().replace('"41"', '"43"'))
    else:
        path.write_text(" " * 70_000)
    assert SlurmJobs(str(jobs_dir), enforce=False, daemon_uid=999).get("41") is None


def test_a_world_writable_directory_is_not_read(jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    jobs_dir.chmod(0o777)
    assert SlurmJobs(str(jobs_dir), enforce=False, daemon_uid=999).all() == []


def test_enforcement_keeps_users_on_their_allocated_gpus(serve: Serve, jobs_dir: Path) -> None:
    served = serve(slurm_jobs_dir=str(jobs_dir), slurm_enforce_gpus=True, admin_groups=("admins",))
    reply = served.refused(ALICE, "submit", {"spec": burn()})
    assert reply.code == "denied" and reply.body["key"] == "gpu"
    assert "GPU 0 is not allocated to alice by Slurm" in str(reply.message)
    assert reply.body["problem"].startswith("denied: GPU 0 is not allocated to alice")
    record(jobs_dir, "41", ALICE.uid, [1])  # another GPU: the simulated node serves GPU 0 only
    reply = served.refused(ALICE, "submit", {"spec": burn()})  # from outside the job: the node's GPU 0
    assert "GPU 0 is not allocated to Slurm job 41 (its GPUs on this node: 1)" in str(reply.message)
    record(jobs_dir, "41", ALICE.uid, [0])
    assert served.ok(ALICE, "submit", {"spec": burn()})["job"]["slurm_job_id"] == "41"
    assert served.ok(ADMIN, "submit", {"spec": burn()})["job"]["slurm_job_id"] is None  # admins exempt


def test_the_end_of_a_slurm_job_cancels_its_gpuprof_jobs_only(serve: Serve, jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    served = serve(slurm_jobs_dir=str(jobs_dir), admin_groups=("admins",))
    queued = served.ok(ALICE, "submit", {"spec": burn(), "slurm_job_id": "41"})["job"]["id"]
    running = served.ok(ALICE, "submit", {"spec": burn(), "slurm_job_id": "41"})["job"]["id"]
    served.store.set_state(running, "running")
    other = served.ok(BOB, "submit", {"spec": burn()})["job"]["id"]
    refused = served.refused(ALICE, "slurm_end", {"slurm_job_id": "41"})
    assert refused.code == "denied" and served.store.get(queued).state == "queued"  # type: ignore[union-attr]

    ended = served.ok(ADMIN, "slurm_end", {"slurm_job_id": "41"})
    assert ended["cancelled"] == [queued, running]
    assert served.runner.cancelled == [(running, "the end of Slurm job 41 (its epilog)")]
    states = {job["id"]: job["state"] for job in ended["jobs"]}
    assert states == {queued: "cancelled", running: "running"}  # the runner stops it
    assert served.store.get(other).state == "queued"  # type: ignore[union-attr]
    assert served.ok(ADMIN, "slurm_end", {"slurm_job_id": "41"})["cancelled"] == [running]  # still running
    bad = served.refused(ADMIN, "slurm_end", {"slurm_job_id": "41; rm -rf /"})
    assert bad.code == "bad_request" and "slurm_job_id must be a Slurm job id" in str(bad.message)


def test_slurm_job_ids_are_checked_in_every_message() -> None:
    for value in ("", "x", "1" * 13, "-1", "1_2"):
        payload = protocol.encode_request("submit", {"spec": burn(), "slurm_job_id": value}, 3)
        with pytest.raises(protocol.ProtocolError, match="slurm_job_id must be a Slurm job id"):
            protocol.decode_request(payload)


def test_slurm_gpu_lists_are_read_as_slurm_writes_them() -> None:
    assert allocated_gpus("0,2") == [0, 2] and allocated_gpus("0-3,6") == [0, 1, 2, 3, 6]
    assert allocated_gpus("") == []
    with pytest.raises(ValueError, match="not a list of GPU ids"):
        allocated_gpus("gpu:0")


def test_the_prolog_writes_a_record_gpuprofd_trusts_even_without_a_daemon(
    jobs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"SLURM_JOB_ID": "77", "SLURM_JOB_UID": "1001", "SLURM_JOB_GPUS": "0,1"}
    said = prolog(env, str(jobs_dir), "ipc:///nonexistent/gpuprofd.sock")
    assert "job 77: uid 1001, GPUs [0, 1]" in said and "gpuprofd did not answer" in capsys.readouterr().err
    job = SlurmJobs(str(jobs_dir), enforce=False, daemon_uid=999).get("77")
    assert job is not None and (job.uid, job.gpu_indices) == (1001, [0, 1])
    with pytest.raises(ValueError, match="SLURM_JOB_ID"):
        prolog({**env, "SLURM_JOB_ID": "../x"}, str(jobs_dir), "ipc:///nonexistent/gpuprofd.sock")


def test_the_cost_is_the_counters_difference_and_the_jobs_energy() -> None:
    start: dict[str, Any] = {
        "gpus": [
            {"index": 0, "uuid": "GPU-a", "energy_j": 1000.0},
            {"index": 1, "uuid": "GPU-b", "energy_j": 5.0},
        ],
        "started_ns": 1,
        "simulated": True,
    }
    now = {0: {"uuid": "GPU-a", "energy_j": 1500.5}, 1: {"uuid": "GPU-b", "energy_j": 105.0}}
    ended = {
        "cancelled": ["j2"],
        "jobs": [{"energy_j": 200.0, "energy_bound_j": 2.5}, {"energy_j": 50.25, "energy_bound_j": 0.5}],
    }
    figures = cost(start, now, ended)
    assert figures["gpu_energy_j"] == 600.5 and [g["energy_j"] for g in figures["gpus"]] == [500.5, 100.0]
    assert (figures["gpuprof_jobs"], figures["gpuprof_jobs_energy_j"], figures["cancelled"]) == (2, 250.25, 1)
    assert (
        figures["gpuprof_jobs_energy_bound_j"] == 3.0
        and figures["gpuprof_jobs_method"] == "fused-energy-counter"
    )
    assert figures["simulated"] is True
    # Without the prolog's record, the daemon's word at the epilog labels the figures; with neither, unknown.
    assert cost(None, now, ended, simulated_now=True)["simulated"] is True
    assert cost({**start, "simulated": False}, now, ended, simulated_now=True)["simulated"] is True
    assert "simulated=unknown" in comment_text(cost(None, {}, {}))
    # Another GPU at that index now (a different UUID): its counter says nothing of this job.
    swapped = cost(start, {**now, 1: {"uuid": "GPU-c", "energy_j": 9.0}}, ended)
    assert swapped["gpu_energy_j"] is None and swapped["gpus"][1]["energy_j"] is None


def test_the_cost_text_survives_sacctmgr_and_stays_short() -> None:
    figures = cost(
        {
            "gpus": [{"index": g, "uuid": f"GPU-{g:032x}", "energy_j": 1.0} for g in range(64)],
            "started_ns": 1,
        },
        {g: {"uuid": f"GPU-{g:032x}", "energy_j": 3.5} for g in range(64)},
        {"cancelled": [], "jobs": []},
    )
    text = comment_text(figures)
    assert len(text) <= 1000 and '"' not in text and text.startswith("gpuprof gpu_energy_j=160.0 ")
    fields = parse_comment(text)
    assert fields["gpu0_energy_j"] == "2.5" and fields["gpuprof_jobs_energy_j"] == "unknown"
    assert parse_comment(text.lower())["gpu0_uuid"] == f"gpu-{0:032x}"  # as sacctmgr stores it


def test_without_gpuprofd_the_epilog_keeps_the_record_and_still_exits_quietly(jobs_dir: Path) -> None:
    env = {"SLURM_JOB_ID": "78", "SLURM_JOB_UID": "1001", "SLURM_JOB_GPUS": "0"}
    nowhere = "ipc:///nonexistent/gpuprofd.sock"
    prolog(env, str(jobs_dir), nowhere)
    said = epilog(env, str(jobs_dir), nowhere, account=False)
    assert said.startswith("job 78: gpuprof gpu_energy_j=unknown ") and (jobs_dir / "78.json").exists()


def test_the_prolog_writes_nowhere_others_could_redirect(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by anyone, and not sticky: a user could swap what lies below
    env = {"SLURM_JOB_ID": "79", "SLURM_JOB_UID": "1001", "SLURM_JOB_GPUS": "0"}
    with pytest.raises(ValueError, match="may be changed by others"):
        prolog(env, str(shared / "slurm"), "ipc:///nonexistent/gpuprofd.sock")
    assert not (shared / "slurm" / "79.json").exists()


def test_inside_a_slurm_job_gpu_counts_the_jobs_own_gpus(jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [3, 5])
    slurm = SlurmJobs(str(jobs_dir), enforce=True, daemon_uid=999)
    job, gpu = slurm.place(ALICE, "41", 1)
    assert (job.id if job else None, gpu) == ("41", 5)  # CUDA's device 1 there is the node's GPU 5
    with pytest.raises(AllocationError, match=r"Slurm job 41 has 2 GPU\(s\) on this node \(node GPU 3, 5\)"):
        slurm.place(ALICE, "41", 2)
    assert slurm.place(ALICE, None, 5)[1] == 5  # outside a Slurm job: the node's index
    # No record of the job here: the client's $SLURM_JOB_GPUS maps it, and nothing is enforced from it.
    loose = SlurmJobs(str(jobs_dir), enforce=False, daemon_uid=999)
    assert loose.place(BOB, "77", 0, [6]) == (None, 6)
    with pytest.raises(protocol.ProtocolError, match="GPU 6 is not allocated to bob by Slurm"):
        slurm.place(BOB, "77", 0, [6])


def test_a_gpu_past_the_slurm_jobs_gpus_is_a_spec_error_naming_gpu(serve: Serve, jobs_dir: Path) -> None:
    record(jobs_dir, "41", ALICE.uid, [0])
    served = serve(slurm_jobs_dir=str(jobs_dir))
    reply = served.refused(ALICE, "submit", {"spec": burn(gpu=1), "slurm_job_id": "41"})
    assert reply.code == "invalid_spec" and reply.body["key"] == "gpu", reply
    assert "inside a Slurm job, gpu counts the job's own GPUs from 0" in str(reply.message)
    bad = served.refused(ALICE, "submit", {"spec": burn(), "slurm_gpus": [0]})
    assert bad.code == "bad_request" and "sent with slurm_job_id" in str(bad.message)
