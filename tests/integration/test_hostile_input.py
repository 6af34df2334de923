"""What a hostile member can send gpuprofd costs them a short refusal, and costs the daemon nothing.

A real gpuprofd (simulated GPU) gets requests of the wrong shape, oversized ids and subscriptions, and
job specs it must refuse; it keeps serving, its memory and log stay bounded, a running job is untouched,
and each refusal is short. The request loop's handling of a handler that raises is checked in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from daemon_harness import DaemonProcess, RawClient

from gpuprof.client.wire import protocol
from gpuprof.daemon.config import DaemonConfig
from gpuprof.daemon.server.daemon import Daemon, _bind
from gpuprof.daemon.server.identity import Caller

BURN_YAML = "workload: burn\ntimeout_s: 30\nburn:\n  seconds: 0.5\n  warmup_s: 0\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def hello_s(endpoint: str) -> float:
    """How long a new client waits for ``hello`` (at most 1 s, else the test fails)."""
    raw = RawClient(endpoint)
    try:
        started = time.monotonic()
        assert raw.request("hello", timeout_s=1.0).ok
        return time.monotonic() - started
    finally:
        raw.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path).start()
    yield process
    process.kill()


def wait_final(raw: RawClient, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = raw.request("job", {"id": job_id}).body["job"]
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def test_a_request_of_any_shape_is_refused_and_a_running_job_goes_on(daemon: DaemonProcess) -> None:
    raw = RawClient(daemon.endpoint)
    try:
        spec = {"workload": "burn", "timeout_s": 30, "burn": {"seconds": 1.0, "warmup_s": 0}}
        job_id = raw.request("submit", {"spec": spec}).body["job"]["id"]
        for message in (
            {"v": 1, "type": ["hello"], "id": 1, "body": {}},  # once a TypeError that ended the daemon
            {"v": 1, "type": {"hello": 1}, "id": 2, "body": {}},
            {"v": {"x": [1]}, "type": "hello", "id": 3},
            {"v": 1, "type": "jobs", "id": 4, "body": {"user": ["root"]}},
            {"v": 1, "type": "submit", "id": 5, "body": {"spec": {"workload": ["burn"]}}},
            {"v": 1, "type": "submit", "id": 6, "body": {"spec": {b"workload": "burn"}}},
            {"v": 1, "type": "history", "id": 7, "body": {"gpu": 0, "seconds": 1e308, "max_points": 1}},
        ):
            raw.send_raw(msgpack.packb(message, use_bin_type=True))
            reply = raw.receive()
            assert reply.id == message["id"] and len(reply.message or "") < 400, reply
        assert wait_final(raw, job_id)["state"] == "succeeded"  # not "interrupted" by a daemon that died
    finally:
        raw.close()
    assert daemon.process is not None and daemon.process.poll() is None


# A subscriber of its own process: libzmq frees a SUB socket's topics recursively, and the stack of
# the process that closes a socket holding a 10 MB topic overflows. It never closes: it exits.
SUBSCRIBER = """
import os, sys, time, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.connect(sys.argv[1])
sub.setsockopt(zmq.SUBSCRIBE, bytes.fromhex(sys.argv[2]) + bytes.fromhex(sys.argv[3]) * int(sys.argv[4]))
print("subscribed", flush=True)
sys.stdin.read()
os._exit(0)
"""


def test_oversized_subscriptions_cost_the_daemon_no_memory_and_no_time(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    raw = RawClient(daemon.endpoint)
    pub_endpoint = raw.request("hello").body["pub_endpoint"]
    raw.close()
    before = rss_mib(daemon.process.pid)
    subscribers = []
    # Unbounded, a member's 2 MB gpu/ topic cost the daemon ~225 MiB and a 10 MB one 0.9 GiB.
    for prefix, unit, count in ((b"gpu/", b"1", 2_000_000), (b"", b"x", 10_000_000), (b"job/", b"0", 60)):
        subscribers.append(
            subprocess.Popen(
                [sys.executable, "-c", SUBSCRIBER, pub_endpoint, prefix.hex(), unit.hex(), str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for subscriber in subscribers:
            assert subscriber.stdout is not None and subscriber.stdout.readline().strip() == "subscribed"
        time.sleep(1.0)  # the subscriptions reach the daemon, which reads them
        assert hello_s(daemon.endpoint) < 1.0
        grown = rss_mib(daemon.process.pid) - before
        assert grown < 30, f"the daemon grew by {grown:.0f} MiB"
    finally:
        for subscriber in subscribers:
            subscriber.communicate("", timeout=10)
    # A member's subscription to a GPU still works.
    live = zmq.Context.instance().socket(zmq.SUB)
    live.setsockopt(zmq.LINGER, 0)
    live.connect(pub_endpoint)
    live.setsockopt(zmq.SUBSCRIBE, b"gpu/0")
    try:
        assert live.poll(5000), "no live samples"
        assert live.recv_multipart()[0] == b"gpu/0"
    finally:
        live.close()
    log = daemon.log.read_text()
    assert "ignored a subscription" in log and max(len(line) for line in log.splitlines()) <= 1000


def test_a_refusal_quotes_a_short_excerpt_and_the_log_stays_small(daemon: DaemonProcess) -> None:
    raw = RawClient(daemon.endpoint)
    try:
        raw.send_raw(protocol.encode_request("job", {"id": "x" * 500_000}, 1))
        frames = raw.socket.recv_multipart() if raw.socket.poll(5000) else []
        assert frames and len(frames[-1]) <= protocol.MAX_ERROR_FRAME_BYTES
        reply = protocol.decode_reply(frames[-1])
        assert reply.code == "bad_request" and "500,000 characters" in (reply.message or "")
        for n in range(200):  # the same refusal, many times: logged a burst at a time, not 200 times
            raw.send_raw(protocol.encode_request("job", {"id": f"{n:x}" * 100}, 2))
            assert raw.receive().code == "not_found"
    finally:
        raw.close()
    log = daemon.log.read_text()
    assert len(log) < 20_000 and max(len(line) for line in log.splitlines()) <= 1000


def _gpuprof(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuprof.client.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "GPUPROF_ENDPOINT": ""},
    )


def test_a_fifo_as_a_job_spec_is_refused_at_once_by_submit_and_run(tmp_path: Path) -> None:
    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)  # nothing ever writes it: a plain open() to read would wait forever
    for command in (["submit", str(fifo), "--endpoint", f"ipc://{tmp_path}/d.sock"], ["run", str(fifo)]):
        done = _gpuprof(*command, timeout_s=30)
        assert done.returncode == 8, done.stderr
        assert "job.yaml: cannot read job spec: not a regular file: it is a FIFO" in done.stderr


@pytest.mark.parametrize(
    ("extra", "config", "line", "key", "says"),
    [
        (
            "timeout_s: 200\n",
            "max_timeout_s = 100.0\ndefault_timeout_s = 60.0\n",
            6,
            "timeout_s",
            "exceeds this daemon's limit of 100 s",
        ),
        ("gpu: 5\n", "", 6, "gpu", "GPU 5 is not served here"),
        ("dvfs:\n  sm_clocks: 1234\n", "", 6, "dvfs", "dvfs denied: clock changes are off on this node"),
        ("dvfs:\n  sm_clocks: 1234\n", "allow_dvfs = true\n", 7, "dvfs.sm_clocks", "nearest supported"),
        (
            "dvfs:\n  sm_clocks: [1980, 1234]\n",
            "allow_dvfs = true\n",
            7,
            "dvfs.sm_clocks[1]",
            "does not support an SM clock of 1234 MHz",
        ),
        ("dvfs:\n  power_limit_w: 9000\n", "allow_dvfs = true\n", 7, "dvfs.power_limit_w", "not 9000 W"),
    ],
)
def test_a_spec_the_daemon_refuses_is_named_by_file_line_and_key(
    tmp_path: Path, extra: str, config: str, line: int, key: str, says: str
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: refused\n" + BURN_YAML.replace("timeout_s: 30\n", "") + extra)
    if "timeout_s" not in extra:
        spec.write_text(spec.read_text() + "timeout_s: 30\n")
    daemon = DaemonProcess(tmp_path, config).start()
    try:
        done = _gpuprof("submit", str(spec), "--endpoint", daemon.endpoint)
    finally:
        daemon.kill()
    assert done.returncode != 0
    assert f"{spec}:{line}: {key}: " in done.stderr and says in done.stderr, done.stderr
    assert "<submitted spec>" not in done.stderr and "Traceback" not in done.stderr


def test_a_handler_that_raises_costs_one_request_and_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = DaemonConfig(
        simulate=True, endpoint=f"ipc://{tmp_path}/d.sock", state_dir=str(tmp_path / "state"), socket_group=""
    )
    umask = os.umask(0o022)
    daemon = Daemon(config)  # sets the process's umask to 077, as gpuprofd's: put back after the test
    client = daemon.context.socket(zmq.DEALER)
    try:
        _bind(daemon.router, config.endpoint, "")
        client.connect(config.endpoint)

        def broken(body: object, caller: Caller) -> object:
            raise RuntimeError("a bug in one handler")

        monkeypatch.setattr(daemon.handlers, "on_gpus", broken)
        for request_id, kind in ((1, "gpus"), (2, "hello"), (3, "gpus"), (4, "time")):
            client.send(protocol.encode_request(kind, {}, request_id))
        replies: dict[int, protocol.Reply] = {}
        deadline = time.monotonic() + 10
        while len(replies) < 4 and time.monotonic() < deadline:
            daemon.zap.handle()  # the connection's user, as the loop would learn it
            daemon._serve_requests()
            if client.poll(10):
                reply = protocol.decode_reply(client.recv())
                replies[reply.id] = reply
        assert [(replies[i].ok, replies[i].code) for i in (1, 2, 3, 4)] == [
            (False, "internal"),
            (True, None),
            (False, "internal"),
            (True, None),
        ]
        assert replies[1].message == "internal error; see the daemon's log"
        daemon._guarded(broken, {}, None)  # a loop step that raises is logged, not raised
        assert daemon.bugs.total == 3
    finally:
        client.close(linger=0)
        daemon.sampler.close()
        daemon.router.close(linger=0)
        daemon.pub.close(linger=0)
        daemon.zap.close()
        daemon.context.term()
        os.umask(umask)
