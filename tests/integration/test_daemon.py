"""gpuprofd as a process: jobs on the simulated GPU, bad input, killed and hung workers, restarts, cancel.

Each test runs its own ``gpuprofd serve --simulate`` (tests/integration/daemon_harness.py) on a temporary
ipc endpoint and state directory, and speaks the wire protocol directly.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from daemon_harness import DaemonProcess, RawClient

from gpuprof.client.wire import protocol
from gpuprof.sampler.sim import SimConfig, SimulatedNvml
from gpuprof.sampler.sim_config import GpuSpec
from gpuprof.sampler.trace import SAMPLE_COLUMNS

FINAL = ("succeeded", "failed", "cancelled", "interrupted")
IDLE_POWER_W = GpuSpec().idle_power_w
ENERGY_COLUMNS = ["t_ns", "t_start_ns", "t_end_ns", "gpu", "energy_mj", "nvml_return"]
StartDaemon = Callable[..., DaemonProcess]


def burn(seconds: float, period_s: float = 0.25, duty_cycle: float = 0.8, **top: Any) -> dict[str, Any]:
    """A burn job spec as data (what a client submits), without warmup."""
    spec: dict[str, Any] = {"workload": "burn", "timeout_s": 30}
    spec["burn"] = {"seconds": seconds, "period_s": period_s, "duty_cycle": duty_cycle, "warmup_s": 0}
    spec.update(top)
    return spec


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    """The first truthy value of ``predicate()``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def submit(client: RawClient, spec: dict[str, Any]) -> str:
    reply = client.request("submit", {"spec": spec})
    assert reply.ok, reply
    return str(reply.body["job"]["id"])


def job(client: RawClient, job_id: str) -> dict[str, Any]:
    reply = client.request("job", {"id": job_id})
    assert reply.ok, reply
    return dict(reply.body["job"])


def wait_state(client: RawClient, job_id: str, states: tuple[str, ...], timeout_s: float = 15.0) -> Any:
    """The job map once the job is in one of ``states``."""

    def reached() -> dict[str, Any] | None:
        record = job(client, job_id)
        return record if record["state"] in states else None

    return wait_for(reached, f"job {job_id} to become {' or '.join(states)}", timeout_s)


Columns = dict[str, list[Any]]


def fetch_trace(
    client: RawClient, job_id: str, table: str = "samples", limit: int = 50_000
) -> tuple[Columns, list[dict[str, Any]]]:
    """(columns, replies) of a job's whole trace, read ``limit`` rows at a time."""
    columns: Columns = {}
    chunks: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        reply = client.request("trace", {"id": job_id, "table": table, "offset": offset, "limit": limit})
        assert reply.ok, reply
        chunks.append(reply.body)
        for name, values in reply.body["columns"].items():
            assert len(values) == reply.body["rows"]
            columns.setdefault(name, []).extend(values)
        offset = reply.body["next_offset"]
        assert len(chunks) < 1000
    return columns, chunks


def worker_pids(daemon: DaemonProcess) -> list[int]:
    """Job workers the daemon runs now: its children started as ``-m gpuprof.daemon.worker``."""
    assert daemon.process is not None
    pids: list[int] = []
    for children in Path(f"/proc/{daemon.process.pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in children.read_text().split()]
    return [pid for pid in pids if b"gpuprof.daemon.worker" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended; its parent may not reap it at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def sim_util(gpu: int = 0) -> float:
    return SimulatedNvml().status()[gpu].util_pct


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Starts gpuprofd in ``tmp_path`` (again on the same state after a kill); stops all it started."""
    started: list[DaemonProcess] = []

    def start(extra_config: str = "") -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, extra_config)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        if daemon.process is not None:
            try:
                daemon.kill(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                daemon.kill(signal.SIGKILL)


@pytest.fixture
def client(start_daemon: StartDaemon) -> Iterator[RawClient]:
    raw = RawClient(start_daemon().endpoint)
    yield raw
    raw.close()


@pytest.fixture
def worker_reaper() -> Iterator[list[int]]:
    """Process groups of workers a test saw; killed at the end in case a killed daemon left them running."""
    groups: list[int] = []
    yield groups
    for group in groups:
        if b"gpuprof.daemon.worker" in _cmdline(group):  # still that worker, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def the_worker(daemon: DaemonProcess, groups: list[int]) -> int:
    """The pid of the daemon's one running worker (also its process group), remembered for cleanup."""
    pids = wait_for(lambda: worker_pids(daemon), "the job's worker process")
    assert len(pids) == 1, pids
    groups.append(pids[0])
    return int(pids[0])


# -- a job from submit to trace ----------------------------------------------------------------------


def test_a_burn_job_succeeds_with_energy_windows_and_a_chunked_trace(client: RawClient) -> None:
    job_id = submit(client, burn(1.0))
    record = wait_state(client, job_id, FINAL)
    assert record["state"] == "succeeded" and record["reason"] is None, record
    assert record["simulated"] is True and record["gpu"] == 0
    result = record["result"]
    assert result["simulated"] is True
    counter, integrated = result["energy_counter_j"], result["energy_integrated_j"]
    assert counter > 0 and integrated > 0
    bounds = result["energy_counter_uncertainty_j"] + result["energy_integrated_uncertainty_j"]
    assert abs(counter - integrated) <= bounds, (counter, integrated, bounds)
    assert 1.0 <= result["duration_s"] < 10
    assert result["mean_power_w"] > 2 * IDLE_POWER_W  # busy 80 % of the time at up to ~700 W
    names = [w["name"] for w in result["windows"]]
    assert names.count("measure") == 1 and names.count("step") == 4, names
    measure = result["windows"][names.index("measure")]
    listed = client.request("jobs").body["jobs"][0]["result"]  # listings carry totals, not every window
    assert "windows" not in listed and listed["window_count"] == len(names)
    assert listed["energy_counter_j"] == result["energy_counter_j"]
    assert measure["duration_s"] == pytest.approx(1.0, abs=0.1)
    for window in result["windows"]:
        assert "shorter_than_sensor_update" in window

    columns, chunks = fetch_trace(client, job_id, limit=300)
    total = chunks[0]["total"]
    assert len(chunks) == -(-total // 300) >= 3  # forced into several chunks
    assert [c["rows"] for c in chunks[:-1]] == [300] * (len(chunks) - 1)
    assert list(columns) == SAMPLE_COLUMNS
    assert len(columns["t_ns"]) == total >= result["samples"]
    assert columns["t_ns"] == sorted(set(columns["t_ns"]))
    assert set(columns["gpu"]) == {0}
    assert max(columns["util_pct"]) == 100 and min(columns["util_pct"]) == 0
    energy_columns, energy_chunks = fetch_trace(client, job_id, table="energy", limit=4)
    assert list(energy_columns) == ENERGY_COLUMNS and len(energy_chunks) >= 2
    driver_columns, _ = fetch_trace(client, job_id, table="driver_power")  # one every 20 ms, read in batches
    assert list(driver_columns) == ["t_ns", "gpu", "power_w"] and set(driver_columns["gpu"]) == {0}
    assert len(driver_columns["t_ns"]) >= 25 and max(driver_columns["power_w"]) > 2 * IDLE_POWER_W

    listed = client.request("jobs", {"state": "succeeded"})
    assert [j["id"] for j in listed.body["jobs"]] == [job_id]


# -- bad input ---------------------------------------------------------------------------------------


def _reply_frames(raw: RawClient, timeout_s: float = 5.0) -> list[bytes] | None:
    if not raw.socket.poll(int(timeout_s * 1000)):
        return None
    return list(raw.socket.recv_multipart())


def _error(frames: list[bytes] | None) -> tuple[int, str | None]:
    assert frames is not None, "no reply"
    assert len(frames) == 1, frames
    reply = protocol.decode_reply(frames[0])
    assert not reply.ok, reply
    return reply.id, reply.code


def assert_serving(endpoint: str) -> None:
    """A new client's ``hello`` is answered."""
    raw = RawClient(endpoint)
    try:
        assert raw.request("hello", {"client": "test"}).ok
    finally:
        raw.close()


# What a request's frames can be that the socket loop itself must refuse; what a single frame's payload
# can be is tested in-process (tests/unit/test_handlers.py), one of them here end to end.
BAD_FRAMES = [
    pytest.param(  # unhashable: once a TypeError that stopped the daemon
        [msgpack.packb({"v": 1, "type": ["hello"], "id": 7, "body": {}})], (7, "unknown_type"), id="list-type"
    ),
    pytest.param(  # a DEALER that sends two requests as one message: neither is run
        [protocol.encode_request("hello", {}, 7), protocol.encode_request("hello", {}, 8)],
        (-1, "bad_request"),
        id="two-requests",
    ),
    pytest.param(
        [b"a", b"b", b"c", protocol.encode_request("hello", {}, 7)], (-1, "bad_request"), id="many-frames"
    ),
]


@pytest.mark.parametrize(("frames", "expected"), BAD_FRAMES)
def test_malformed_requests_get_an_error_and_the_daemon_keeps_serving(
    start_daemon: StartDaemon, frames: list[bytes], expected: tuple[int, str]
) -> None:
    daemon = start_daemon("max_message_bytes = 4096\n")
    raw = RawClient(daemon.endpoint)
    try:
        raw.send_raw(*frames)
        request_id, code = _error(_reply_frames(raw))
        assert (request_id, code) == expected  # id -1: nil, the request's id could not be read
        assert raw.request("hello").ok  # the same connection still works
    finally:
        raw.close()
    assert_serving(daemon.endpoint)


def test_frames_it_cannot_answer_and_clients_that_vanish_do_not_stop_the_daemon(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon("max_message_bytes = 4096\n")
    raw = RawClient(daemon.endpoint)
    try:
        # Far over the limit: ZeroMQ drops the connection without reading it; the DEALER reconnects.
        raw.send_raw(protocol.encode_request("hello", {"client": "x" * 100_000}, 1))
        assert _reply_frames(raw, timeout_s=1.0) is None
        assert wait_for(lambda: _hello_within(raw, 0.5), "the dropped client to reconnect")
    finally:
        raw.close()
    for _ in range(20):  # ask, then go away before the reply
        gone = RawClient(daemon.endpoint)
        gone.socket.setsockopt(zmq.LINGER, 2000)  # the request leaves before the socket closes
        gone.send_raw(protocol.encode_request("gpus", {}, 1))
        gone.send_raw(protocol.encode_request("jobs", {"limit": 10_000}, 2))
        gone.close()
    assert_serving(daemon.endpoint)
    assert daemon.process is not None and daemon.process.poll() is None


def _hello_within(raw: RawClient, timeout_s: float) -> bool:
    try:
        return raw.request("hello", timeout_s=timeout_s).ok
    except TimeoutError:
        return False


def test_a_req_client_gets_its_delimiter_back(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(daemon.endpoint)
    try:
        for request_id in (1, 2):
            req.send(protocol.encode_request("time", {}, request_id))
            assert req.poll(5000)
            reply = protocol.decode_reply(req.recv())
            assert reply.ok and reply.id == request_id
        # Two frames after the delimiter: refused, and the refusal reaches the REQ (a REQ socket drops a
        # reply without its delimiter, and would then wait for ever).
        req.send_multipart([protocol.encode_request("time", {}, 3), protocol.encode_request("time", {}, 4)])
        assert req.poll(5000)
        refused = protocol.decode_reply(req.recv())
        assert not refused.ok and refused.code == "bad_request"
    finally:
        req.close()
    raw = RawClient(daemon.endpoint)  # the same framing from a DEALER
    try:
        raw.send_raw(b"", protocol.encode_request("hello", {}, 3))
        frames = _reply_frames(raw)
        assert frames is not None and frames[0] == b"" and len(frames) == 2
        assert protocol.decode_reply(frames[1]).id == 3
    finally:
        raw.close()


# -- workers that die or hang ------------------------------------------------------------------------


def test_a_sigkilled_worker_fails_its_job_and_the_next_job_runs(
    start_daemon: StartDaemon, worker_reaper: list[int]
) -> None:
    daemon = start_daemon()
    client = RawClient(daemon.endpoint)
    try:
        first = submit(client, burn(5.0))
        second = submit(client, burn(0.5))
        wait_state(client, first, ("running",))
        pid = the_worker(daemon, worker_reaper)
        wait_for(lambda: sim_util() == 100, "the worker to load the simulated GPU")
        assert job(client, second)["state"] == "queued"
        os.kill(pid, signal.SIGKILL)
        failed = wait_state(client, first, FINAL)
        assert failed["state"] == "failed" and "SIGKILL" in failed["reason"], failed
        assert failed["result"] is not None  # what was measured until then
        done = wait_state(client, second, FINAL)
        assert done["state"] == "succeeded", done

        # Killed with nothing queued: the simulated GPU goes idle, as a real one does when its process dies.
        third = submit(client, burn(5.0, duty_cycle=1.0, period_s=5.0))
        wait_state(client, third, ("running",))
        pid = the_worker(daemon, worker_reaper)
        wait_for(lambda: sim_util() == 100, "the worker to load the simulated GPU")
        os.kill(pid, signal.SIGKILL)
        assert "SIGKILL" in wait_state(client, third, FINAL)["reason"]
        wait_for(lambda: sim_util() == 0, "the simulated GPU to go idle", timeout_s=3)
    finally:
        client.close()


def test_a_job_over_its_memory_or_output_limit_fails_saying_which(
    start_daemon: StartDaemon, worker_reaper: list[int]
) -> None:
    daemon = start_daemon("worker_memory_limit_mb = 16\nworker_output_limit_mb = 1\n")
    client = RawClient(daemon.endpoint)
    try:
        # A Python worker holds more than 16 MiB once it has imported what it runs.
        hungry = wait_state(client, submit(client, burn(10.0)), FINAL)
        assert (
            hungry["state"] == "failed"
            and "over the limit of 16 MiB (worker_memory_limit_mb)" in (hungry["reason"])
        )
        assert hungry["result"] is not None  # what was measured until then is kept
    finally:
        client.close()
    daemon.kill()
    daemon = start_daemon("worker_output_limit_mb = 1\n")
    client = RawClient(daemon.endpoint)
    try:
        job_id = submit(client, burn(10.0))
        wait_state(client, job_id, ("running",))
        the_worker(daemon, worker_reaper)
        outputs = daemon.state_dir / "jobs" / job_id / "outputs.bin"
        outputs.write_bytes(os.urandom(2 << 20))  # as the job's own outputs would be
        verbose = wait_state(client, job_id, FINAL)
        assert verbose["state"] == "failed" and "(worker_output_limit_mb)" in verbose["reason"], verbose
    finally:
        client.close()


def test_a_stopped_worker_fails_its_job_at_the_timeout(
    start_daemon: StartDaemon, worker_reaper: list[int]
) -> None:
    daemon = start_daemon()
    client = RawClient(daemon.endpoint)
    try:
        job_id = submit(client, burn(1.0, timeout_s=1.5))
        wait_state(client, job_id, ("running",))
        pid = the_worker(daemon, worker_reaper)
        wait_for(lambda: sim_util() == 100, "the worker to load the simulated GPU")
        os.kill(pid, signal.SIGSTOP)  # hangs, with its GPU busy: it never ends on its own
        record = wait_state(client, job_id, FINAL, timeout_s=10)
        assert record["state"] == "failed", record
        assert "timed out after 1.5 s" in record["reason"] and "timeout_s" in record["reason"], record
        assert not alive(pid)
        wait_for(lambda: sim_util() == 0, "the simulated GPU to go idle", timeout_s=3)
        assert_serving(daemon.endpoint)
    finally:
        client.close()


# -- the daemon killed and restarted -----------------------------------------------------------------


def test_a_restart_after_sigkill_interrupts_the_running_job_and_keeps_finished_ones(
    start_daemon: StartDaemon, worker_reaper: list[int]
) -> None:
    daemon = start_daemon()
    client = RawClient(daemon.endpoint)
    try:
        finished = submit(client, burn(0.5))
        before = wait_state(client, finished, FINAL)
        assert before["state"] == "succeeded"
        trace_before = fetch_trace(client, finished)[0]
        energy_before = fetch_trace(client, finished, table="energy")[0]
        driver_power_before = fetch_trace(client, finished, table="driver_power")[0]
        running = submit(client, burn(20.0, duty_cycle=1.0, period_s=20.0, timeout_s=60))
        queued = submit(client, burn(0.5))
        wait_state(client, running, ("running",))
        orphan = the_worker(daemon, worker_reaper)
        wait_for(lambda: sim_util() == 100, "the worker to load the simulated GPU")
    finally:
        client.close()

    assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
    assert alive(orphan)  # in its own session: the daemon's death does not stop it

    daemon = start_daemon()
    client = RawClient(daemon.endpoint)
    try:
        interrupted = job(client, running)
        assert interrupted["state"] == "interrupted" and interrupted["reason"], interrupted
        assert "gpuprofd stopped" in interrupted["reason"]
        assert job(client, queued)["state"] == "interrupted"
        assert job(client, finished) == before
        assert fetch_trace(client, finished)[0] == trace_before
        assert fetch_trace(client, finished, table="energy")[0] == energy_before
        assert fetch_trace(client, finished, table="driver_power")[0] == driver_power_before
        # The new daemon stops the orphaned worker, which leaves the GPU idle.
        wait_for(lambda: not alive(orphan), "the orphaned worker to be stopped", timeout_s=10)
        wait_for(lambda: sim_util() == 0, "the simulated GPU to go idle", timeout_s=3)
        later = submit(client, burn(0.5))
        assert wait_state(client, later, FINAL)["state"] == "succeeded"
    finally:
        client.close()


# -- cancel ------------------------------------------------------------------------------------------


def test_cancel_a_queued_job_a_running_job_and_not_a_finished_one(
    start_daemon: StartDaemon, worker_reaper: list[int]
) -> None:
    daemon = start_daemon()
    client = RawClient(daemon.endpoint)
    live = zmq.Context.instance().socket(zmq.SUB)
    live.setsockopt(zmq.LINGER, 0)
    try:
        running = submit(client, burn(10.0))
        queued = submit(client, burn(0.5))
        live.connect(client.request("hello").body["pub_endpoint"])
        live.subscribe(protocol.topic_for_job(queued))
        live.subscribe(b"gpu/0")
        assert live.poll(5000)  # samples arrive: the subscription is in place

        reply = client.request("cancel", {"id": queued})
        assert reply.ok and reply.body["job"]["state"] == "cancelled", reply
        assert "before it started" in reply.body["job"]["reason"]
        announced = wait_for(lambda: _job_message(live, queued), "the cancelled job to be published")
        assert announced["state"] == "cancelled"

        wait_state(client, running, ("running",))
        pid = the_worker(daemon, worker_reaper)
        reply = client.request("cancel", {"id": running})
        assert reply.ok and reply.body["job"]["state"] in ("running", "cancelled"), reply
        record = wait_state(client, running, FINAL, timeout_s=10)
        assert record["state"] == "cancelled", record
        assert f"cancelled by {getpass.getuser()}" in record["reason"]  # who, as the kernel told the daemon
        wait_for(lambda: not alive(pid), "the worker to exit")
        assert sim_util() == 0

        for job_id in (running, queued):
            again = client.request("cancel", {"id": job_id})
            assert not again.ok and again.code == "bad_request" and "already cancelled" in str(again.message)
        missing = client.request("cancel", {"id": "0" * 16})
        assert not missing.ok and missing.code == "not_found"
        assert job(client, queued)["started_ns"] is None
    finally:
        live.close()
        client.close()


def _job_message(live: zmq.Socket[bytes], job_id: str) -> dict[str, Any] | None:
    while live.poll(0):
        topic, payload = live.recv_multipart()
        kind, body = protocol.decode_publish(payload)
        if topic == protocol.topic_for_job(job_id) and kind == "job":
            return dict(body["job"])
    return None


# -- a stalled live viewer ---------------------------------------------------------------------------

# The viewer is a process stopped with SIGSTOP, not a socket in this process left unread: a SUB socket's
# own I/O thread keeps reading and drops past its RCVHWM, so the daemon would never feel an unread one.
# A stopped process reads nothing; its socket buffers fill and the daemon's PUB reaches its high-water mark.

VIEWER = """
import json, sys, msgpack, zmq
socket = zmq.Context().socket(zmq.SUB)
socket.connect(sys.argv[1])
socket.subscribe(b"gpu/")
socket.poll()
print("ready", flush=True)
until_ns = int(sys.stdin.readline())  # stopped (SIGSTOP) before this line comes, then continued
ends = []
while not ends or ends[-1] < until_ns:
    topic, payload = socket.recv_multipart()
    if topic == b"gpu/0":
        ends.append(msgpack.unpackb(payload)["body"]["t_ns"][-1])
print(json.dumps(ends), flush=True)
"""


def test_a_stalled_live_viewer_does_not_slow_the_sampler(start_daemon: StartDaemon) -> None:
    # Eight simulated GPUs publish enough (~250 kB/s) to fill a stalled viewer's socket buffers in the job.
    SimulatedNvml().configure(SimConfig(gpus=(GpuSpec(),) * 8))
    daemon = start_daemon("pub_hwm = 50\nrate_hz = 1000.0\n")
    client = RawClient(daemon.endpoint)
    viewer = subprocess.Popen(
        [sys.executable, "-c", VIEWER, client.request("hello").body["pub_endpoint"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert viewer.stdin is not None and viewer.stdout is not None
    try:
        assert viewer.stdout.readline() == "ready\n"
        viewer.send_signal(signal.SIGSTOP)
        stalled_ns = time.monotonic_ns()
        job_id = submit(client, burn(2.5))
        record = wait_state(client, job_id, FINAL)
        assert record["state"] == "succeeded"
        assert client.request("time", timeout_s=2).ok
        result = record["result"]
        columns = fetch_trace(client, job_id)[0]
        inside = [t for t in columns["t_ns"] if result["t_start_ns"] <= t <= result["t_end_ns"]]
        expected = 1000.0 * (result["t_end_ns"] - result["t_start_ns"]) / 1e9
        assert len(inside) == pytest.approx(expected, rel=0.1)
        assert result["samples"] == len(inside)

        resumed_ns = time.monotonic_ns()
        viewer.send_signal(signal.SIGCONT)
        viewer.stdin.write(f"{resumed_ns}\n")
        viewer.stdin.flush()
        ends = json.loads(viewer.stdout.readline())
        since = [t for t in ends if t >= stalled_ns]  # the viewer read up to the first batch after resuming
        gaps = [b - a for a, b in itertools.pairwise(since)]
        # Batches come every few ms; a gap of a second is what the daemon dropped rather than wait for it.
        assert gaps and max(gaps) > 0.5e9, gaps
    finally:
        viewer.kill()
        viewer.wait()
        client.close()


def test_history_and_stats_tell_what_the_sampler_recorded(client: RawClient) -> None:
    time.sleep(0.6)  # the default 1 kHz sampler fills some history
    recent = client.request("history", {"gpu": 0, "seconds": 0.4}).body
    t_ns = recent["t_ns"]
    assert recent["stride"] == 1 and recent["available"] == len(t_ns)
    assert len(t_ns) == pytest.approx(400, rel=0.25)
    assert t_ns == sorted(t_ns) and t_ns[-1] - t_ns[0] <= 0.4e9
    assert time.monotonic_ns() - t_ns[-1] < 0.2e9  # the newest sample is recent
    assert len(recent["power_w"]) == len(t_ns) and min(recent["power_w"]) > 0
    assert recent["simulated"] is True and recent["gpu"] == 0

    thinned = client.request("history", {"gpu": 0, "seconds": 0.4, "max_points": 10}).body
    assert len(thinned["t_ns"]) <= 10 and thinned["stride"] > 1
    assert thinned["t_ns"][-1] >= t_ns[-1]  # thinning keeps the newest sample

    missing = client.request("history", {"gpu": 7})
    assert (missing.ok, missing.code) == (False, "not_found") and "GPU 7" in (missing.message or "")
    for bad in ({"gpu": 0, "seconds": -1}, {"gpu": 0, "max_points": 0}, {"gpu": "0"}):
        assert client.request("history", bad).code == "bad_request"

    stats = client.request("stats").body
    sampler = stats["sampler"]
    assert sampler["ticks"] > 500 and sampler["rate_hz"] == 1000
    assert 0 <= sampler["read_overrun_misses"] <= sampler["deadline_misses"]
    assert stats["history"]["samples"] >= len(t_ns) and stats["history"]["seconds"] == 60
    assert stats["jobs"] == {"running": {}, "queued": {"0": 0}}
    assert stats["simulated"] is True and stats["publish"]["batches"] > 0
    served = stats["requests"]  # the daemon's own time per type of request, this stats request not yet in
    assert served["history"]["count"] == 3 and served["refused"]["count"] == 3  # the three bad ones above
    assert 0 < served["history"]["p50_ms"] <= served["history"]["p99_ms"] <= served["history"]["max_ms"]
    assert "stats" not in served and stats["rate_limited"] == {}
