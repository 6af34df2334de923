"""gpuprofd's request handlers in-process: a real job store, policy and inventory (of the simulated GPU),
and a fake runner in place of worker processes. What a client is told for each request, in milliseconds."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from gpuprof.client.wire import protocol
from gpuprof.client.wire.messages import GpuInfo, JobInfo
from gpuprof.daemon.config import DaemonConfig
from gpuprof.daemon.server.handlers import Handlers, Node
from gpuprof.daemon.server.history import SampleHistory
from gpuprof.daemon.server.identity import Caller
from gpuprof.daemon.server.limits import RequestLimits
from gpuprof.daemon.server.logbound import Bugs
from gpuprof.daemon.server.policy import Policy
from gpuprof.daemon.server.store import JobRecord, JobStore
from gpuprof.sampler.device import read_inventory
from gpuprof.sampler.library import resolve
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE
from gpuprof.sampler.trace import Trace

DAEMON_UID = 999
ALICE = Caller(uid=1001, user="alice", gid=1001, groups=frozenset({"gpuprof"}))
BOB = Caller(uid=1002, user="bob", gid=1002, groups=frozenset({"gpuprof"}))
OUTSIDER = Caller(uid=1003, user="eve", gid=1003, groups=frozenset())
ADMIN = Caller(uid=1004, user="ada", gid=1004, groups=frozenset({"gpuprof", "admins"}))
SUPPORTED = 1410  # a clock the simulated H100 supports
UNSUPPORTED = 1000  # between 990 and 1005 MHz, which it does


def burn(seconds: float = 1.0, **top: Any) -> dict[str, Any]:
    return {"workload": "burn", "timeout_s": 30, "burn": {"seconds": seconds, "warmup_s": 0}, **top}


@dataclass
class FakeJob:
    record: JobRecord


@dataclass
class FakeRunner:
    """Records what the handlers ask of the runner; starts nothing."""

    running: dict[int, FakeJob] = field(default_factory=dict)
    scheduled: list[list[int]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)

    def schedule(self, gpus: list[int]) -> None:
        self.scheduled.append(list(gpus))

    def cancel(self, job_id: str, by: str) -> bool:
        self.cancelled.append((job_id, by))
        return True

    def job_energy(self) -> dict[str, dict[str, Any]]:
        return {
            job.record.id: {"gpu": gpu, "energy_j": 12.5, "running": True, "slurm_job_id": None}
            for gpu, job in self.running.items()
        }


@dataclass
class Served:
    handlers: Handlers
    store: JobStore
    runner: FakeRunner
    published: list[tuple[str, str, dict[str, Any]]]

    def ask(self, caller: Caller, kind: str, body: dict[str, Any] | None = None) -> protocol.Reply:
        return protocol.decode_reply(
            self.handlers.answer(protocol.encode_request(kind, body or {}, 7), caller)
        )

    def ok(self, caller: Caller, kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.ask(caller, kind, body)
        assert reply.ok, reply
        return reply.body

    def refused(self, caller: Caller, kind: str, body: dict[str, Any] | None = None) -> protocol.Reply:
        reply = self.ask(caller, kind, body)
        assert not reply.ok and reply.id == 7, reply
        return reply


Serve = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    described, unreadable = read_inventory(resolve(simulate=True))
    inventory = [GpuInfo.from_dict(gpu) for gpu in described]

    def build(**settings: Any) -> Served:
        config = DaemonConfig(simulate=True, state_dir=str(tmp_path / "state"), **settings)
        store = JobStore(config.state_dir)
        runner = FakeRunner()
        published: list[tuple[str, str, dict[str, Any]]] = []
        handlers = Handlers(
            config,
            store,
            runner,
            Policy(config, daemon_uid=DAEMON_UID),
            Node(inventory, simulated=True, unreadable=unreadable),
            SampleHistory(seconds=1, rate_hz=100, gpus=1),
            publish_job=lambda *message: published.append(message),
            limits=RequestLimits(
                config.request_rate_per_user,
                config.request_time_share_per_user,
                exempt_uids=frozenset({0, DAEMON_UID}),
            ),
            bugs=Bugs(logging.getLogger("gpuprofd")),
        )
        return Served(handlers, store, runner, published)

    return build


# -- submit ------------------------------------------------------------------------------------------


def test_a_submit_queues_the_job_as_its_user_and_asks_the_runner_to_schedule(serve: Serve) -> None:
    served = serve()
    job = served.ok(ALICE, "submit", {"spec": burn(), "spec_text": "workload: burn\n"})["job"]
    assert (job["state"], job["user"], job["gpu"], job["simulated"]) == ("queued", "alice", 0, True)
    assert job["spec"]["burn"]["seconds"] == 1.0 and job["spec_text"] == "workload: burn\n"
    assert served.runner.scheduled == [[0]]
    assert JobInfo.from_dict(job) == served.store.get(job["id"])  # the reply is the stored job, typed


def test_a_spec_without_timeout_s_gets_the_daemons_default(serve: Serve) -> None:
    served = serve(default_timeout_s=120.0)
    spec = {key: value for key, value in burn().items() if key != "timeout_s"}
    assert served.ok(ALICE, "submit", {"spec": spec})["job"]["spec"]["timeout_s"] == 120.0
    short = serve(default_timeout_s=0.5)  # not longer than the workload: named as the default
    reply = short.refused(ALICE, "submit", {"spec": spec})
    assert reply.code == "invalid_spec" and reply.body["key"] == "timeout_s"
    expected = "0.5 s (this daemon's default_timeout_s) is not longer than the workload's own running time"
    assert expected in str(reply.message)


def _with_burn(**keys: Any) -> dict[str, Any]:
    spec = burn()
    spec["burn"] = {**spec["burn"], **keys}
    return spec


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        pytest.param(_with_burn(duty=0.5), "burn.duty", id="unknown-key"),
        pytest.param({**burn(1.0), "gpus": 0}, "gpus", id="unknown-top-key"),
        pytest.param(_with_burn(seconds="long"), "burn.seconds", id="wrong-type"),
        pytest.param(burn(1.0, gpu="0"), "gpu", id="str-gpu"),
        pytest.param({"burn": {"seconds": 1}}, "workload", id="missing-workload"),
        pytest.param({"workload": "burn", "burn": {"period_s": 1}}, "burn.seconds", id="missing-seconds"),
        pytest.param(burn(1.0, timeout_s=0.5), "timeout_s", id="timeout-too-short"),
        pytest.param(burn(1.0, gpu=3), "gpu", id="gpu-not-served"),
        pytest.param(burn(1.0, timeout_s=86400 * 2), "timeout_s", id="timeout-over-daemon-limit"),
        pytest.param(burn(1.0, dvfs={"sm_clocks": UNSUPPORTED}), "dvfs.sm_clocks", id="unsupported-clock"),
    ],
)
def test_spec_errors_are_invalid_spec_naming_the_key(serve: Serve, spec: dict[str, Any], named: str) -> None:
    served = serve(allow_dvfs=True, dvfs_users=("alice",))
    reply = served.refused(ALICE, "submit", {"spec": spec})
    assert reply.code == "invalid_spec", reply
    assert reply.message is not None and reply.message.startswith(f"<submitted spec>: {named}: "), reply
    assert reply.body["key"] == named and reply.message.endswith(
        reply.body["problem"]
    )  # for the client's file
    assert served.ok(ALICE, "jobs")["jobs"] == [] and served.runner.scheduled == []  # nothing was queued


def test_a_sweep_clock_the_gpu_lacks_is_refused_naming_its_neighbours_unless_snapped(serve: Serve) -> None:
    served = serve(allow_dvfs=True)
    sweep = {"sm_clocks": [600, UNSUPPORTED]}
    reply = served.refused(DAEMON_CALLER, "submit", {"spec": burn(dvfs=sweep, timeout_s=300)})
    assert reply.code == "invalid_spec" and "1000 MHz; nearest supported: 990, 1005 MHz" in str(reply.message)
    snapped = {"sm_clocks": [UNSUPPORTED], "snap": True}
    job = served.ok(DAEMON_CALLER, "submit", {"spec": burn(dvfs=snapped, timeout_s=300)})["job"]
    assert job["spec"]["dvfs"]["sm_clocks"] == [1005]  # the worker may ask for exactly these


DAEMON_CALLER = Caller(uid=DAEMON_UID, user="gpuprof", gid=DAEMON_UID, groups=frozenset())


def test_a_clock_change_is_refused_while_dvfs_is_off(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    served = serve()
    reply = served.refused(DAEMON_CALLER, "submit", {"spec": burn(dvfs={"sm_clocks": SUPPORTED})})
    assert reply.code == "denied" and reply.body["key"] == "dvfs"
    assert "clock changes are off on this node (allow_dvfs = false" in str(reply.message)
    assert reply.body["problem"].startswith("denied: clock changes are off")  # the line, without the key
    assert "denied dvfs to gpuprof" in caplog.text and served.runner.scheduled == []


def test_only_the_users_the_config_names_may_change_clocks(serve: Serve) -> None:
    served = serve(allow_dvfs=True, dvfs_users=("bob",))
    spec = burn(dvfs={"sm_clocks": SUPPORTED})
    reply = served.refused(ALICE, "submit", {"spec": spec})
    assert reply.code == "denied" and "user alice is not among those allowed to change clocks" in str(
        reply.message
    )
    assert served.ok(BOB, "submit", {"spec": spec})["job"]["spec"]["dvfs"]["sm_clocks"] == SUPPORTED


def test_trust_remote_code_is_refused_unless_the_config_allows_it(serve: Serve) -> None:
    spec = {
        "workload": "llm",
        "timeout_s": 120,
        "llm": {"model": {"hf": "org/model"}, "trust_remote_code": True, "prompts": 1},
    }
    reply = serve().refused(ALICE, "submit", {"spec": spec})
    assert reply.code == "denied" and reply.body["key"] == "llm.trust_remote_code"
    assert reply.body["problem"].startswith("denied: running a model repository's own code is off")
    assert "allow_trust_remote_code" in str(reply.message)
    assert serve(allow_trust_remote_code=True).ok(ALICE, "submit", {"spec": spec})["job"]["state"] == "queued"


def test_a_command_job_from_a_remote_key_holder_is_refused_unless_the_config_allows_it(serve: Serve) -> None:
    spec = {"workload": "command", "timeout_s": 60, "command": {"argv": ["/bin/true"], "cwd": "/tmp"}}
    remote = dataclasses.replace(ALICE, remote=True)
    reply = serve().refused(remote, "submit", {"spec": spec})
    assert reply.code == "denied" and reply.body["key"] == "command"
    assert "allow_remote_commands" in str(reply.message)
    assert serve().ok(ALICE, "submit", {"spec": spec})["job"]["state"] == "queued"  # a local user may
    assert serve(allow_remote_commands=True).ok(remote, "submit", {"spec": spec})["job"]["state"] == "queued"


def test_each_member_has_a_quota_of_queued_jobs(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    served = serve(max_queued_jobs_per_user=2)
    for _ in range(2):
        served.ok(ALICE, "submit", {"spec": burn()})
    reply = served.refused(ALICE, "submit", {"spec": burn()})
    assert reply.code == "quota_exceeded"
    assert "alice has 2 queued jobs; this daemon queues at most 2 per user" in str(reply.message)
    assert served.ok(BOB, "submit", {"spec": burn()})["job"]["user"] == "bob"  # a quota is each user's own
    assert served.ok(DAEMON_CALLER, "submit", {"spec": burn()})  # the daemon's own user has none
    assert "refused a submit by alice (uid 1001): 2 jobs queued" in caplog.text


def test_each_member_has_a_request_rate(serve: Serve) -> None:
    served = serve(request_rate_per_user=20)
    replies = [served.ask(BOB, "time") for _ in range(60)]
    limited = [reply for reply in replies if not reply.ok]
    assert all(reply.ok for reply in replies[:20]) and len(limited) >= 30
    assert all(reply.code == "rate_limited" and reply.id == 7 for reply in limited)
    assert "requests a second (request_rate_per_user); retry in" in str(limited[0].message)
    assert served.ask(ALICE, "time").ok  # bob's rate is not alice's
    assert served.ok(ADMIN, "stats")["rate_limited"] == {"1002": len(limited)}


# -- who sees what -----------------------------------------------------------------------------------


def test_a_user_outside_the_group_is_refused_with_the_reason(serve: Serve) -> None:
    reply = serve().refused(OUTSIDER, "hello")
    assert reply.code == "denied"
    assert (
        "user eve is not in the group 'gpuprof' (an admin adds users with: usermod -aG gpuprof USER)"
        in str(reply.message)
    )


def test_a_job_is_its_owners_and_an_admins_alone(serve: Serve) -> None:
    served = serve(admin_groups=("admins",))
    job_id = served.ok(ALICE, "submit", {"spec": burn()})["job"]["id"]
    for kind in ("job", "cancel", "trace"):
        reply = served.refused(BOB, kind, {"id": job_id})
        assert reply.code == "denied" and "it belongs to alice; only its owner or an admin may" in str(
            reply.message
        )
    assert served.ok(BOB, "jobs")["jobs"] == []
    refused = served.refused(BOB, "jobs", {"user": "alice"})
    assert refused.code == "denied" and "only an admin sees other users' jobs" in str(refused.message)
    assert [job["id"] for job in served.ok(ADMIN, "jobs", {"user": "alice"})["jobs"]] == [job_id]
    assert served.ok(ADMIN, "job", {"id": job_id})["job"]["user"] == "alice"


def test_an_unknown_job_is_not_found_quoting_a_short_excerpt(serve: Serve) -> None:
    served = serve()
    assert served.refused(ALICE, "job", {"id": "0" * 32}).code == "not_found"
    reply = served.refused(ALICE, "job", {"id": "x" * 200})
    assert reply.code in ("not_found", "bad_request") and len(str(reply.message)) < 200


# -- cancel and trace --------------------------------------------------------------------------------


def test_cancel_a_queued_job_a_running_job_and_not_a_finished_one(serve: Serve) -> None:
    served = serve()
    queued = served.ok(ALICE, "submit", {"spec": burn()})["job"]["id"]
    cancelled = served.ok(ALICE, "cancel", {"id": queued})["job"]
    assert cancelled["state"] == "cancelled" and cancelled["reason"] == "cancelled by alice before it started"
    assert [(topic, kind) for topic, kind, _ in served.published] == [(queued, "job")]  # watchers are told

    running = served.ok(ALICE, "submit", {"spec": burn()})["job"]["id"]
    record = served.store.set_state(running, "running")
    served.runner.running[0] = FakeJob(record)
    assert served.ok(ALICE, "cancel", {"id": running})["job"]["id"] == running
    assert served.runner.cancelled == [(running, "alice")]  # the runner stops its worker

    again = served.refused(ALICE, "cancel", {"id": queued})
    assert again.code == "bad_request" and again.message == f"job {queued} already cancelled"


def test_a_trace_is_served_in_chunks_once_the_job_is_final(serve: Serve) -> None:
    served = serve()
    job_id = served.ok(ALICE, "submit", {"spec": burn()})["job"]["id"]
    early = served.refused(ALICE, "trace", {"id": job_id})
    assert early.code == "not_found" and "is queued: no trace yet" in str(early.message)
    samples = np.zeros(5, SAMPLE_DTYPE)
    samples["t_ns"] = [1, 2, 3, 4, 5]
    samples["power_mw"] = [100_000, 101_000, 102_000, 103_000, 104_000]
    energy = np.zeros(1, ENERGY_DTYPE)
    energy["t_start_ns"], energy["t_end_ns"], energy["energy_mj"] = [1], [5], [400]
    driver_power = np.zeros(2, DRIVER_POWER_DTYPE)
    driver_power["t_ns"], driver_power["power_mw"] = [2, 4], [100_500, 103_500]
    trace = Trace(samples, energy, simulated=True, driver_power=driver_power)
    served.store.save_trace(job_id, trace)
    served.store.set_state(job_id, "running")
    served.store.set_state(job_id, "succeeded")
    first = served.ok(ALICE, "trace", {"id": job_id, "limit": 3})
    assert (first["rows"], first["total"], first["next_offset"]) == (3, 5, 3)
    assert first["columns"]["t_ns"] == [1, 2, 3] and first["columns"]["power_w"] == [100.0, 101.0, 102.0]
    rest = served.ok(ALICE, "trace", {"id": job_id, "offset": 3, "limit": 3})
    assert (rest["rows"], rest["next_offset"], rest["columns"]["t_ns"]) == (2, None, [4, 5])
    assert served.ok(ALICE, "trace", {"id": job_id, "table": "energy"})["columns"]["energy_mj"] == [400]
    driver = served.ok(ALICE, "trace", {"id": job_id, "table": "driver_power"})
    assert driver["columns"] == {"t_ns": [2, 4], "gpu": [0, 0], "power_w": [100.5, 103.5]}
    served.store.driver_power_path(job_id).unlink()  # a trace an older daemon saved: no driver power
    older = served.ok(ALICE, "trace", {"id": job_id, "table": "driver_power"})
    assert (older["rows"], older["total"], older["next_offset"]) == (0, 0, None)
    assert "driver_power" in served.ok(ALICE, "hello")["capabilities"]  # a client may ask for the table


# -- the node, and a handler that fails --------------------------------------------------------------


def test_hello_gpus_and_stats_describe_the_node(serve: Serve) -> None:
    served = serve()
    hello = served.ok(ALICE, "hello", {"client": "test", "versions": [1]})
    assert hello["protocol"] == protocol.PROTOCOL_VERSION and hello["user"] == "alice"
    assert hello["pub_endpoint"].startswith("ipc://") and "jobs" in hello["capabilities"]
    assert isinstance(hello["daemon_version"], str)
    assert (hello["simulated"], hello["gpus"], hello["tcp_pub_port"]) == (True, 1, None)
    (gpu,) = served.ok(ALICE, "gpus")["gpus"]
    assert GpuInfo.from_dict(gpu) == served.handlers.node.inventory[0]  # the contract's type, whole
    assert gpu["index"] == 0 and gpu["simulated"] is True and gpu["uuid"].startswith("GPU-")
    stats = served.ok(ALICE, "stats")
    assert stats["jobs"] == {"running": {}, "queued": {"0": 0}} and stats["internal_errors"] == 0
    assert stats["requests"]["hello"]["count"] == 1 and stats["requests"]["gpus"]["count"] == 1
    missing = served.refused(ALICE, "history", {"gpu": 7})
    assert missing.code == "not_found" and "GPU 7 is not served here" in str(missing.message)


def test_a_handler_that_raises_costs_its_request_only(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve()

    def broken(body: object, caller: Caller) -> object:
        raise RuntimeError("a bug in one handler")

    monkeypatch.setattr(served.handlers, "on_gpus", broken)
    reply = served.refused(ALICE, "gpus")
    assert (reply.code, reply.message) == ("internal", "internal error; see the daemon's log")
    assert served.ok(ALICE, "hello")["user"] == "alice"
    assert served.handlers.bugs.total == 1 and served.ok(ALICE, "stats")["internal_errors"] == 1


BAD_PAYLOADS = [
    pytest.param(b"\xc1\xc1\xc1", (-1, "bad_request"), id="not-msgpack"),
    pytest.param(b"hello", (-1, "bad_request"), id="text"),
    pytest.param(b"", (-1, "bad_request"), id="empty-frame"),
    pytest.param(msgpack.packb([1, "hello"]), (-1, "bad_request"), id="msgpack-list"),
    pytest.param(msgpack.packb({1: 2}), (-1, "bad_request"), id="int-key"),
    pytest.param(msgpack.packb({"v": 1, "type": "hello", "body": {}}), (-1, "bad_request"), id="no-id"),
    pytest.param(protocol.encode_request("shutdown", {}, 7), (7, "unknown_type"), id="unknown-type"),
    pytest.param(  # unhashable: once a TypeError that stopped the daemon
        msgpack.packb({"v": 1, "type": ["hello"], "id": 7, "body": {}}), (7, "unknown_type"), id="list-type"
    ),
    pytest.param(msgpack.packb({"v": 1, "type": {"a": 1}, "id": 7}), (7, "unknown_type"), id="map-type"),
    pytest.param(
        msgpack.packb({"v": [1], "type": "hello", "id": 7}), (7, "unsupported_version"), id="list-v"
    ),
    pytest.param(
        msgpack.packb({"v": 1, "type": "hello", "id": 7, 1.5: 0, b"x": 0}),
        (-1, "bad_request"),
        id="float-key",
    ),
    pytest.param(
        msgpack.packb({"v": 1, "type": "hello", "id": 7, "x": 0, b"y": 0}),
        (7, "bad_request"),
        id="mixed-keys",
    ),
    pytest.param(
        msgpack.packb({"v": 1, "type": "job", "id": 7, "body": {b"id": "x"}}),
        (7, "bad_request"),
        id="bin-field",
    ),
    pytest.param(
        msgpack.packb({"v": 2, "type": "hello", "id": 7}), (7, "unsupported_version"), id="version-2"
    ),
    pytest.param(protocol.encode_request("job", {"id": 5}, 7), (7, "bad_request"), id="int-job-id"),
    pytest.param(protocol.encode_request("jobs", {"gpu": "0"}, 7), (7, "bad_request"), id="str-gpu"),
    pytest.param(protocol.encode_request("jobs", {"gpu": 2**64 - 1}, 7), (7, "bad_request"), id="huge-gpu"),
    pytest.param(protocol.encode_request("jobs", {"limit": -(2**63)}, 7), (7, "bad_request"), id="neg-limit"),
    pytest.param(protocol.encode_request("jobs", {"state": "done"}, 7), (7, "bad_request"), id="bad-state"),
    pytest.param(protocol.encode_request("gpus", {"all": True}, 7), (7, "bad_request"), id="extra-field"),
    pytest.param(protocol.encode_request("submit", {"spec": []}, 7), (7, "bad_request"), id="spec-list"),
    pytest.param(protocol.encode_request("job", {"id": "../../x"}, 7), (7, "not_found"), id="path-id"),
    pytest.param(
        protocol.encode_request("trace", {"id": "0" * 16, "offset": 2**64 - 1}, 7),
        (7, "bad_request"),
        id="huge-offset",
    ),
    pytest.param(
        protocol.encode_request("hello", {"client": "x" * 5000}, 7), (-1, "too_large"), id="too-large"
    ),
]


@pytest.mark.parametrize(("payload", "expected"), BAD_PAYLOADS)
def test_a_malformed_request_gets_an_error_and_the_next_is_served(
    serve: Serve, payload: bytes, expected: tuple[int, str]
) -> None:
    served = serve(max_message_bytes=4096)
    reply = protocol.decode_reply(served.handlers.answer(payload, ALICE))
    assert not reply.ok and (reply.id, reply.code) == expected, reply  # id -1: nil, not readable
    assert served.ok(ALICE, "hello")["user"] == "alice"


def test_gpus_time_and_hello_replies_have_the_documented_fields(serve: Serve) -> None:
    served = serve()
    (gpu,) = served.ok(ALICE, "gpus")["gpus"]
    assert set(gpu) >= {
        "index",
        "name",
        "uuid",
        "simulated",
        "memory_clocks_mhz",
        "graphics_clocks_mhz",
        "power_limit_w",
        "min_power_limit_w",
        "max_power_limit_w",
    }
    assert "simulated" in gpu["name"]
    assert gpu["graphics_clocks_mhz"] and all(isinstance(c, int) for c in gpu["graphics_clocks_mhz"])
    assert gpu["memory_clocks_mhz"] and all(isinstance(c, int) for c in gpu["memory_clocks_mhz"])
    assert gpu["min_power_limit_w"] <= gpu["power_limit_w"] <= gpu["max_power_limit_w"]

    mono_before, wall_before = time.monotonic_ns(), time.time_ns()
    clocks = served.ok(ALICE, "time")
    mono_after, wall_after = time.monotonic_ns(), time.time_ns()
    assert set(clocks) == {"monotonic_ns", "wall_ns"}
    assert mono_before <= clocks["monotonic_ns"] <= mono_after  # one host: one CLOCK_MONOTONIC
    assert wall_before <= clocks["wall_ns"] <= wall_after


def test_the_dvfs_rule_names_users_and_groups_and_always_allows_root() -> None:
    policy = Policy(
        DaemonConfig(allow_dvfs=True, dvfs_users=("carol",), dvfs_groups=("tuners",)), daemon_uid=1
    )
    alice = Caller(uid=1001, user="alice", gid=1001, groups=frozenset({"gpuprof", "admins"}))
    with pytest.raises(
        protocol.ProtocolError, match="user alice is not among those allowed to change clocks"
    ):
        policy.check_dvfs(alice)
    policy.check_dvfs(Caller(uid=1002, user="carol", gid=1, groups=frozenset()))
    policy.check_dvfs(Caller(uid=1003, user="dan", gid=1, groups=frozenset({"tuners"})))
    policy.check_dvfs(Caller(uid=0, user="root", gid=0, groups=frozenset()))
    off = Policy(DaemonConfig(allow_dvfs=False, dvfs_users=("carol",)), daemon_uid=1)
    with pytest.raises(protocol.ProtocolError, match="clock changes are off"):
        off.check_dvfs(Caller(uid=1002, user="carol", gid=1, groups=frozenset()))


def test_metrics_give_each_gpus_last_readings_and_jobs_energy_without_user_names(serve: Serve) -> None:
    served = serve()
    now = time.monotonic_ns()
    samples = np.zeros(3, dtype=SAMPLE_DTYPE)
    samples["t_ns"] = [now - 3_000_000, now - 2_000_000, now - 1_000_000]
    samples["power_mw"], samples["sm_clock_mhz"], samples["mem_clock_mhz"] = 250_500, 1410, 2619
    samples["clock_event_reasons"] = 0x4  # sw_power_cap
    energy = np.zeros(2, dtype=ENERGY_DTYPE)
    energy["t_start_ns"] = energy["t_end_ns"] = [now - 2_500_000, now - 1_500_000]
    energy["energy_mj"] = [1_000_000, 1_025_000]
    served.handlers.history.append(samples, energy)
    job = served.ok(ALICE, "submit", {"spec": burn()})["job"]
    served.runner.running[0] = FakeJob(served.store.get(job["id"]))  # type: ignore[arg-type]
    metrics = served.ok(BOB, "metrics")  # any member: nothing in it names a user
    (gpu,) = metrics["gpus"]
    assert (gpu["power_w"], gpu["sm_clock_mhz"], gpu["mem_clock_mhz"]) == (250.5, 1410, 2619)
    assert gpu["energy_j"] == 1025.0 and gpu["clock_event_reasons"] == ["sw_power_cap"]
    assert gpu["running_job"] == job["id"] and gpu["uuid"]
    assert metrics["jobs"] == {job["id"]: {"gpu": 0, "energy_j": 12.5, "running": True, "slurm_job_id": None}}
    assert "alice" not in str(metrics) and metrics["simulated"] is True
    assert served.refused(OUTSIDER, "metrics").code == "denied"
