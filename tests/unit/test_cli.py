"""The ``gpuprof`` command line on the simulated GPU: outputs users read and errors they get."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gpuprof.client.cli import main
from gpuprof.sampler.library import driver_available


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "sample" in out and "sim" in out and "--simulate" in out
    code, out, _ = run(capsys, "sample", "--help")
    assert code == 0 and "Examples:" in out and "Ctrl-C" in out


def test_sample_json_summary_says_simulated_and_files_hold_the_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "trace.parquet"
    code, out, _ = run(capsys, "sample", "--simulate", "--seconds", "0.5", "-o", str(target), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["simulated"] is True
    assert summary["samples"] > 300
    gpu = summary["gpus"][0]
    for key in ("mean_power_w", "peak_power_w", "energy_integrated_j", "distinct_power_updates"):
        assert gpu[key] is not None, key
    assert gpu["energy_integrated_method"].startswith("integrated instant power")
    frame = pd.read_parquet(target)
    assert len(frame) == summary["samples"]
    assert (tmp_path / "trace.energy.parquet").exists()


def test_sample_text_summary_is_labelled_simulated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "sample", "--simulate", "--seconds", "0.3", "-o", str(tmp_path / "t.csv"))
    assert code == 0
    assert "SIMULATED GPU" in out and "energy, counter" in out
    # each figure with its method and its window, the sampled one, not the counter readings' span
    assert "method: fused: the energy counter" in out and "method: integrated instant power" in out
    assert "extended at their mean power" not in out


def test_missing_driver_is_one_line_that_names_the_fix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUPROF_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1")
    code, _out, err = run(capsys, "sample", "--seconds", "1", "-o", str(tmp_path / "t.csv"))
    assert code == 3
    assert err.count("\n") == 1 and "NVIDIA driver not found" in err and "--simulate" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["cython", "pynvml"])
@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--rate", "0"], 2, "sampling rate"),
        (["--rate", "1e-300"], 2, "sampling rate"),
        (["--energy-rate", "1e-300"], 2, "energy-counter rate"),
        (["--seconds", "nan"], 2, "--seconds"),
        (["--rate", "1e12"], 2, "sampling rate"),
        (["--gpu", "7"], 5, "GPU 7 not found"),
        (["--seconds", "-1"], 2, "--seconds"),
    ],
)
def test_bad_arguments(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    exit_code: int,
    message: str,
    backend: str,
) -> None:
    target = str(tmp_path / "t.csv")
    code, _, err = run(
        capsys, "sample", "--simulate", "--backend", backend, "--seconds", "0.2", *args, "-o", target
    )
    assert code == exit_code
    assert message in err


def test_unwritable_output_fails_before_sampling(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "sample", "--simulate", "--seconds", "5", "-o", str(tmp_path / "no" / "t.csv"))
    assert code == 7 and "does not exist" in err
    code, _, err = run(capsys, "sample", "--simulate", "--seconds", "5", "-o", str(tmp_path / "t.txt"))
    assert code == 2 and ".parquet or .csv" in err


def test_sim_status_and_load(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sim", "status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["simulated"] is True
    assert status["gpus"][0]["locked_sm_clock_mhz"] is None
    assert status["gpus"][0]["util_pct"] == 0
    code, _, _ = run(capsys, "sim", "load", "--gpu", "0", "--util", "75")
    assert code == 0
    code, out, _ = run(capsys, "sim", "status", "--json")
    assert json.loads(out)["gpus"][0]["util_pct"] == 75
    code, out, _ = run(capsys, "sim", "status")
    assert "SIMULATED" in out and "util 75%" in out


def test_sim_load_with_seconds_restores(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sim", "load", "--util", "40", "--seconds", "0.1")[0] == 0
    _, out, _ = run(capsys, "sim", "status", "--json")
    assert json.loads(out)["gpus"][0]["util_pct"] == 0


def test_sim_fail_shows_up_in_the_sample_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "sim", "fail", "--gpu", "0", "unknown")[0] == 0
    code, _out, _ = run(
        capsys, "sample", "--simulate", "--seconds", "0.3", "-o", str(tmp_path / "t.csv"), "--json"
    )
    # a GPU failing from the start cannot be opened: its power cannot be probed
    assert code == 4
    assert run(capsys, "sim", "fail", "--gpu", "0", "clear")[0] == 0
    code, _, err = run(capsys, "sim", "fail", "--gpu", "0", "BOGUS")
    assert code == 2 and "unknown NVML error" in err


def test_sim_configure_rejects_bad_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpu_count": "eight"}')
    code, _, err = run(capsys, "sim", "configure", str(bad))
    assert code == 8 and "gpu_count" in err and str(bad) in err


@pytest.mark.skipif(driver_available(), reason="an NVIDIA driver is here: nothing to fall back from")
def test_without_a_driver_sample_and_gpus_use_the_simulated_gpu_and_say_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUPROF_NVML_LIBRARY", raising=False)
    code, out, err = run(capsys, "sample", "--seconds", "0.2", "-o", str(tmp_path / "t.csv"))
    assert code == 0 and "no NVIDIA driver found: using the simulated GPU" in err and "SIMULATED" in out
    # No daemon answers: gpus reads the GPUs itself, once, like nvidia-smi.
    code, out, err = run(capsys, "gpus", "--json", "--endpoint", f"ipc://{tmp_path}/none.sock")
    assert code == 0 and "using the simulated GPU" in err
    assert [gpu["simulated"] for gpu in json.loads(out)] == [True]
    code, out, _ = run(capsys, "gpus", "--simulate", "--endpoint", f"ipc://{tmp_path}/none.sock")
    assert code == 0 and "(SIMULATED)" in out and "345-1980 MHz" in out


def test_a_recorded_trace_has_a_wall_clock_time_beside_its_monotonic_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = pd.Timestamp.now(tz="UTC")
    code, _, _ = run(capsys, "sample", "--simulate", "--seconds", "0.3", "-o", str(tmp_path / "t.parquet"))
    after = pd.Timestamp.now(tz="UTC")
    assert code == 0
    for name in ("t.parquet", "t.energy.parquet"):
        frame = pd.read_parquet(tmp_path / name)
        assert list(frame.columns)[1] == "time" and str(frame["time"].dt.tz) == "UTC"
        assert before - pd.Timedelta(seconds=1) <= frame["time"].min() and frame["time"].max() <= after
        stamps = frame["t_ns"].astype("int64")
        steps = (frame["time"] - frame["time"].iloc[0]).dt.total_seconds() * 1e9
        assert (abs(steps - (stamps - stamps.iloc[0])) < 1e3).all()  # the same instants, on the wall clock


def test_the_client_configuration_names_the_endpoint_and_a_bad_one_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUPROF_ENDPOINT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "gpuprof").mkdir()
    config = tmp_path / "gpuprof" / "client.toml"
    config.write_text(f'endpoint = "ipc://{tmp_path}/mine.sock"\n')
    code, _, err = run(capsys, "jobs")
    assert code != 0 and f"ipc://{tmp_path}/mine.sock" in err  # the configured daemon is the one asked
    monkeypatch.setenv("GPUPROF_ENDPOINT", f"ipc://{tmp_path}/env.sock")  # the environment comes first
    code, _, err = run(capsys, "jobs")
    assert code != 0 and "env.sock" in err and "mine.sock" not in err
    monkeypatch.delenv("GPUPROF_ENDPOINT")
    config.write_text('endpoint = 3\ncolour = "red"\n')
    code, _, err = run(capsys, "jobs")
    assert code != 0 and err.count("\n") == 1 and str(config) in err and "unknown: colour" in err


def test_every_command_takes_json() -> None:
    import click

    from gpuprof.client.cli import cli

    def leaves(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
        found = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found += leaves(command, f"{prefix}{name} ")
            else:
                found.append((prefix + name, command))
        return found

    commands = leaves(cli, "")
    assert len(commands) > 20
    missing = [name for name, command in commands if not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_the_sim_commands_answer_in_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "sim", "load", "--gpu", "0", "--util", "70", "--json")
    assert code == 0 and json.loads(out) == {
        "simulated": True,
        "gpu": 0,
        "util_pct": 70.0,
        "previous_pct": 0.0,
    }
    code, out, _ = run(capsys, "sim", "fail", "GPU_IS_LOST", "--json")
    assert code == 0 and json.loads(out)["failing"] == "NVML_ERROR_GPU_IS_LOST"
    config = tmp_path / "two.json"
    config.write_text('{"gpus": [{}, {}]}')
    code, out, _ = run(capsys, "sim", "configure", str(config), "--json")
    assert code == 0 and json.loads(out) == {"simulated": True, "config": str(config), "gpus": 2}
    code, out, _ = run(capsys, "sim", "reset", "--json")
    assert code == 0 and json.loads(out) == {"simulated": True, "gpus": 1}


def test_keygen_and_the_slurm_steps_answer_in_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    code, out, _ = run(capsys, "keygen", "--json")
    keys = json.loads(out)
    assert code == 0 and Path(keys["public_key_file"]).is_file() and Path(keys["secret_key_file"]).is_file()
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code, out, err = run(capsys, "slurm", "prolog", "--jobs-dir", str(tmp_path / "jobs"), "--json")
    said = json.loads(out)
    assert code == 0 and said["step"] == "prolog" and said["ok"] is False and said["message"] in err


def test_gpuprofds_admin_commands_take_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import click

    from gpuprof.daemon.cli import cli as daemon_cli
    from gpuprof.daemon.cli import main as daemon_main

    commands = {"serve": daemon_cli.commands["serve"]}
    keys = daemon_cli.commands["keys"]
    assert isinstance(keys, click.Group)
    commands |= {n: c for n, c in daemon_cli.commands.items() if not isinstance(c, click.Group)}
    commands |= {f"keys {n}": c for n, c in keys.commands.items()}
    missing = [
        n for n, c in commands.items() if n != "serve" and not any("--json" in p.opts for p in c.params)
    ]
    assert missing == []  # serve runs until stopped and logs to journald
    assert daemon_main(["check-config", "--simulate", "--state-dir", str(tmp_path), "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["ok"] is True and config["simulate"] is True and config["state_dir"] == str(tmp_path)
    assert daemon_main(["reset-clocks", "--simulate", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "journal": str(tmp_path / "clocks.json"),
        "reset": [],
        "left": [],
    }
