"""The client against a fake gpuprofd (ROUTER and PUB sockets in a thread): matching, timeouts, errors, CLI.

The fake speaks the wire protocol from client/wire/protocol.py and nothing else, so these tests pin the client
to docs/protocol.md; the real daemon's tests live beside this file.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import zmq

from gpuprof.client import Client, DaemonError, DaemonUnavailable, JobNotFound
from gpuprof.client.cli import main
from gpuprof.client.job_render import job_json
from gpuprof.client.wire.errors import JobSpecError, PermissionDenied, exit_code
from gpuprof.client.wire.jobspec import parse_job_spec
from gpuprof.client.wire.protocol import (
    Request,
    decode_request,
    encode_error,
    encode_publish,
    encode_reply,
    topic_for_gpu,
    topic_for_job,
)

SPEC = "name: burn-test\nworkload: burn\nburn:\n  seconds: 1\n  warmup_s: 0\n"
ROWS = 12
Handler = Callable[[Request], list[tuple[bytes | None, bytes]] | None]


def job_map(job_id: str, state: str, **extra: Any) -> dict[str, Any]:
    base = {
        "id": job_id,
        "name": "burn-test",
        "state": state,
        "reason": None,
        "user": "alice",
        "gpu": 0,
        "simulated": True,
        "created_ns": time.time_ns() - 2_000_000_000,
        "started_ns": None,
        "finished_ns": None,
        "spec": {},
    }
    return {**base, **extra}


def result_map() -> dict[str, Any]:
    return {
        "energy_counter_j": 300.0,
        "energy_counter_uncertainty_j": 7.0,
        "energy_integrated_j": 298.0,
        "energy_integrated_uncertainty_j": 9.0,
        "duration_s": 1.0,
        "mean_power_w": 298.0,
        "peak_power_w": 650.0,
        "windows": [{"name": "step 0", "duration_s": 0.5, "energy_counter_j": 150.0}],
    }


class FakeDaemon:
    """Answers the protocol's requests from a thread; ``handlers`` override a request type's answer."""

    def __init__(self, root: Path) -> None:
        self.endpoint = f"ipc://{root}/req.sock"
        self.pub_endpoint = f"ipc://{root}/pub.sock"
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.bind(self.endpoint)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.bind(self.pub_endpoint)
        self.requests: list[Request] = []
        self.handlers: dict[str, Handler] = {}
        self.jobs: dict[str, dict[str, Any]] = {
            "done": {**job_map("done", "succeeded"), "result": result_map()}
        }
        self.polls_until_done = 3  # a submitted job runs for this many job requests
        self.capabilities = ["history"]  # what its hello lists
        self.to_publish: queue.Queue[tuple[bytes, dict[str, Any], str]] = queue.Queue()
        self.identity = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.router.close(0)
        self.pub.close(0)
        self.context.term()

    def publish(self, topic: bytes, kind: str, body: dict[str, Any]) -> None:
        self.to_publish.put((topic, body, kind))

    def _serve(self) -> None:
        while not self._stop.is_set():
            while not self.to_publish.empty():
                topic, body, kind = self.to_publish.get()
                self.pub.send_multipart([topic, encode_publish(kind, body)])
            if not self.router.poll(10):
                continue
            identity, payload = self.router.recv_multipart()
            self.identity = identity
            request = decode_request(payload)
            self.requests.append(request)
            handler = self.handlers.get(request.type, self._answer)
            for target, frame in handler(request) or []:
                self.router.send_multipart([target or identity, frame])

    def reply(self, request: Request, body: dict[str, Any]) -> list[tuple[bytes | None, bytes]]:
        return [(None, encode_reply(request.id, body))]

    def _answer(self, request: Request) -> list[tuple[bytes | None, bytes]]:
        body = request.body
        if request.type == "hello":
            hello = {
                "daemon_version": "0-fake",
                "protocol": 1,
                "capabilities": self.capabilities,
                "simulated": True,
                "gpus": 1,
            }
            return self.reply(request, {**hello, "pub_endpoint": self.pub_endpoint})
        if request.type == "gpus":
            gpu = {
                "index": 0,
                "name": "Fake H100",
                "uuid": "GPU-fake",
                "simulated": True,
                "memory_clocks_mhz": [2619],
                "graphics_clocks_mhz": [1980, 1410],
                "power_limit_w": 700,
                "min_power_limit_w": 200,
                "max_power_limit_w": 700,
            }
            return self.reply(request, {"gpus": [gpu]})
        if request.type == "history":
            if body.get("gpu") != 0:
                return [(None, encode_error(request.id, "not_found", f"GPU {body.get('gpu')} is not served"))]
            recent = {"gpu": 0, "simulated": True, "job": None, "t_ns": [time.monotonic_ns() - 10**9],
                      "power_w": [250.0], "sm_clock_mhz": [1980], "stride": 1, "available": 1}  # fmt: skip
            return self.reply(request, recent)
        if request.type == "stats":
            return self.reply(request, STATS)
        if request.type == "time":
            return self.reply(request, {"monotonic_ns": time.monotonic_ns(), "wall_ns": time.time_ns()})
        if request.type == "submit":
            job_id = f"job{len(self.jobs)}"
            self.jobs[job_id] = job_map(job_id, "queued", spec=body["spec"], polls=0)
            return self.reply(request, {"job": self.jobs[job_id]})
        if request.type == "jobs":
            found = [j for j in self.jobs.values() if body.get("state") in (None, j["state"])]
            return self.reply(request, {"jobs": found[: body.get("limit", 100)]})
        job = self.jobs.get(body.get("id", ""))
        if job is None:
            return [(None, encode_error(request.id, "not_found", f"no job {body.get('id')!r}"))]
        if request.type == "job":
            self._advance(job)
            return self.reply(request, {"job": job})
        if request.type == "cancel":
            job.update(state="cancelled", reason="cancelled by alice")
            return self.reply(request, {"job": job})
        if request.type == "trace":
            return self.reply(request, self._trace(body))
        return [(None, encode_error(request.id, "unknown_type", request.type))]

    def _advance(self, job: dict[str, Any]) -> None:
        """A submitted job goes running, publishes a sample batch and a marker, then succeeds."""
        if "polls" not in job or job["state"] in ("succeeded", "cancelled"):
            return
        job["polls"] += 1
        if job["state"] == "queued":
            job.update(state="running", started_ns=time.time_ns())
        elif job["polls"] >= self.polls_until_done:
            job.update(state="succeeded", finished_ns=time.time_ns(), result=result_map())
        if job["state"] == "running":
            samples = {"gpu": 0, "simulated": True, "job": job["id"], "t_ns": [1, 2],
                       "power_w": [420.0, 421.5], "sm_clock_mhz": [1980, 1980]}  # fmt: skip
            self.publish(topic_for_gpu(0), "samples", samples)
            self.publish(topic_for_job(job["id"]), "marker", {"kind": "begin", "name": "warmup", "t_ns": 1})
        self.publish(topic_for_job(job["id"]), "job", {"job": job})

    def _trace(self, body: dict[str, Any]) -> dict[str, Any]:
        offset, limit = body.get("offset", 0), body.get("limit", 50_000)
        if body.get("table") == "energy":
            columns = {"t_ns": [10, 20], "gpu": [0, 0], "energy_mj": [1000, 2000], "nvml_return": [0, 0]}
            total = 2
        elif body.get("table") == "driver_power":
            columns = {"t_ns": [8, 28, 48], "gpu": [0, 0, 0], "power_w": [99.5, 100.0, 101.25]}
            total = 3
        else:
            rows = range(offset, min(ROWS, offset + limit))
            columns = {
                "t_ns": [1_000 + i for i in rows],
                "gpu": [0 for _ in rows],
                "power_w": [None if i == 4 else 100.0 + i for i in rows],
                "sm_clock_mhz": [None if i == 7 else 1980 for i in rows],
            }
            total = ROWS
        end = offset + len(columns["t_ns"])
        return {"columns": columns, "rows": len(columns["t_ns"]), "total": total,
                "next_offset": end if end < total else None}  # fmt: skip


STATS = {
    "uptime_s": 12.5,
    "simulated": True,
    "sampler": {
        "backend": "cython",
        "rate_hz": 1000.0,
        "achieved_rate_hz": 999.8,
        "jitter_p99_us": 18.0,
        "deadline_misses": 12,
        "read_overrun_misses": 9,
        "realtime_priority": 10,
        "overflows": 0,
        "energy_overflows": 0,
        "errors": {"0": {"NVML_ERROR_TIMEOUT": 2}},
    },
    "history": {
        "seconds": 600.0,
        "samples": 12_000,
        "capacity": 600_000,
        "dropped_samples": 0,
        "bytes": 28_800_000,
    },
    "publish": {"interval_ms": 2.0, "hwm": 1000, "batches": 6000},
    "jobs": {"running": {}, "queued": {"0": 4}},
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gpf-", dir="/tmp"))  # ipc paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(short_dir)
    yield fake
    fake.close()


@pytest.fixture
def client(daemon: FakeDaemon) -> Iterator[Client]:
    with Client(daemon.endpoint, timeout_s=2.0) as c:
        yield c


def test_replies_are_matched_to_requests_by_id(client: Client, daemon: FakeDaemon) -> None:
    def stale_first(request: Request) -> list[tuple[bytes | None, bytes]]:
        return [
            (None, encode_reply(request.id + 100, {"stale": True})),
            *daemon.reply(request, {"wall_ns": 1}),
        ]

    daemon.handlers["time"] = stale_first
    assert client.time() == {"wall_ns": 1}
    assert client.hello()["protocol"] == 1
    assert [r.id for r in daemon.requests] == [1, 2]


def test_timeout_names_the_endpoint_and_a_late_reply_is_never_taken(
    client: Client, daemon: FakeDaemon
) -> None:
    late: list[tuple[bytes, int]] = []

    def slow_then_stale(request: Request) -> list[tuple[bytes | None, bytes]]:
        if not late:
            late.append((daemon.identity, request.id))
            return []  # no answer: the client times out
        old_identity, old_id = late[0]
        return [
            (old_identity, encode_reply(old_id, {"late": True})),  # to the closed socket
            (None, encode_reply(old_id, {"late": True})),  # a stale id on the new socket
            *daemon.reply(request, {"wall_ns": 2}),
        ]

    daemon.handlers["time"] = slow_then_stale
    with pytest.raises(DaemonUnavailable, match=daemon.endpoint.replace("/", ".")):
        client.request("time", timeout_s=0.2)
    assert client.time() == {"wall_ns": 2}


def test_no_daemon_is_unavailable_with_how_to_start_one(short_dir: Path) -> None:
    endpoint = f"ipc://{short_dir}/nobody.sock"
    with Client(endpoint, timeout_s=5) as client, pytest.raises(DaemonUnavailable) as caught:
        client.gpus()  # no socket file: fails at once, not after the timeout
    assert f"gpuprofd serve --simulate --endpoint {endpoint}" in str(caught.value)
    assert "no socket file" in str(caught.value)
    (short_dir / "nobody.sock").touch()  # a stale socket file: nobody answers within the timeout
    with Client(endpoint, timeout_s=0.2) as client, pytest.raises(DaemonUnavailable, match="no reply within"):
        client.gpus()


def test_error_replies_raise_gpuprof_errors(client: Client, daemon: FakeDaemon) -> None:
    with pytest.raises(JobNotFound, match="no job 'nope'"):
        client.job("nope")
    daemon.handlers["cancel"] = lambda r: [(None, encode_error(r.id, "denied", "job done is bob's"))]
    with pytest.raises(PermissionDenied, match="bob's"):
        client.cancel("done")
    daemon.handlers["submit"] = lambda r: [
        (None, encode_error(r.id, "invalid_spec", "burn.seconds: too long"))
    ]
    with pytest.raises(JobSpecError, match=r"burn\.seconds"):
        client.submit(parse_job_spec(SPEC))
    # The daemon could not read the id of a request too large for it: the error still answers it.
    daemon.handlers["gpus"] = lambda r: [(None, encode_error(None, "too_large", "message too large"))]
    with pytest.raises(DaemonError) as caught:
        client.gpus()
    assert caught.value.code == "too_large" and exit_code(caught.value) == 11
    # A reply that breaks the contract's GpuInfo is one error naming what is wrong, not a traceback.
    daemon.handlers["gpus"] = lambda r: daemon.reply(r, {"gpus": [{"index": "0"}]})
    with pytest.raises(DaemonError, match="gpuprofd's gpus reply: malformed GPU map: index is a str"):
        client.gpus()


def test_trace_is_fetched_in_chunks_and_typed(client: Client, daemon: FakeDaemon) -> None:
    frame = client.trace("done", chunk_rows=5)
    assert [r.body["offset"] for r in daemon.requests] == [0, 5, 10]
    assert frame["t_ns"].tolist() == [1_000 + i for i in range(ROWS)]
    assert pd.isna(frame["power_w"][4]) and frame["sm_clock_mhz"][7] is pd.NA
    assert str(frame["sm_clock_mhz"].dtype) == "UInt32"


def test_submit_sends_the_validated_spec_and_its_text(
    client: Client, daemon: FakeDaemon, short_dir: Path
) -> None:
    path = short_dir / "job.yaml"
    path.write_text(SPEC)
    handle = client.submit(str(path))
    submitted = daemon.requests[-1].body
    assert submitted["spec_text"] == SPEC and submitted["spec"]["burn"]["seconds"] == 1
    assert handle.id == "job1" and handle.last["state"] == "queued"
    path.write_text(SPEC.replace("seconds: 1", "seconds: -1"))
    with pytest.raises(JobSpecError, match=r"job.yaml:\d+"):
        client.submit(path)
    assert len([r for r in daemon.requests if r.type == "submit"]) == 1  # the bad one never left


def test_wait_shows_progress_from_the_live_stream_then_result(client: Client, daemon: FakeDaemon) -> None:
    daemon.polls_until_done = 15
    handle = client.submit(parse_job_spec(SPEC))
    seen: list[tuple[str, float | None, str | None]] = []
    job = handle.wait(
        timeout_s=10, poll_s=0.05, progress=lambda p: seen.append((p.state, p.power_w, p.phase))
    )
    assert job["state"] == "succeeded"
    assert ("running", 421.5, "warmup") in seen  # live samples and markers arrived while it ran
    result = handle.result()
    assert result.summary["energy_counter_j"] == 300.0 == result.job["result"]["energy_counter_j"]
    assert result.summary == job_json(result.job)  # what --json prints
    assert len(result.trace) == ROWS and result.energy["energy_mj"].tolist() == [1000, 2000]
    assert result.windows["name"].tolist() == ["step 0"]
    assert result.driver_power.empty  # this daemon keeps none
    daemon.capabilities = [*daemon.capabilities, "driver_power"]
    assert handle.result().driver_power["power_w"].tolist() == [99.5, 100.0, 101.25]


def test_stream_of_a_gpu_yields_decoded_batches(client: Client, daemon: FakeDaemon) -> None:
    with client.stream(gpu=0) as subscription:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not messages and time.monotonic() < deadline:  # a SUB joins late: publish until it hears
            daemon.publish(
                topic_for_gpu(0), "samples", {"gpu": 0, "t_ns": [5], "power_w": [99.0], "job": None}
            )
            daemon.publish(
                topic_for_gpu(1), "samples", {"gpu": 1, "t_ns": [5], "power_w": [1.0], "job": None}
            )
            messages = subscription.poll(0.1)
    assert messages and {m["gpu"] for m in messages} == {0}
    assert messages[0]["kind"] == "samples" and messages[0]["topic"] == "gpu/0"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lists_shows_and_cancels_jobs(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    ep = ("--endpoint", daemon.endpoint)
    code, out, _ = run_cli(capsys, "jobs", "--json", *ep)
    assert code == 0 and json.loads(out)[0]["energy_counter_j"] == 300.0
    code, out, _ = run_cli(capsys, "jobs", *ep)
    assert code == 0 and "done" in out and "ENERGY (fused counter ± bound)" in out
    assert "300.0 J ± 7.0 J" in out
    code, out, _ = run_cli(capsys, "show", "done", *ep)
    assert code == 0 and "SIMULATED" in out and "300.0 J ± 7.0 J" in out
    code, out, _ = run_cli(capsys, "show", "done", "--json", *ep)
    assert code == 0 and json.loads(out)["windows"][0]["name"] == "step 0"
    code, _, err = run_cli(capsys, "show", "nope", *ep)
    assert code == 10 and err.count("\n") == 1 and "no job 'nope'" in err
    code, out, _ = run_cli(capsys, "cancel", "done", *ep)
    assert code == 0 and "had already ended: succeeded; nothing to cancel" in out
    code, out, _ = run_cli(capsys, "gpus", "--json", *ep)
    assert code == 0 and json.loads(out)[0]["name"] == "Fake H100"


def test_cli_submit_wait_json_and_exit_status(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, short_dir: Path
) -> None:
    path = short_dir / "job.yaml"
    path.write_text(SPEC)
    code, out, err = run_cli(capsys, "submit", str(path), "--endpoint", daemon.endpoint)
    assert code == 0 and out == "job1\n" and err.startswith("job job1 queued")  # JOB=$(gpuprof submit ...)
    code, out, _ = run_cli(capsys, "submit", str(path), "--wait", "--json", "--endpoint", daemon.endpoint)
    summary = json.loads(out)
    assert code == 0 and summary["state"] == "succeeded" and summary["mean_power_w"] == 298.0
    daemon.polls_until_done = 1000
    daemon.handlers["job"] = lambda r: daemon.reply(r, {"job": {**job_map("x", "failed"), "reason": "boom"}})
    code, out, err = run_cli(capsys, "submit", str(path), "--follow", "--endpoint", daemon.endpoint)
    assert code == 12 and "boom" in out and err.endswith("gpuprof: error: job x failed: boom\n")


def test_cli_export_writes_trace_and_energy(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, short_dir: Path
) -> None:
    code, out, _ = run_cli(
        capsys, "export", "done", "-o", str(short_dir / "t.parquet"), "--endpoint", daemon.endpoint
    )
    assert code == 0 and "12 samples" in out
    assert len(pd.read_parquet(short_dir / "t.parquet")) == ROWS
    assert pd.read_parquet(short_dir / "t.energy.parquet")["energy_mj"].tolist() == [1000, 2000]
    code, _, _ = run_cli(
        capsys, "export", "done", "-o", str(short_dir / "t.csv"), "--endpoint", daemon.endpoint
    )
    assert code == 0 and (short_dir / "t.energy.csv").exists() and (short_dir / "t.meta.json").exists()
    assert not (short_dir / "t.driver_power.csv").exists()  # an older daemon keeps no driver power samples
    daemon.capabilities = [*daemon.capabilities, "driver_power"]
    code, out, _ = run_cli(
        capsys, "export", "done", "-o", str(short_dir / "d.parquet"), "--endpoint", daemon.endpoint
    )
    assert code == 0 and "driver power to" in out
    driver_power = pd.read_parquet(short_dir / "d.driver_power.parquet")
    assert driver_power["power_w"].tolist() == [99.5, 100.0, 101.25]
    assert list(driver_power.columns) == ["t_ns", "time", "gpu", "power_w"]  # a wall clock, as the rest


def test_cli_without_daemon_is_one_line_and_exit_9(
    capsys: pytest.CaptureFixture[str], short_dir: Path
) -> None:
    code, _, err = run_cli(capsys, "jobs", "--endpoint", f"ipc://{short_dir}/none.sock")
    assert code == 9 and err.startswith("gpuprof: error: no gpuprofd answered") and err.count("\n") == 1


@contextlib.contextmanager
def publishing(publish: Callable[[threading.Event], None]) -> Iterator[None]:
    """Runs ``publish(stop)`` on a thread for the block; ``stop`` is set when the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=publish, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_cli_watch_piped_prints_status_lines(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    def publisher(stop: threading.Event) -> None:
        while not stop.is_set():
            daemon.publish(topic_for_gpu(0), "samples",
                           {"gpu": 0, "simulated": True, "job": "done", "t_ns": [time.monotonic_ns()],
                            "power_w": [321.0], "sm_clock_mhz": [1980]})  # fmt: skip
            time.sleep(0.05)

    with publishing(publisher):
        code, out, _ = run_cli(capsys, "watch", "--seconds", "1.5", "--endpoint", daemon.endpoint)
    assert code == 0
    assert "SIMULATED" in out and "job done running" in out and "321.0 W" in out


def test_cli_watch_of_a_gpu_the_daemon_does_not_serve_is_exit_5(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> None:
    code, _, err = run_cli(capsys, "watch", "--gpu", "9", "--seconds", "1", "--endpoint", daemon.endpoint)
    assert code == 5 and "GPU 9 is not served" in err  # DeviceNotFound, not a missing job


def test_cli_watch_job_stops_when_the_job_ends_on_a_line_with_its_final_state(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> None:
    daemon.jobs["w1"] = job_map("w1", "running")
    daemon.jobs["old"] = job_map("old", "failed")

    def publisher(stop: threading.Event) -> None:  # samples for 1 s, then the job succeeds
        for _ in range(20):
            daemon.publish(topic_for_gpu(0), "samples",
                           {"gpu": 0, "simulated": True, "job": "w1", "t_ns": [time.monotonic_ns()],
                            "power_w": [321.0], "sm_clock_mhz": [1980]})  # fmt: skip
            time.sleep(0.05)
        daemon.jobs["w1"].update(state="succeeded", finished_ns=time.time_ns())
        daemon.publish(topic_for_job("w1"), "job", {"job": daemon.jobs["w1"]})
        stop.wait(60)

    started = time.monotonic()
    with publishing(publisher):
        code, out, _ = run_cli(
            capsys, "watch", "--job", "w1", "--seconds", "60", "--endpoint", daemon.endpoint
        )
    assert code == 0 and time.monotonic() - started < 30  # it stopped with the job, not after 60 s
    lines = out.splitlines()
    assert "job w1 (burn-test) running" in out and "job w1 (burn-test) succeeded" in lines[-1]
    # a job that has already ended: one line with its state, and watch returns
    code, out, _ = run_cli(capsys, "watch", "--job", "old", "--seconds", "60", "--endpoint", daemon.endpoint)
    assert code == 0 and out.count("\n") == 1 and "job old (burn-test) failed" in out


def test_cli_watch_all_json_prints_a_line_per_gpu_each_second(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> None:
    def publisher(stop: threading.Event) -> None:
        while not stop.is_set():
            for gpu, watts in ((0, 321.0), (1, 123.0)):  # GPU 1 is not in the gpus reply: it still shows
                body = {
                    "gpu": gpu,
                    "simulated": True,
                    "job": "j1" if gpu else None,
                    "t_ns": [time.monotonic_ns()],
                    "power_w": [watts],
                    "sm_clock_mhz": [1980],
                }
                daemon.publish(topic_for_gpu(gpu), "samples", body)
            time.sleep(0.05)

    with publishing(publisher):
        code, out, _ = run_cli(
            capsys, "watch", "--all", "--json", "--seconds", "2.5", "--endpoint", daemon.endpoint
        )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    last = {line["gpu"]: line for line in lines}
    assert last[0]["power_w"] == 321.0 and last[0]["gpu_name"] == "Fake H100" and last[0]["job"] is None
    assert last[1]["power_w"] == 123.0 and last[1]["job"] == "j1" and last[1]["simulated"] is True
    assert last[0]["time"].endswith("+00:00") and last[0]["samples_1s"] > 0 and last[0]["stale"] is False
    code, _, err = run_cli(capsys, "watch", "--all", "--gpu", "1", "--endpoint", daemon.endpoint)
    assert code != 0 and "--all watches every GPU" in err


def test_cli_status_splits_deadline_misses_by_cause(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> None:
    code, out, _ = run_cli(capsys, "status", "--endpoint", daemon.endpoint)
    assert code == 0
    assert "SIMULATED GPU" in out and "cython, SCHED_FIFO 10, 999.8 Hz of 1,000 Hz" in out
    assert "12 deadline misses (9 in slow NVML reads, 3 from late wake-ups)" in out
    assert "GPU 0: NVML_ERROR_TIMEOUT x2" in out and "queued GPU 0: 4" in out
    code, out, _ = run_cli(capsys, "status", "--json", "--endpoint", daemon.endpoint)
    assert code == 0 and json.loads(out) == STATS


def test_cli_run_uses_a_daemon_that_answers(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, short_dir: Path
) -> None:
    path = short_dir / "job.yaml"
    path.write_text(SPEC)
    code, out, err = run_cli(capsys, "run", str(path), "--endpoint", daemon.endpoint)
    assert code == 0 and "starting a private" not in err and f"gpuprofd at {daemon.endpoint}" in err
    assert "SIMULATED" in out and "300.0 J ± 7.0 J" in out


def test_closing_the_client_closes_its_open_streams(daemon: FakeDaemon) -> None:
    client = Client(daemon.endpoint, timeout_s=2.0)
    stream = iter(client.stream(gpu=0))
    daemon.publish(topic_for_gpu(0), "samples", {"gpu": 0, "t_ns": [1], "power_w": [1.0], "job": None})
    client.close()  # returns at once, though a subscription was never closed
    assert list(stream) == []
