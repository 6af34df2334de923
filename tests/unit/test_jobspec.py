"""Job specs: the example loads; every mistake is refused naming the file, the line and the key."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import ConfigError, JobSpecError, exit_code
from gpuprof.client.wire.jobspec import (
    MAX_SPEC_BYTES,
    BurnParams,
    DvfsParams,
    JobSpec,
    JobSpecKeyError,
    load_job_spec,
    parse_job_spec,
)
from gpuprof.client.wire.llm_spec import LlmParams

EXAMPLE = Path(__file__).parents[2] / "examples" / "burn.yaml"
MINIMAL = "workload: burn\nburn:\n  seconds: 10\n"


def error_of(text: str, source: str = "job.yaml") -> JobSpecKeyError:
    with pytest.raises(JobSpecKeyError) as info:
        parse_job_spec(text, source)
    return info.value


def test_the_example_loads(tmp_path: Path) -> None:
    spec = load_job_spec(EXAMPLE)
    assert spec.name == "burn-demo" and spec.workload == "burn" and spec.gpu == 0 and spec.timeout_s == 600
    assert spec.params == BurnParams(10, 0.8, 0.5, "matmul", 8192, "bfloat16", 2)
    assert spec.raw_text == EXAMPLE.read_text() and spec.source == str(EXAMPLE)


def test_defaults_are_filled_in_and_the_name_is_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-job.yaml"
    path.write_text(MINIMAL)
    spec = load_job_spec(path)
    assert (spec.name, spec.gpu, spec.timeout_s) == ("my-job", 0, 3600.0)
    assert spec.params == BurnParams(seconds=10.0)
    memcpy = parse_job_spec("workload: burn\nburn: {seconds: 1, kind: memcpy}\n")
    assert memcpy.params.size == 1024 and memcpy.name == "job"


def test_a_date_where_a_string_is_expected_stays_text() -> None:
    assert parse_job_spec(f"name: 2024-01-01\n{MINIMAL}").name == "2024-01-01"


BASE = "name: demo\nworkload: burn\ntimeout_s: 600\nburn:\n  seconds: 10\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + "  duty_cycle: high\n",
            "job.yaml:6: burn.duty_cycle: must be a number in (0, 1], got 'high'",
        ),
        (BASE + "  duty_cycle: 0\n", "job.yaml:6: burn.duty_cycle: must be a number in (0, 1], got 0"),
        (BASE + "  duty_cycle: 1.5\n", "job.yaml:6: burn.duty_cycle: must be a number in (0, 1], got 1.5"),
        (BASE + "  duty_cycle: true\n", "job.yaml:6: burn.duty_cycle: must be a number in (0, 1], got True"),
        (BASE + "  duty_cycle: .nan\n", "job.yaml:6: burn.duty_cycle: must be a number in (0, 1], got nan"),
        (BASE + "  duty: 0.5\n", "job.yaml:6: burn.duty: unknown key (did you mean 'duty_cycle'?)"),
        (
            BASE + "  kind: matmull\n",
            "job.yaml:6: burn.kind: must be one of 'matmul', 'memcpy', got 'matmull' (did you mean 'matmul'",
        ),
        (
            BASE + "  dtype: int8\n",
            "job.yaml:6: burn.dtype: must be one of 'bfloat16', 'float16', 'float32', got 'int8'",
        ),
        (BASE + "  size: 8192.0\n", "job.yaml:6: burn.size: must be an integer in [16, 32768], got 8192.0"),
        (BASE + "  size: 100000\n", "job.yaml:6: burn.size: must be an integer in [16, 32768], got 100000"),
        (
            BASE + "  kind: memcpy\n  size: 0\n",
            "job.yaml:7: burn.size: must be an integer in [1, 32768], got 0",
        ),
        (BASE + "  warmup_s: -1\n", "job.yaml:6: burn.warmup_s: must be a number in [0, 3600], got -1"),
        (
            BASE + "  period_s: 0.001\n",
            "job.yaml:6: burn.period_s: must be a number in [0.01, 3600], got 0.001",
        ),
        (
            BASE.replace("seconds: 10", "seconds: 0"),
            "job.yaml:5: burn.seconds: must be a number in (0, 86400], got 0",
        ),
        (
            BASE.replace("seconds: 10", "seconds: 1e9"),
            "job.yaml:5: burn.seconds: must be a number in (0, 86400]",
        ),
        (
            BASE.replace("seconds: 10", "seconds: .inf"),
            "job.yaml:5: burn.seconds: must be a number in (0, 86400]",
        ),
        (
            "workload: burn\nburn:\n  seconds: 86400\n  period_s: 0.01\ntimeout_s: 100000\n",
            "job.yaml:4: burn.period_s: 0.01 s makes 8640000 periods in 86400 s; at most 100000",
        ),
        (
            BASE.replace("  seconds: 10\n", "  second: 10\n"),
            "job.yaml:5: burn.second: unknown key (did you mean 'seconds'?)",
        ),
        (
            BASE.replace("  seconds: 10\n", "  duty_cycle: 1\n"),
            "job.yaml:4: burn.seconds: required key is missing",
        ),
        ("name: x\nworkload: burn\n", "job.yaml:1: burn: required section is missing (workload is 'burn')"),
        ("name: x\nburn: {seconds: 1}\n", "job.yaml:1: workload: required key is missing"),
        (
            "workload: burnn\n",
            "job.yaml:1: workload: must be one of 'burn', 'llm', 'command', got 'burnn' "
            "(did you mean 'burn'?)",
        ),
        ("gpus: 1\n" + MINIMAL, "job.yaml:1: gpus: unknown key (did you mean 'gpu'?)"),
        ("gpu: -1\n" + MINIMAL, "job.yaml:1: gpu: must be an integer in [0, 255], got -1"),
        ("gpu: true\n" + MINIMAL, "job.yaml:1: gpu: must be an integer in [0, 255], got True"),
        ("gpu: '0'\n" + MINIMAL, "job.yaml:1: gpu: must be an integer in [0, 255], got '0'"),
        ("timeout_s: 0\n" + MINIMAL, "job.yaml:1: timeout_s: must be a number in (0, 604800], got 0"),
        (
            "timeout_s: 11\n" + MINIMAL,
            "job.yaml:1: timeout_s: 11 s is not longer than the workload's own running time (12 s",
        ),
        ("name: 12\n" + MINIMAL, "job.yaml:1: name: must be a string, got 12 (quote it)"),
        ("name: ''\n" + MINIMAL, "job.yaml:1: name: must be 1 to 128 printable characters, got ''"),
        ("name: [a]\n" + MINIMAL, "job.yaml:1: name: must be a string, got a list"),
        (MINIMAL + "burn:\n  seconds: 5\n", "job.yaml:4: burn: duplicate key"),
        ("1: x\n" + MINIMAL, "job.yaml:1: keys must be strings, got 1"),
        ("workload: burn\nburn: 10\n", "job.yaml:2: burn: must be a mapping of keys (seconds, "),
        (
            "- workload\n",
            "job.yaml:1: must be a mapping of keys (name, gpu, workload, timeout_s, dvfs, burn, llm, "
            "command), got a list",
        ),
        (
            "burn\n",
            "job.yaml:1: must be a mapping of keys (name, gpu, workload, timeout_s, dvfs, burn, llm, "
            "command), got 'burn'",
        ),
        ("", "job.yaml: the job spec is empty"),
        ("# only a comment\n", "job.yaml: the job spec is empty"),
        ("workload: burn\nburn:\n  seconds: [\n", "job.yaml:4: invalid YAML: "),
        ("workload: burn\n  seconds: 1\n", "job.yaml:2: invalid YAML: mapping values are not allowed here"),
        (MINIMAL + "---\n" + MINIMAL, "job.yaml:4: invalid YAML: but found another document"),
        ("base: &b {seconds: 1}\n" + MINIMAL, "job.yaml:1: base: unknown key"),
        (
            "workload: burn\nburn:\n  <<: {seconds: 1}\n",
            "job.yaml:3: burn: merge keys (<<) are not supported",
        ),
        (
            "workload: burn\nburn: !!set {seconds}\n",
            "job.yaml:2: burn: unsupported YAML tag 'tag:yaml.org,2002:set'",
        ),
        ("workload: !custom burn\n", "job.yaml:1: workload: unsupported YAML tag '!custom'"),
        (
            "workload: burn\nburn:\n  seconds: !!binary AAAA\n",
            "job.yaml:3: burn.seconds: unsupported YAML tag",
        ),
    ],
)
def test_mistakes_name_the_file_line_and_key(text: str, message: str) -> None:
    error = error_of(text)
    assert str(error).startswith(message), str(error)
    assert isinstance(error, JobSpecError) and isinstance(error, ConfigError) and exit_code(error) == 8


def test_the_error_carries_its_parts() -> None:
    error = error_of(BASE + "  duty_cycle: high\n")
    assert (error.source, error.line, error.key) == ("job.yaml", 6, "burn.duty_cycle")
    assert error.problem == "must be a number in (0, 1], got 'high'"


def test_python_tags_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        f"workload: burn\nburn: !!python/object/apply:os.system ['touch {marker}']\n",
        f"workload: !!python/object/new:os.system ['touch {marker}']\n",
    ):
        assert "unsupported YAML tag 'tag:yaml.org,2002:python/object" in str(error_of(text))
    assert not marker.exists()


def test_hostile_structure_is_bounded() -> None:
    deep = error_of("[" * 50_000 + "]" * 50_000)  # PyYAML's composer would recurse past Python's limit
    assert str(deep) == "job.yaml:1: nested deeper than 16 levels"
    recursive = error_of("workload: &a [*a]\n")
    assert "nested deeper than 16 levels (a recursive alias?)" in str(recursive)
    laughs = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    assert "more than 10000 values (are aliases expanding?)" in str(error_of(laughs))


def test_size_is_capped(tmp_path: Path) -> None:
    big = MINIMAL + "#" * MAX_SPEC_BYTES + "\n"
    assert str(error_of(big)) == "job.yaml: larger than 1 MiB"
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(JobSpecKeyError, match=r"big\.yaml: larger than 1 MiB"):
        load_job_spec(path)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError, match=r"missing\.yaml: cannot read job spec: No such file"):
        load_job_spec(tmp_path / "missing.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"workload: burn\nname: caf\xe9\n")
    with pytest.raises(JobSpecError, match=r"latin1\.yaml:2: not UTF-8 text"):
        load_job_spec(path)


def test_only_regular_files_are_read_never_a_fifo_a_device_or_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # opened to read, a FIFO would wait for a writer forever
    with pytest.raises(
        JobSpecError, match=r"spec\.fifo: cannot read job spec: not a regular file: it is a FIFO"
    ):
        load_job_spec(fifo)
    with pytest.raises(JobSpecError, match=r"/dev/zero: cannot read job spec: .* a character device"):
        load_job_spec("/dev/zero")
    with pytest.raises(JobSpecError, match=r"cannot read job spec: not a regular file: it is a directory"):
        load_job_spec(tmp_path)


def test_round_trip_through_plain_data() -> None:
    spec = parse_job_spec(EXAMPLE.read_text(), "burn.yaml")
    plain = spec.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert plain == {
        "name": "burn-demo",
        "gpu": 0,
        "workload": "burn",
        "timeout_s": 600.0,
        "burn": {
            "seconds": 10.0,
            "duty_cycle": 0.8,
            "period_s": 0.5,
            "kind": "matmul",
            "size": 8192,
            "dtype": "bfloat16",
            "warmup_s": 2.0,
        },
    }
    again = JobSpec.from_dict(json.loads(json.dumps(plain)), raw_text=spec.raw_text)
    assert again == spec and again.raw_text == spec.raw_text and again.source == "<submitted spec>"
    assert JobSpec.from_dict(plain).raw_text.startswith("name: burn-demo\n")  # dumped when not given


def test_submitted_data_is_validated_again() -> None:
    plain = parse_job_spec(MINIMAL).to_dict()
    plain["burn"]["duty_cycle"] = "high"
    with pytest.raises(JobSpecKeyError) as info:
        JobSpec.from_dict(plain)
    assert str(info.value) == "<submitted spec>: burn.duty_cycle: must be a number in (0, 1], got 'high'"
    int_key: dict[object, object] = {1: 2}
    int_key.update(plain)
    cases: list[tuple[object, str]] = [
        ({**plain, "extra": 1}, "<submitted spec>: extra: unknown key"),
        (int_key, "<submitted spec>: keys must be strings, got 1"),
        ([plain], "<submitted spec>: must be a mapping of keys"),
        (None, "<submitted spec>: the job spec is empty"),
    ]
    for bad, message in cases:
        with pytest.raises(JobSpecKeyError) as info:
            JobSpec.from_dict(bad)
        assert str(info.value).startswith(message)


def test_specs_are_frozen() -> None:
    spec = parse_job_spec(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.gpu = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.params.seconds = 1  # type: ignore[misc]


def test_a_burn_job_sweeps_clocks_each_point_for_its_seconds() -> None:
    spec = parse_job_spec(
        "workload: burn\ntimeout_s: 60\nburn: {seconds: 10, warmup_s: 1}\n"
        "dvfs: {sm_clocks: [1005, 1410], search: edp}\n"
    )
    assert spec.dvfs is not None and spec.dvfs.sweep == (1005, 1410) and spec.dvfs.search == "edp"
    wanted = (
        r"60 s is not longer than the sweep's own running time \(63\.25 s: "
        r"3 clocks x 20\.75 s, with 0\.5 s to settle at each and 0\.25 s after it\)"
    )
    with pytest.raises(JobSpecError, match=wanted):
        parse_job_spec(
            "workload: burn\ntimeout_s: 60\nburn: {seconds: 10, warmup_s: 1}\n"
            "dvfs: {sm_clocks: [1005, 1410, 1500], cooldown_s: 10}\n"
        )


def test_the_burn_search_example_loads() -> None:
    spec = load_job_spec(EXAMPLE.with_name("burn-search.yaml"))
    assert isinstance(spec.params, BurnParams) and spec.params.kind == "matmul"
    assert spec.dvfs is not None and len(spec.dvfs.sweep) == 31 and spec.dvfs.search == "energy"
    assert all((mhz - 345) % 15 == 0 for mhz in spec.dvfs.sweep)  # the H100's supported SM clocks


def test_the_study_example_expresses_the_whole_study_and_the_small_sweep_loads() -> None:
    study = load_job_spec(EXAMPLE.with_name("study.yaml"))
    assert isinstance(study.params, LlmParams)
    assert [m.name for m in study.params.models] == [
        "falcon-7b", "mistral-7b-v0.1", "llama-3.2-1b", "llama-3.2-3b", "gpt-neo-2.7b",
    ]  # fmt: skip
    assert study.params.tasks == ("qa", "commonsense", "factual") and len(study.params.batch_sizes) > 1
    assert study.params.steady_state is not None
    assert study.dvfs is not None and study.dvfs.order == "interleaved" and len(study.dvfs.sweep) >= 5
    assert all((mhz - 345) % 15 == 0 for mhz in study.dvfs.sweep)  # the H100's supported SM clocks
    small = load_job_spec(EXAMPLE.with_name("sweep-sim.yaml"))
    assert isinstance(small.params, LlmParams) and small.params.models[0].name.endswith("-tiny")
    assert small.dvfs is not None and len(small.dvfs.sweep) > 1


def test_a_dvfs_section_names_one_change_for_the_whole_job() -> None:
    spec = parse_job_spec(MINIMAL + "dvfs:\n  sm_clocks: 1410\n  power_limit_w: 500\n", "job.yaml")
    assert spec.dvfs == DvfsParams(sm_clocks=1410, power_limit_w=500.0)
    assert spec.to_dict()["dvfs"] == {"sm_clocks": 1410, "power_limit_w": 500.0, "snap": False}
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert "dvfs" not in parse_job_spec(MINIMAL).to_dict()
    cases = [
        (
            "dvfs: {}\n",
            "dvfs: changes nothing: give sm_clocks, sm_clock_range, phase_clocks, memory_clock or "
            "power_limit_w",
        ),
        (
            "timeout_s: 3600\ndvfs: {sm_clocks: {range: [345, 1980, 15]}, cooldown_s: 30}\n",
            "timeout_s: 3600 s is not longer than the sweep's own running time",
        ),
        ("dvfs: {sm_clocks: 1410.5}\n", "dvfs.sm_clocks: must be an integer in [1, 10000]"),
        ("dvfs: {sm_clocks: 1410, snap: yes please}\n", "dvfs.snap: must be true or false"),
        ("dvfs: {sm_clock: 1410}\n", "dvfs.sm_clock: unknown key (did you mean 'sm_clocks'?)"),
    ]
    for text, message in cases:
        with pytest.raises(JobSpecKeyError, match=re.escape(message)):
            parse_job_spec(MINIMAL + text, "job.yaml")


def test_a_spec_without_timeout_s_leaves_it_to_the_daemon() -> None:
    unset = parse_job_spec("workload: burn\nburn:\n  seconds: 1\n")
    assert "timeout_s" not in unset.submitted() and unset.to_dict()["timeout_s"] == 3600.0
    given = parse_job_spec("workload: burn\ntimeout_s: 60\nburn:\n  seconds: 1\n")
    assert given.submitted()["timeout_s"] == 60.0
    daemon_side = JobSpec.from_dict(unset.submitted(), default_timeout_s=120.0)
    assert daemon_side.timeout_s == 120.0 and daemon_side.to_dict()["timeout_s"] == 120.0


def test_a_spec_without_timeout_s_is_checked_against_the_daemons_default_not_a_guess() -> None:
    """A client does not know the daemon's default_timeout_s: a long workload without timeout_s is left for
    the daemon to check, which names the key and its default."""
    spec = parse_job_spec("workload: burn\nburn: {seconds: 5000}\n", "job.yaml")
    assert not spec.timeout_given and "timeout_s" not in spec.submitted()
    assert JobSpec.from_dict(spec.submitted(), default_timeout_s=7200).timeout_s == 7200
    with pytest.raises(JobSpecKeyError) as caught:
        JobSpec.from_dict(spec.submitted(), default_timeout_s=3600)
    assert caught.value.key == "timeout_s"
    assert caught.value.problem.startswith("3600 s (this daemon's default_timeout_s) is not longer than")
    located = spec.key_error(caught.value.key, caught.value.problem)  # as the client names it
    assert str(located).startswith("job.yaml:1: timeout_s: 3600 s (this daemon's default_timeout_s) is not")
