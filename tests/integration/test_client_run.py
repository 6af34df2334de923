"""``gpuprof run``: a private gpuprofd started, used and stopped; a daemon that fails to start, explained."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from gpuprof.client.cli import main
from gpuprof.client.commands.run import PrivateDaemon
from gpuprof.client.wire.errors import PrivateDaemonFailed, exit_code

SPEC = "name: quick\nworkload: burn\ntimeout_s: 60\nburn:\n  seconds: 0.5\n  period_s: 0.25\n  warmup_s: 0\n"


def test_run_starts_a_private_simulated_daemon_and_stops_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "quick.yaml"
    spec.write_text(SPEC)
    code = main(["run", str(spec), "--simulate", "--json", "--endpoint", f"ipc://{tmp_path}/none.sock"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    for key in (
        "id",
        "state",
        "user",
        "energy_counter_j",
        "energy_integrated_j",
        "duration_s",
        "mean_power_w",
    ):
        assert summary[key] is not None, key
    assert summary["state"] == "succeeded" and summary["simulated"] is True
    assert [w["name"] for w in summary["windows"]][:1] == ["load"]
    assert "starting a private gpuprofd (simulated GPU)" in err
    endpoint = re.search(r"gpuprofd at ipc://(\S+)/gpuprofd.sock", err)
    assert endpoint is not None and not Path(endpoint.group(1)).exists()  # stopped and cleaned up


def test_a_daemon_that_dies_at_start_is_explained_with_its_output() -> None:
    daemon = PrivateDaemon(simulate=True, startup_timeout_s=10)
    daemon.command = [sys.executable, "-c", "import sys; print('cannot bind: Address in use'); sys.exit(3)"]
    with pytest.raises(PrivateDaemonFailed) as caught, daemon:
        pass
    message = str(caught.value)
    assert "exited with status 3" in message and "cannot bind: Address in use" in message
    assert exit_code(caught.value) == 14  # its own code: 9 is a daemon that does not answer
    assert not daemon.directory.exists()


def test_a_daemon_that_never_answers_times_out_and_is_killed() -> None:
    daemon = PrivateDaemon(simulate=True, startup_timeout_s=0.5)
    daemon.command = [sys.executable, "-c", "import time; print('stuck', flush=True); time.sleep(60)"]
    with pytest.raises(PrivateDaemonFailed, match=r"did not answer .* within 0\.5 s(.|\n)*stuck"), daemon:
        pass
    assert daemon.process is None and not daemon.directory.exists()


def test_run_applies_a_dvfs_section_only_when_allowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gpuprof.sampler.sim import SimConfig, SimulatedNvml

    SimulatedNvml().configure(SimConfig(allow_unprivileged_control=True))  # the user's own simulated GPU
    spec = tmp_path / "clocked.yaml"
    spec.write_text(SPEC + "dvfs:\n  sm_clocks: 1410\n")
    endpoint = ["--endpoint", f"ipc://{tmp_path}/none.sock"]
    code = main(["run", str(spec), "--simulate", "--json", *endpoint])
    _out, err = capsys.readouterr()
    assert code != 0 and "allow_dvfs = false" in err
    code = main(["run", str(spec), "--simulate", "--json", "--allow-dvfs", *endpoint])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["dvfs"]["set"]["sm_clock_mhz"] == 1410
    assert SimulatedNvml().status()[0].locked_sm_clock_mhz is None  # reset after the job
    assert any(
        c.call == "nvmlDeviceSetGpuLockedClocks" and c.args[:2] == (1410, 1410)
        for c in SimulatedNvml().control_log()
    )


def test_run_writes_an_llm_jobs_report_before_its_private_daemon_goes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
    pytest.importorskip("matplotlib")
    spec = tmp_path / "llm.yaml"
    spec.write_text(
        "name: small\nworkload: llm\ntimeout_s: 300\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n"
        "  dtype: float32\n  prompts: 4\n  batch_sizes: [2]\n  max_new_tokens: 4\n  ner: heuristic\n"
    )
    endpoint = ["--endpoint", f"ipc://{tmp_path}/none.sock"]
    report = tmp_path / "report"
    code = main(["run", str(spec), "--simulate", "--json", "--report", str(report), *endpoint])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["state"] == "succeeded"  # stdout: one JSON document; the report: stderr
    assert f"{report}/report.html" in err and "SIMULATED" in err
    for name in ("clocks.csv", "optima.csv", "pareto.csv", "correlations.csv", "report.html"):
        assert (report / name).stat().st_size > 0, name

    burn = tmp_path / "burn.yaml"
    burn.write_text(SPEC)
    assert main(["run", str(burn), "--simulate", "--report", str(tmp_path / "no"), *endpoint]) == 2
    assert "--report needs an llm or a command job" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_run_says_before_the_job_that_report_needs_its_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpuprof.client.commands import run as run_module

    absent = {"scipy"}  # as after pip install '.[inference]' alone
    real = run_module.find_spec
    monkeypatch.setattr(run_module, "find_spec", lambda name: None if name in absent else real(name))
    spec = tmp_path / "llm.yaml"
    spec.write_text("workload: llm\ntimeout_s: 60\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n")
    code = main(["run", str(spec), "--simulate", "--report", str(tmp_path / "r"), "--endpoint", "ipc:///x/y"])
    _, err = capsys.readouterr()
    assert code == 2 and "--report needs scipy: pip install 'gpuprof[report]'" in err
    assert "starting a private gpuprofd" not in err  # nothing ran


def test_run_says_which_daemon_it_uses_and_private_starts_its_own(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon_harness import DaemonProcess

    spec = tmp_path / "quick.yaml"
    spec.write_text(SPEC)
    (tmp_path / "d").mkdir()
    daemon = DaemonProcess(tmp_path / "d").start()
    try:
        monkeypatch.setenv("GPUPROF_ENDPOINT", daemon.endpoint)
        assert main(["run", str(spec), "--allow-dvfs", "--json"]) == 0
        err = capsys.readouterr().err
        assert f"using the gpuprofd at {daemon.endpoint} (from $GPUPROF_ENDPOINT; --private starts" in err
        assert "--allow-dvfs applies to a private gpuprofd only" in err
        assert main(["run", str(spec), "--private", "--simulate", "--json"]) == 0
        err = capsys.readouterr().err
        assert "starting a private gpuprofd (simulated GPU)" in err and daemon.endpoint not in err
    finally:
        daemon.kill()


def test_a_burn_jobs_progress_shows_its_share_done_and_the_time_left(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "burn.yaml"
    spec.write_text("name: longer\nworkload: burn\ntimeout_s: 60\nburn:\n  seconds: 5\n  warmup_s: 1.5\n")
    code = main(["run", str(spec), "--simulate", "--json", "--endpoint", f"ipc://{tmp_path}/none.sock"])
    _, err = capsys.readouterr()
    assert code == 0, err
    # Stderr is not a terminal here: a line per state, then one every 5 s, with the share of the 6.5 s done.
    shares = [int(m) for m in re.findall(r"running .* (\d+)% ~\d+:\d\d left", err)]
    assert shares and all(40 <= share <= 100 for share in shares), err
