"""The job worker as the daemon runs it: a subprocess sending markers over a socketpair, simulated GPU."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprof.client.wire.jobspec import parse_job_spec
from gpuprof.daemon.analysis.windows import windows
from gpuprof.daemon.markers import MAX_MARKER_BYTES, Marker, MarkerChannelError
from gpuprof.daemon.server.markers import MarkerReader
from gpuprof.daemon.worker.markers import MarkerWriter
from gpuprof.sampler.sim import GpuSpec, SimConfig, SimGpuStatus, SimulatedNvml

SHORT = "workload: burn\nburn: {seconds: 0.6, duty_cycle: 0.5, period_s: 0.2, warmup_s: 0.2}\n"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_markers_cross_a_socketpair_one_record_each(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ticks = iter(range(100, 200))
    writer = MarkerWriter(os.dup(theirs.fileno()), clock=lambda: next(ticks))
    writer.begin("load", size=8192)
    writer.end("load")
    theirs.send(b"\x00" * (MAX_MARKER_BYTES + 10))  # one oversized record, cut by the reader's buffer
    writer.status("line one\nline two")
    writer.fail("x" * 5000)
    writer.close()
    theirs.close()
    reader = MarkerReader(ours)
    got = list(reader)
    assert got[:3] == [
        Marker("begin", "load", 100, {"size": 8192}),
        Marker("end", "load", 101),
        Marker("status", "status", 102, {"text": "line one line two"}),
    ]
    assert got[3].kind == "fail" and len(got[3].attrs["reason"]) == 1000
    assert reader.errors == 1 and "larger than 65536 bytes" in reader.error_messages[0]
    assert reader.closed


def test_an_engine_timed_marker_keeps_its_past_instant_and_a_future_one_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    writer = MarkerWriter(os.dup(theirs.fileno()), clock=lambda: 1000)
    writer.begin("prefill", t_ns=400, id="b0")
    writer.end("prefill", t_ns=1000, id="b0")
    with pytest.raises(MarkerChannelError, match="'decode' stamped 1 ns in the future"):
        writer.begin("decode", t_ns=1001)
    writer.close()
    theirs.close()
    assert list(MarkerReader(ours)) == [
        Marker("begin", "prefill", 400, {"id": "b0"}),
        Marker("end", "prefill", 1000, {"id": "b0"}),
    ]


def test_the_writer_refuses_unusable_descriptors(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    stream_a, stream_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with stream_a, stream_b, pytest.raises(MarkerChannelError, match="not an AF_UNIX SOCK_SEQPACKET socket"):
        MarkerWriter(stream_a.fileno())
    with open(tmp_path / "file", "w") as file, pytest.raises(MarkerChannelError, match="is not a socket"):
        MarkerWriter(file.fileno())
    for value in ("", "x", "-1"):
        with pytest.raises(MarkerChannelError, match="GPUPROF_MARKER_FD"):
            MarkerWriter.from_env({"GPUPROF_MARKER_FD": value})
    ours, theirs = pair
    writer = MarkerWriter(os.dup(theirs.fileno()))
    ours.close()  # the daemon went away
    with pytest.raises(MarkerChannelError, match="cannot send marker 'load'"):
        writer.begin("load")
    writer.close()


def start_worker(
    spec: dict[str, object] | str,
    tmp_path: Path,
    *,
    sim_gpu: int | None = 0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], MarkerReader]:
    """Starts ``python -m gpuprof.daemon.worker`` as the daemon does; returns it and its marker reader."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    environ = {**os.environ, "GPUPROF_JOB_SPEC": str(spec_path), "GPUPROF_MARKER_FD": str(theirs.fileno())}
    if sim_gpu is not None:
        environ.update(GPUPROF_SIMULATE="1", GPUPROF_SIM_GPU=str(sim_gpu))
    environ.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuprof.daemon.worker"],
        env=environ,
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    return process, MarkerReader(ours)


def finish(process: subprocess.Popen[bytes], reader: MarkerReader) -> tuple[int, list[Marker], str]:
    markers = list(reader)  # until the worker's end closes
    _, stderr = process.communicate(timeout=10)
    reader.close()
    return process.returncode, markers, stderr.decode()


def test_a_burn_drives_the_simulated_gpu_on_and_off_in_marked_steps(tmp_path: Path) -> None:
    sim = SimulatedNvml()
    sim.configure(SimConfig(gpus=(GpuSpec(), GpuSpec())))
    process, reader = start_worker(parse_job_spec(SHORT).to_dict(), tmp_path, sim_gpu=1)
    polls: list[tuple[SimGpuStatus, SimGpuStatus]] = []
    markers: list[Marker] = []
    while process.poll() is None:
        gpus = sim.status()
        polls.append((gpus[0], gpus[1]))
        markers += reader.read_available()
        time.sleep(0.001)
    code, rest, stderr = finish(process, reader)
    markers += rest
    assert code == 0, stderr
    assert reader.errors == 0

    found = windows(markers)
    assert [w.name for w in found] == ["load", "warmup", "measure", "step", "step", "step"]
    assert all(w.problem is None for w in found)
    load, warmup, measure, *steps = found
    assert load.attrs["simulated"] is True and load.attrs["device"].startswith("simulated GPU 1")
    assert load.t_end_ns <= warmup.t_start_ns and warmup.t_end_ns <= measure.t_start_ns
    assert warmup.duration_ns >= 200_000_000 and measure.duration_ns >= 600_000_000
    assert [s.attrs["index"] for s in steps] == [0, 1, 2] and measure.attrs["steps"] == 3
    edges = [t for s in steps for t in (s.t_start_ns, s.t_end_ns)]
    assert edges == sorted(edges) and measure.t_start_ns <= edges[0] and edges[-1] <= measure.t_end_ns

    # The GPU was busy only inside marked windows: a step's markers bracket its utilization change.
    busy_windows = [warmup, *steps]
    busy = [g.time_ns for _, g in polls if g.util_pct == 100]
    assert busy and all(any(w.t_start_ns < t < w.t_end_ns for w in busy_windows) for t in busy)
    in_measure = [g.util_pct for _, g in polls if measure.t_start_ns < g.time_ns < measure.t_end_ns]
    assert 100 in in_measure and 0 in in_measure  # on and off within the measured run
    assert all(g.util_pct == 0 for g, _ in polls)  # GPU 0 was never touched
    assert [g.util_pct for g in sim.status()] == [0, 0]  # and GPU 1 is idle again


def test_a_broken_spec_fails_with_the_key_named(tmp_path: Path) -> None:
    plain = parse_job_spec(SHORT).to_dict()
    plain["burn"]["duty_cycle"] = "high"
    code, markers, stderr = finish(*start_worker(plain, tmp_path))
    assert code == 1
    assert [m.kind for m in markers] == ["fail"]
    assert markers[0].attrs["reason"] == (
        "<submitted spec>: burn.duty_cycle: must be a number in (0, 1], got 'high'"
    )
    assert "burn.duty_cycle" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("spec", "env", "reason"),
    [
        ("{not json", {}, "not a JSON job spec"),
        ("", {"GPUPROF_JOB_SPEC": "/nonexistent/spec.json"}, "cannot read the job spec"),
        (None, {"GPUPROF_SIM_GPU": "7"}, "GPU 7 not found: valid indices are 0..0"),
        (None, {"GPUPROF_SIM_GPU": "x"}, "$GPUPROF_SIM_GPU must be a GPU index, got 'x'"),
    ],
)
def test_a_worker_that_cannot_start_its_job_reports_why(
    tmp_path: Path, spec: str | None, env: dict[str, str], reason: str
) -> None:
    text = spec if spec is not None else json.dumps(parse_job_spec(SHORT).to_dict())
    code, markers, _ = finish(*start_worker(text, tmp_path, env=env))
    assert code == 1
    assert markers[-1].kind == "fail" and reason in markers[-1].attrs["reason"]


def test_the_real_gpu_path_fails_cleanly_without_a_usable_gpu(tmp_path: Path) -> None:
    # No CUDA device is visible: the worker must say so (before importing torch) and stop.
    plain = parse_job_spec(SHORT).to_dict()
    code, markers, _ = finish(*start_worker(plain, tmp_path, sim_gpu=None, env={"CUDA_VISIBLE_DEVICES": ""}))
    assert code == 1
    assert [m.name for m in markers] == ["load", "fail"]
    assert (
        markers[-1].attrs["reason"] == "no CUDA GPU is visible to the worker (CUDA_VISIBLE_DEVICES is empty)"
    )


def test_sigterm_stops_the_burn_and_leaves_the_gpu_idle(tmp_path: Path) -> None:
    spec = parse_job_spec("workload: burn\nburn: {seconds: 60, warmup_s: 0}\n").to_dict()
    process, reader = start_worker(spec, tmp_path)
    seen = []
    for marker in reader:
        seen.append(marker)
        if marker.name == "step":
            break
    # the step's begin is stamped just before the work starts: give the load a moment to be set
    deadline = time.monotonic() + 2.0
    while SimulatedNvml().status()[0].util_pct != 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert SimulatedNvml().status()[0].util_pct == 100
    process.send_signal(signal.SIGTERM)
    code, markers, _ = finish(process, reader)
    assert code == 143
    assert markers[-1] == Marker("fail", "fail", markers[-1].t_ns, {"reason": "terminated by SIGTERM"})
    assert SimulatedNvml().status()[0].util_pct == 0
    assert [w.problem for w in windows(seen + markers) if w.name in ("measure", "step")] == [
        "begin without end: assumed to last until the job ended"
    ] * 2


def test_without_a_marker_socket_the_worker_exits_2(tmp_path: Path) -> None:
    process, reader = start_worker(parse_job_spec(SHORT).to_dict(), tmp_path, env={"GPUPROF_MARKER_FD": ""})
    code, markers, stderr = finish(process, reader)
    assert code == 2 and markers == []
    assert "GPUPROF_MARKER_FD must name an inherited socket fd" in stderr


def test_the_worker_cannot_write_a_file_larger_than_its_output_limit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from gpuprof.daemon.worker.main import limit_files\n"
        "limit_files('100000')\n"
        "import os, resource\n"
        "try:\n"
        "    if os.geteuid() == 0:\n"
        "        raise ValueError('root may raise a hard limit; the users workers run as may not')\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)\n"
        "    sys.exit('raised its own limit')\n"
        "except (ValueError, OSError):\n"
        "    pass\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    f.write(b'x' * 50_000)\n"
        "    f.flush()\n"
        "    try:\n"
        "        f.write(b'x' * 100_000)\n"
        "        f.flush()\n"
        "    except OSError as exc:\n"
        "        print(exc.errno)\n"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(errno.EFBIG)
    assert (tmp_path / "out").stat().st_size <= 100_000
