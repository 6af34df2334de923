"""Command jobs (``workload: command``, ``gpuprof run -- CMD``): the user's own program, measured by gpuprofd
on the simulated GPU, marking its requests, phases and sweep points from Python or from any language."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, RawClient
from test_clock_control import locked, start
from test_daemon import FINAL, submit, wait_state

from gpuprof.client import Client
from gpuprof.client.cli import main
from gpuprof.client.report import Report

# A program that marks three requests, each a prefill and a decode window during which it loads the
# simulated GPU (it shares the daemon's: $GPUPROF_SIM_STATE), and a window of its own.
PROGRAM = """\
import os, sys, time
import gpuprof.markers as markers
from gpuprof.sampler.sim import SimulatedNvml

gpu = SimulatedNvml()
index = int(os.environ["GPUPROF_SIM_GPU"])

def busy(seconds):
    gpu.set_utilization(index, 100)
    time.sleep(seconds)
    gpu.set_utilization(index, 0)

assert markers.active()
with markers.window("warm"):
    time.sleep(0.1)
for i in range(3):
    with markers.window("prefill", request=i):
        busy(0.15)
    with markers.window("decode", request=i):
        busy(0.25)
    markers.request(i, input_tokens=100 + i, output_tokens=11, quality=1.0)
print("done", flush=True)
"""


def python_spec(tmp_path: Path, program: str, **extra: Any) -> dict[str, Any]:
    script = tmp_path / "program.py"
    script.write_text(program)
    return {
        "workload": "command",
        "timeout_s": 120,
        "command": {"argv": [sys.executable, str(script)], "cwd": str(tmp_path), **extra},
    }


def run_job(daemon: DaemonProcess, spec: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
    client = RawClient(daemon.endpoint)
    try:
        return dict(wait_state(client, submit(client, spec), FINAL, timeout_s=timeout_s))
    finally:
        client.close()


def test_a_python_program_marks_requests_that_get_the_llm_tables(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        job = run_job(daemon, python_spec(tmp_path, PROGRAM, env={"EXTRA": "1"}))
        assert job["state"] == "succeeded", job.get("reason")
        with Client(daemon.endpoint) as client:
            requests = client.requests(str(job["id"]))
    finally:
        daemon.kill()
    result = job["result"]
    assert result["command"]["exit_status"] == 0 and "done" in result["command"]["stdout_tail"]
    assert [w["name"] for w in result["windows"]].count("warm") == 1  # a window of its own
    (point,) = result["llm"]["points"]
    assert point["requests"] == 3
    assert list(requests["prompt_id"]) == ["0", "1", "2"] and list(requests["input_tokens"]) == [
        100,
        101,
        102,
    ]
    # Each request paid its own busy prefill (0.15 s) and decode (0.25 s), at the simulated GPU's busy power.
    assert requests["prefill_s"].between(0.14, 0.3).all() and requests["decode_s"].between(0.24, 0.4).all()
    assert (requests["decode_energy_j"] > requests["prefill_energy_j"]).all()
    assert requests["tpot_s"].between(0.024, 0.04).all()  # 0.25 s over the 10 tokens after the first
    assert (requests["energy_uncertainty_j"] < requests["energy_j"]).all()
    assert set(requests["quality"]) == {1.0}


def test_a_shell_program_marks_through_the_line_format_and_bad_lines_are_counted(tmp_path: Path) -> None:
    script = tmp_path / "mark.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo \'{"kind":"begin","name":"prefill","attrs":{"id":"r1"}}\' > "$GPUPROF_MARKERS"\n'
        "sleep 0.2\n"
        'echo \'{"kind":"end","name":"prefill","attrs":{"id":"r1"}}\' > "$GPUPROF_MARKERS"\n'
        'echo \'{"kind":"event","name":"request","attrs":{"id":"r1","input_tokens":7,"output_tokens":1}}\' '
        '> "$GPUPROF_MARKERS"\n'
        "echo 'not json' > \"$GPUPROF_MARKERS\"\n"
        'echo \'{"kind":"begin","name":"point","attrs":{}}\' > "$GPUPROF_MARKERS"\n'
        'echo \'{"kind":"status","attrs":{"text":"hi","done":5,"total":2}}\' > "$GPUPROF_MARKERS"\n'
        'echo \'{"kind":"status","name":"no spaces please","attrs":{"text":"hi"}}\' > "$GPUPROF_MARKERS"\n'
        'echo \'{"kind":"status","attrs":{"text":"half","done":1,"total":2}}\' > "$GPUPROF_MARKERS"\n'
        "echo hello from the shell\n"
    )
    script.chmod(0o755)
    daemon = DaemonProcess(tmp_path).start()
    try:
        job = run_job(
            daemon,
            {
                "workload": "command",
                "timeout_s": 60,
                "command": {"argv": [str(script)], "cwd": str(tmp_path)},
            },
        )
    finally:
        daemon.kill()
    assert job["state"] == "succeeded", job.get("reason")
    command = job["result"]["command"]
    # not JSON; a name gpuprof marks itself; a status done past its total; a status with a bad name
    assert command["refused_lines"] == 4
    assert "hello from the shell" in command["stdout_tail"] and command["stdout_path"].endswith("stdout.log")
    assert job["result"]["llm"]["requests"] == 1


def test_a_failing_program_fails_the_job_with_its_exit_status_and_last_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--simulate", "--endpoint", f"ipc://{tmp_path}/none.sock", "--",
                 "sh", "-c", "echo about to fail >&2; exit 3"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 12, err
    assert "command exited with status 3: about to fail" in err
    assert "exit status 3" in out and "about to fail" in out  # the result shows the program's stderr
    assert main(["run", "--simulate", "--endpoint", f"ipc://{tmp_path}/none.sock", "--", "false"]) == 12
    assert "command exited with status 1" in capsys.readouterr().err


def test_a_program_not_found_is_named(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        spec = {"workload": "command", "timeout_s": 60, "command": {"argv": ["no-such-program-x"],
                                                                      "cwd": str(tmp_path)}}  # fmt: skip
        job = run_job(daemon, spec)
    finally:
        daemon.kill()
    assert job["state"] == "failed" and "command 'no-such-program-x' not found" in job["reason"]


@pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user
def test_each_run_of_a_swept_program_is_a_point_at_its_clock_and_the_clock_is_reset(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    spec = python_spec(tmp_path, "import time; time.sleep(0.6)\n")
    spec["dvfs"] = {"sm_clocks": [600, 1410], "order": "sequential"}
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=120)
    assert done["state"] == "succeeded", done.get("reason")
    points = done["result"]["dvfs"]["points"]
    assert [p["sm_clock_mhz"] for p in points] == [600, 1410] and done["result"]["command"]["runs"] == 2
    for point in points:
        assert point["unit"] == "point" and point["observed_sm_clock_mhz"] == point["sm_clock_mhz"]
        assert point["energy_j"] > 0 and not point["flagged"]
    assert locked() is None
    client.close()


MARKED = """\
import gpuprof.markers as markers, time
seen = []
for mhz in markers.sweep():
    seen.append(mhz)
    with markers.window("decode", request=0):  # the same id at every point: each point's own request
        time.sleep(0.4)
    markers.request(0, input_tokens=1, output_tokens=5)
open("seen.txt", "w").write(repr(seen))
"""


@pytest.mark.usefixtures("control_without_root")
def test_a_program_asks_for_each_point_and_runs_it_at_its_clock(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    endpoint = start(daemons, tmp_path, "allow_dvfs = true\n").endpoint
    client = RawClient(endpoint)
    spec = python_spec(tmp_path, MARKED, points="marked")
    spec["dvfs"] = {"sm_clocks": [1005, 600, 1410], "order": "sequential"}
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=120)
    assert done["state"] == "succeeded", done.get("reason")
    assert (tmp_path / "seen.txt").read_text() == "[1005, 600, 1410]"  # the clock, once set, each time
    points = done["result"]["dvfs"]["points"]
    assert sorted(p["sm_clock_mhz"] for p in points) == [600, 1005, 1410]
    assert all(p["observed_sm_clock_mhz"] == p["sm_clock_mhz"] and p["requests"] == 1 for p in points)
    assert done["result"]["command"]["runs"] == 1 and locked() is None
    with Client(endpoint) as api:  # the same report as an llm job's sweep
        report = Report.from_job(done, api.requests(str(done["id"])))
    (optimum,) = report.optima.itertuples()
    assert optimum.engine == "command" and optimum.energy_optimal_mhz in (600, 1005, 1410)
    client.close()


@pytest.mark.parametrize("trap", ["", "trap '' TERM; "], ids=["plain", "ignoring-sigterm"])
def test_cancelling_a_command_job_stops_the_program_and_its_children(tmp_path: Path, trap: str) -> None:
    pids = tmp_path / "pids"
    script = f"{trap}sleep 300 & echo $! > {pids}; echo $$ >> {pids}; while :; do sleep 0.1; done"
    daemon = DaemonProcess(tmp_path).start()
    client = RawClient(daemon.endpoint)
    try:
        command = {"argv": ["sh", "-c", script], "cwd": str(tmp_path)}
        job_id = submit(client, {"workload": "command", "timeout_s": 600, "command": command})
        deadline = time.monotonic() + 30
        while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = [int(p) for p in pids.read_text().split()]
        assert client.request("cancel", {"id": job_id}).ok
        done = wait_state(client, job_id, FINAL, timeout_s=30)
    finally:
        client.close()
        daemon.kill()
    assert done["state"] == "cancelled"
    for pid in started:
        assert not _alive(pid), f"process {pid} outlived its cancelled job"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone but for its parent's wait
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_the_program_sees_its_environment_and_not_the_workers(tmp_path: Path) -> None:
    program = (
        "import json, os\n"
        "ours = {k: v for k, v in os.environ.items() if k.startswith(('GPUPROF', 'EXTRA'))}\n"
        "json.dump(ours, open('env.json', 'w'))\n"
    )
    daemon = DaemonProcess(tmp_path).start()
    try:
        job = run_job(daemon, python_spec(tmp_path, program, env={"EXTRA": "yes"}))
    finally:
        daemon.kill()
    assert job["state"] == "succeeded", job.get("reason")
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["EXTRA"] == "yes" and Path(env["GPUPROF_MARKERS"]).name == "markers"
    assert "GPUPROF_MARKERS_REPLY" in env
    assert not {"GPUPROF_MARKER_FD", "GPUPROF_JOB_SPEC", "GPUPROF_WORKER_MAX_FILE_BYTES"} & set(env)


def test_a_programs_status_with_done_and_total_shows_its_share_and_time_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = (
        "for i in 1 2 3 4 5 6 7; do "
        'echo "{\\"kind\\":\\"status\\",\\"name\\":\\"status\\",\\"attrs\\":{\\"text\\":\\"step $i\\",'
        '\\"done\\":$i,\\"total\\":8}}" > "$GPUPROF_MARKERS"; sleep 1; done'
    )
    code = main(["run", "--simulate", "--endpoint", f"ipc://{tmp_path}/none.sock", "--", "sh", "-c", script])
    _, err = capsys.readouterr()
    assert code == 0, err
    shares = [int(m) for m in re.findall(r"running .* (\d+)% ~\d+:\d\d left", err)]
    assert shares and all(12 <= share <= 88 for share in shares), err
