"""Command job specs (``workload: command``): the user's own program, read strictly like every spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprof.client.wire.jobspec import (
    CommandParams,
    JobSpec,
    JobSpecKeyError,
    command_job_spec,
    load_job_spec,
    parse_job_spec,
)


def params(text: str, source: str = "/specs/job.yaml", command: list[str] | None = None) -> CommandParams:
    spec = parse_job_spec(text, source, command)
    assert isinstance(spec.params, CommandParams)
    return spec.params


def test_the_argv_list_alone_runs_in_the_spec_files_directory() -> None:
    got = params("workload: command\ncommand: [python3, bench.py, --n, 64, 0.5]\n")
    assert got == CommandParams(("python3", "bench.py", "--n", "64", "0.5"), "/specs")
    assert got.points == "run" and got.env == ()


def test_a_mapping_gives_cwd_env_and_how_sweep_points_are_made() -> None:
    got = params(
        "workload: command\ncommand:\n  argv: [./serve.sh]\n  cwd: ../bench\n"
        "  env: {HF_HOME: /data/hf, THREADS: 8}\n  points: marked\n"
    )
    assert got.cwd == "/specs/../bench" and got.env == (("HF_HOME", "/data/hf"), ("THREADS", "8"))
    assert got.points == "marked"


def test_a_spec_survives_the_wire_and_a_submitted_one_needs_an_absolute_cwd() -> None:
    spec = parse_job_spec(
        "workload: command\ncommand: {argv: [/bin/true], env: {A: b}}\ntimeout_s: 60\n", "/s/j.yaml"
    )
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec and again.params == CommandParams(("/bin/true",), "/s", (("A", "b"),))
    data = spec.to_dict()
    del data["command"]["cwd"]
    with pytest.raises(JobSpecKeyError, match=r"command\.cwd: required in a submitted spec"):
        JobSpec.from_dict(data)
    data["command"]["cwd"] = "relative/dir"
    with pytest.raises(JobSpecKeyError, match="must be an absolute path in a submitted spec"):
        JobSpec.from_dict(data)
    data["command"]["cwd"] = "/s"
    data["command"]["env"] = {b"A": "b"}  # msgpack's bin, as a client of another language may send
    with pytest.raises(JobSpecKeyError, match=r"command\.env: a variable name must be a string"):
        JobSpec.from_dict(data)


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ("command: []", "command.argv", "must list 1 to 1024 items"),
        ("command: [python3, yes]", "command.argv[1]", "true/false (quote it)"),
        ("command: [python3, {a: 1}]", "command.argv[1]", "must be a string or a number"),
        ('command: [""]', "command.argv", "the program (its first item) is empty"),
        ("command: python3 bench.py", "command", "must be the program's argv (a list) or a mapping"),
        ("command: {cwd: /tmp}", "command.argv", "required key is missing"),
        ("command: {argv: [x], env: {GPUPROF_MARKERS: /x}}", "command.env.GPUPROF_MARKERS", "set by gpuprof"),
        (
            "command: {argv: [x], env: {CUDA_VISIBLE_DEVICES: 1}}",
            "command.env.CUDA_VISIBLE_DEVICES",
            "its GPU",
        ),
        ("command: {argv: [x], env: {1A: b}}", "command.env.1A", "must match"),
        ("command: {argv: [x], env: {1: b}}", "command.env", "keys must be strings"),
        ("command: {argv: [x], env: [A]}", "command.env", "must be a mapping of NAME: value"),
        ("command: {argv: [x], points: each}", "command.points", "must be one of"),
        ("command: {argv: [x], args: [y]}", "command.args", "unknown key"),
    ],
)
def test_mistakes_name_the_key_and_line(section: str, key: str, problem: str) -> None:
    with pytest.raises(JobSpecKeyError) as caught:
        parse_job_spec(f"workload: command\n{section}\n", "job.yaml")
    error = caught.value
    assert error.key == key and problem in error.problem, str(error)
    assert error.line == 2


def test_a_program_after_dashes_completes_a_spec_without_one() -> None:
    got = params("timeout_s: 120\ndvfs: {sm_clocks: [900, 1410]}\n", command=["python3", "bench.py"])
    assert got.argv == ("python3", "bench.py") and got.cwd == "/specs"
    replaced = params("workload: command\ncommand: {argv: [old], points: marked}\n", command=["new"])
    assert replaced.argv == ("new",) and replaced.points == "marked"
    with pytest.raises(JobSpecKeyError, match="a program after -- runs as workload command, but this spec's"):
        parse_job_spec("workload: burn\nburn: {seconds: 1}\n", "job.yaml", ["python3"])
    with pytest.raises(JobSpecKeyError, match=r"command: required section is missing: the program to run"):
        parse_job_spec("workload: command\n", "job.yaml")


def test_the_command_line_alone_makes_a_spec_named_after_the_program(tmp_path: Path) -> None:
    spec = command_job_spec(["/usr/bin/python3", "-c", "pass"], str(tmp_path))
    assert spec.name == "python3" and spec.workload == "command"
    assert spec.params == CommandParams(("/usr/bin/python3", "-c", "pass"), str(tmp_path))
    assert JobSpec.from_dict(spec.submitted()) == spec
    file = tmp_path / "sweep.yaml"
    file.write_text("dvfs: {sm_clocks: [900]}\n")
    loaded = load_job_spec(file, ["bench"])
    assert isinstance(loaded.params, CommandParams) and loaded.params.cwd == str(tmp_path)


def test_the_command_sweep_example_runs_the_demo_beside_it_and_takes_another_program() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "command-sweep.yaml"
    spec = load_job_spec(example)
    assert isinstance(spec.params, CommandParams) and spec.params.points == "marked"
    assert spec.params.argv == ("python3", "markers_demo.py") and spec.params.cwd == str(example.parent)
    assert (example.parent / "markers_demo.py").is_file()
    assert spec.dvfs is not None and spec.dvfs.sweep == (600, 1005, 1410)
    other = load_job_spec(example, ["python3", "my_bench.py"])
    assert isinstance(other.params, CommandParams) and other.params.argv == ("python3", "my_bench.py")
