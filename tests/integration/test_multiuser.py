"""gpuprofd on a shared node: real OS users, as the kernel names them, and what each may do.

Needs root: it creates the group ``gpuprof`` (when missing) and three users, runs a root gpuprofd on the
simulated GPU, and runs clients as those users. Everything it created is removed at the end. The test users
must be able to run this Python: where an ancestor directory of the interpreter or of gpuprof is closed to
others (``/root`` is 0700 on many machines), search permission (x, not read) is added to it for the test's
duration and the original mode put back afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess

import gpuprof

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root and useradd: creates users and a group, and runs a root gpuprofd",
)

GROUP = "gpuprof"
ALICE, BOB, EVE = "gpt-alice", "gpt-bob", "gpt-eve"  # alice and bob in the group, eve not

CLIENT = """
import json, sys
from gpuprof.client import Client
from gpuprof.client.wire.jobspec import JobSpec
from gpuprof.client.wire.errors import GpuprofError
endpoint, calls = sys.argv[1], json.loads(sys.argv[2])
out = []
with Client(endpoint, timeout_s=20) as client:
    for name, args in calls:
        try:
            args = [JobSpec.from_dict(args[0])] if name == "submit" else args
            value = getattr(client, name)(*args)
            out.append({"ok": True, "value": value if name != "submit" else value.id})
        except GpuprofError as exc:
            out.append({"ok": False, "error": str(exc), "type": type(exc).__name__})
print(json.dumps(out, default=str))
"""


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True)


def _closed_ancestors(paths: list[Path]) -> list[Path]:
    """Directories on the way to ``paths`` that others cannot search."""
    closed: list[Path] = []
    for path in paths:
        for directory in [*reversed(path.resolve().parents), path.resolve()]:
            if directory.is_dir() and not directory.stat().st_mode & stat.S_IXOTH and directory not in closed:
                closed.append(directory)
    return closed


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    created_group = False
    if not any(g.gr_name == GROUP for g in grp.getgrall()):
        _run(["groupadd", GROUP])
        created_group = True
    made: list[str] = []
    opened: dict[Path, int] = {}
    try:
        for name in (ALICE, BOB, EVE):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                _run(["userdel", name])
            extra = ["-G", GROUP] if name != EVE else []
            _run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra, name])
            made.append(name)
        roots = [Path(sys.executable), Path(sys.prefix), Path(gpuprof.__path__[0]), Path(os.__file__)]
        for directory in _closed_ancestors(roots):
            opened[directory] = directory.stat().st_mode
            directory.chmod(stat.S_IMODE(opened[directory]) | stat.S_IXOTH)
        yield {name: pwd.getpwnam(name) for name in made}
    finally:
        for directory, mode in opened.items():
            directory.chmod(stat.S_IMODE(mode))
        for name in made:
            _run(["userdel", name], check=False)
        if created_group:
            _run(["groupdel", GROUP], check=False)


@pytest.fixture
def daemon(users: dict[str, pwd.struct_passwd], monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="gpuprof-mu-", dir="/tmp"))
    root.chmod(0o755)  # users reach the socket in it; the socket file itself is group gpuprof, 0660
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(root / "sim.state"))
    process = DaemonProcess(root).start()
    try:
        yield process
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


def as_account(user: pwd.struct_passwd) -> dict[str, Any]:
    """subprocess arguments that run a child as ``user``, with a minimal environment."""
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        "env": {
            "PATH": os.environ.get("PATH", ""),
            "HOME": "/",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    }


def as_user(user: pwd.struct_passwd, daemon: DaemonProcess, *calls: tuple[str, list[Any]]) -> list[Any]:
    """Run client calls as ``user`` in a fresh process; each call's value, or its error."""
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, daemon.endpoint, json.dumps(calls)],
        **as_account(user),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


BURN = {"workload": "burn", "timeout_s": 60, "burn": {"seconds": 0.6, "period_s": 0.3, "warmup_s": 0}}


def wait_final(user: pwd.struct_passwd, daemon: DaemonProcess, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        (reply,) = as_user(user, daemon, ("job", [job_id]))
        assert reply["ok"], reply
        if reply["value"]["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return dict(reply["value"])
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_socket_is_group_gpuprof_and_closed_to_others(daemon: DaemonProcess) -> None:
    for endpoint in (daemon.endpoint, daemon.endpoint.replace(".sock", "-pub.sock")):
        info = os.stat(endpoint.removeprefix("ipc://"))
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == grp.getgrnam(GROUP).gr_gid


def test_a_member_runs_a_job_as_themselves_and_others_cannot_touch_it(
    users: dict[str, pwd.struct_passwd], daemon: DaemonProcess
) -> None:
    alice, bob = users[ALICE], users[BOB]
    (submitted,) = as_user(alice, daemon, ("submit", [BURN]))
    assert submitted["ok"], submitted
    job_id = submitted["value"]
    record = wait_final(alice, daemon, job_id)
    assert record["state"] == "succeeded", record
    assert record["user"] == ALICE and record["worker_uid"] == alice.pw_uid  # the kernel's name for alice
    job_dir = daemon.state_dir / "jobs" / job_id
    assert job_dir.stat().st_uid == alice.pw_uid  # the worker ran in a directory only alice owns

    listing, job, trace, cancel = as_user(
        bob, daemon, ("jobs", []), ("job", [job_id]), ("trace", [job_id]), ("cancel", [job_id])
    )
    assert listing["ok"] and job_id not in json.dumps(listing["value"])
    for reply in (job, trace, cancel):
        assert not reply["ok"] and "denied" in reply["error"] and f"belongs to {ALICE}" in reply["error"]
    (own,) = as_user(alice, daemon, ("jobs", []))
    assert [j["id"] for j in own["value"]] == [job_id]

    log = daemon.log.read_text()
    assert f"denied job of job {job_id} to {BOB} (uid {bob.pw_uid})" in log  # every denial is logged


def test_a_user_outside_the_group_is_refused_with_the_reason(
    users: dict[str, pwd.struct_passwd], daemon: DaemonProcess
) -> None:
    # The socket file refuses her before the daemon is reached, and the client says why.
    (gpus,) = as_user(users[EVE], daemon, ("gpus", []))
    assert not gpus["ok"] and gpus["type"] == "PermissionDenied"
    assert f"members of the group '{GROUP}'" in gpus["error"] and "usermod -aG gpuprof" in gpus["error"]

    # Should she reach it anyway (a socket opened to all), the daemon refuses her by the same rule.
    for endpoint in (daemon.endpoint, daemon.endpoint.replace(".sock", "-pub.sock")):
        os.chmod(endpoint.removeprefix("ipc://"), 0o666)
    hello, submit = as_user(users[EVE], daemon, ("gpus", []), ("submit", [BURN]))
    for reply in (hello, submit):
        assert not reply["ok"] and f"user {EVE} is not in the group '{GROUP}'" in reply["error"]
    assert f"denied gpus to {EVE}" in daemon.log.read_text()


def test_a_worker_not_running_as_the_uid_it_was_meant_for_refuses_to_run() -> None:
    from gpuprof.client.wire.errors import GpuprofError
    from gpuprof.daemon.worker.main import check_identity

    with pytest.raises(GpuprofError, match="not 12345"):
        check_identity("12345")  # this process is root, not the uid the daemon meant


SUBSCRIBER = """
import sys, time, zmq
from gpuprof.client import Client
with Client(sys.argv[1]) as client:
    pub = client.hello()["pub_endpoint"]
sub = zmq.Context.instance().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")  # everything: the daemon narrows it to what this user may see
sub.connect(pub)
print("ready", flush=True)
topics, deadline = set(), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    if sub.poll(100):
        topics.add(sub.recv_multipart()[0].decode())
print(" ".join(sorted(topics)), flush=True)
"""


def test_live_data_of_another_users_job_is_not_published_to_them(
    users: dict[str, pwd.struct_passwd], daemon: DaemonProcess
) -> None:
    bob = users[BOB]
    watcher = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, daemon.endpoint, "6"],
        **as_account(bob),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline() == "ready\n"
    (submitted,) = as_user(users[ALICE], daemon, ("submit", [BURN]))
    assert wait_final(users[ALICE], daemon, submitted["value"])["state"] == "succeeded"
    seen = watcher.stdout.readline().split()
    watcher.wait(timeout=30)
    assert "gpu/0" in seen  # members watch every GPU
    assert not [t for t in seen if t.startswith("job/")], seen  # but not others' jobs' states and phases


def test_a_remote_client_is_the_user_its_key_names_not_the_process_that_connects(
    users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    from gpuprof.client import Client
    from gpuprof.client.keys import keygen
    from gpuprof.client.wire.errors import PermissionDenied
    from gpuprof.client.wire.jobspec import JobSpec
    from gpuprof.daemon.server.keys import KeyStore, public_file

    root = Path(tempfile.mkdtemp(prefix="gpuprof-mu-tcp-", dir="/tmp"))
    root.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = (
        f'tcp_endpoint = "tcp://127.0.0.1:{port}"\ntcp_pub_endpoint = "tcp://127.0.0.1:{port + 1}"\n'
        f'keys_dir = "{root / "keys"}"\nserver_key = "{root / "server.key_secret"}"\n'
    )
    daemon = DaemonProcess(root, config).start()
    try:
        store = KeyStore(root / "keys")
        secrets = {}
        for name in (ALICE, EVE):
            public, secrets[name] = keygen(tmp_path / name)
            store.add(name, public)
        server = str(public_file(root / "server.key_secret"))
        endpoint = f"tcp://127.0.0.1:{port}"
        # This process is root; the key is alice's: the daemon serves alice, and her job runs as her.
        with Client(endpoint, timeout_s=20, server_key=server, client_key=str(secrets[ALICE])) as client:
            assert client.hello()["user"] == ALICE
            job = client.submit(JobSpec.from_dict(BURN))
            record = job.wait(timeout_s=60)
        assert record["user"] == ALICE and record["worker_uid"] == users[ALICE].pw_uid
        # Eve's key is known, but she is not in the group: the policy refuses her as over ipc.
        eve = Client(endpoint, timeout_s=20, server_key=server, client_key=str(secrets[EVE]))
        with eve, pytest.raises(PermissionDenied, match=f"user {EVE} is not in the group"):
            eve.gpus()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_only_the_users_the_config_names_may_change_clocks(
    users: dict[str, pwd.struct_passwd], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(tempfile.mkdtemp(prefix="gpuprof-mu-dvfs-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(root / "sim.state"))
    daemon = DaemonProcess(root, f'allow_dvfs = true\ndvfs_users = ["{BOB}"]\n').start()
    try:
        spec = {**BURN, "dvfs": {"sm_clocks": 1410}}
        (alice,) = as_user(users[ALICE], daemon, ("submit", [spec]))
        assert (
            not alice["ok"] and f"user {ALICE} is not among those allowed to change clocks" in alice["error"]
        )
        (bob,) = as_user(users[BOB], daemon, ("submit", [spec]))
        assert bob["ok"], bob
        record = wait_final(users[BOB], daemon, bob["value"])
        assert record["state"] == "succeeded" and record["result"]["dvfs"]["set"]["sm_clock_mhz"] == 1410
        # The lock was made by the root daemon, never by the job's own (unprivileged) worker.
        from gpuprof.sampler.sim import SimulatedNvml

        calls = [
            c for c in SimulatedNvml(state_path=str(root / "sim.state")).control_log() if "Locked" in c.call
        ]
        assert [(c.call, c.uid, c.result) for c in calls] == [
            ("nvmlDeviceSetGpuLockedClocks", 0, 0),
            ("nvmlDeviceResetGpuLockedClocks", 0, 0),
        ]
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.kill()
        shutil.rmtree(root, ignore_errors=True)


def llm_spec(dataset: Path) -> dict[str, Any]:
    """A tiny llm job (one prompt, two tokens) that reads its prompts from ``dataset``."""
    return {
        "workload": "llm",
        "timeout_s": 120,
        "llm": {
            "model": {"arch": "llama-3.2-1b-tiny"},
            "dtype": "float32",
            "prompts": 1,
            "max_new_tokens": 2,
            "warmup_requests": 0,
            "ner": "heuristic",
            "dataset": {"file": str(dataset), "columns": {"answers": "answers"}},
        },
    }


def test_a_dataset_file_the_jobs_user_cannot_read_fails_the_job_saying_so(
    users: dict[str, pwd.struct_passwd], daemon: DaemonProcess
) -> None:
    pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
    alice = users[ALICE]
    root = Path(tempfile.mkdtemp(prefix="gpuprof-mu-data-", dir="/tmp"))
    root.chmod(0o755)  # alice may reach the file: only its own mode stops her
    try:
        dataset = root / "qa.jsonl"
        row = {"question": "Is ice cold?", "context": "Ice is cold.", "answers": ["yes"]}
        dataset.write_text(json.dumps(row) + "\n")
        dataset.chmod(0o600)  # root's, and closed to everyone else
        (submitted,) = as_user(alice, daemon, ("submit", [llm_spec(dataset)]))
        assert submitted["ok"], submitted
        record = wait_final(alice, daemon, submitted["value"])
        assert record["state"] == "failed", record
        assert f"{dataset}: permission denied to {ALICE}" in record["reason"]
        assert record["worker_uid"] == alice.pw_uid  # read as alice, never by the root daemon on her behalf

        dataset.chmod(0o644)  # the same job, the file now readable: it was the permission, nothing else
        (again,) = as_user(alice, daemon, ("submit", [llm_spec(dataset)]))
        assert again["ok"], again
        record = wait_final(alice, daemon, again["value"])
        assert record["state"] == "succeeded", record
    finally:
        shutil.rmtree(root, ignore_errors=True)


REMOTE_CODE = {
    "workload": "llm",
    "timeout_s": 120,
    "llm": {"model": {"hf": "org/model"}, "trust_remote_code": True},
}


def test_trust_remote_code_is_refused_unless_the_config_allows_it(
    users: dict[str, pwd.struct_passwd], daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = users[ALICE]
    (refused,) = as_user(alice, daemon, ("submit", [REMOTE_CODE]))
    assert not refused["ok"] and refused["type"] == "PermissionDenied", refused  # the client's "denied"
    assert (
        "llm.trust_remote_code denied" in refused["error"] and "allow_trust_remote_code" in refused["error"]
    )
    assert f"denied llm.trust_remote_code to {ALICE} (uid {alice.pw_uid})" in daemon.log.read_text()

    root = Path(tempfile.mkdtemp(prefix="gpuprof-mu-code-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("GPUPROF_SIM_STATE", str(root / "sim.state"))
    allowing = DaemonProcess(root, "allow_trust_remote_code = true\n").start()
    try:
        (accepted,) = as_user(alice, allowing, ("submit", [REMOTE_CODE]))
        assert accepted["ok"], accepted  # a job id: accepted (its worker has no hub to load the model from)
        (cancel,) = as_user(alice, allowing, ("cancel", [accepted["value"]]))
        assert cancel["ok"] or "already" in cancel["error"], cancel  # it may have failed first
        assert wait_final(alice, allowing, accepted["value"])["state"] in ("cancelled", "failed")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            allowing.kill()
        shutil.rmtree(root, ignore_errors=True)
