"""The llm section of a job spec: the quickstart loads, defaults are stated, mistakes name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuprof.client.wire.jobspec import JobSpec, JobSpecKeyError, LlmParams, load_job_spec, parse_job_spec
from gpuprof.client.wire.llm_spec import DatasetRef, ModelRef, SteadyState

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def llm(body: str, source: str = "/specs/job.yaml") -> LlmParams:
    spec = parse_job_spec(f"workload: llm\nllm:\n{body}", source)
    assert isinstance(spec.params, LlmParams)
    return spec.params


def error_of(body: str, source: str = "job.yaml") -> JobSpecKeyError:
    with pytest.raises(JobSpecKeyError) as info:
        parse_job_spec(f"workload: llm\nllm:\n{body}", source)
    return info.value


def test_the_quickstart_loads_and_survives_the_wire() -> None:
    spec = load_job_spec(QUICKSTART)
    assert isinstance(spec.params, LlmParams)
    assert spec.params.models == (ModelRef("arch", "llama-3.2-1b-tiny"),)
    assert spec.params.tasks == ("qa",) and spec.params.batch_sizes == (1, 4)
    assert spec.params.min_new_tokens == spec.params.max_new_tokens == 32  # ignore_eos
    assert spec.params.steady_state == SteadyState(3.0, 256, 64)
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_defaults_and_every_model_form() -> None:
    params = llm(
        "  models: [{arch: falcon-7b}, meta-llama/Llama-3.2-1B, ./weights, {hf: org/m, revision: v2}]\n"
    )
    assert params.models == (
        ModelRef("arch", "falcon-7b"),
        ModelRef("hf", "meta-llama/Llama-3.2-1B"),
        ModelRef("path", "/specs/weights"),  # relative to the spec file
        ModelRef("hf", "org/m", "v2"),
    )
    assert params.tasks == ("qa",) and params.dataset == DatasetRef() and params.batch_sizes == (1,)
    assert (params.dtype, params.max_new_tokens, params.min_new_tokens, params.sampling) == (
        "bfloat16", 32, 0, "greedy"
    )  # fmt: skip
    assert params.steady_state is None and params.trust_remote_code is False
    assert params.engine == "eager"  # the seed study's method


def test_a_dataset_file_gets_the_task_default_columns_and_a_format_from_its_suffix() -> None:
    params = llm("  model: {arch: llama-3.2-1b}\n  task: commonsense\n  dataset: {file: data/hs.parquet}\n")
    assert params.dataset.source == "file" and params.dataset.name == "/specs/data/hs.parquet"
    assert params.dataset.format == "parquet"
    assert params.dataset.columns == {"context": "ctx", "endings": "endings", "label": "label"}
    params = llm(
        "  model: {arch: llama-3.2-1b}\n  dataset: {hf: google/boolq, split: train, "
        "columns: {context: passage, answers: answer}}\n"
    )
    assert params.dataset == DatasetRef(
        "hf", "google/boolq", None, "train",
        columns={"question": "question", "context": "passage", "answers": "answer"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("  model: {arch: llama-3.2-1b}\n  engine: compile\n", "llm.engine", "did you mean 'compiled'"),
        ("  model: {arch: llama-3.2-1b}\n  engine: [eager]\n", "llm.engine", "must be one of 'eager'"),
        ("  model: {arch: llama-3.2-1b}\n  kv_cache_gb: 4\n", "llm.kv_cache_gb", "engine: vllm only"),
        ("  model: {arch: llama-3.2-1b}\n  engine: vllm\n  kv_cache_gb: 0\n", "llm.kv_cache_gb", "(0, 4096]"),
        ("  model: {arch: llama-3.2-1b}\n  engine: vllm\n  kv_cache_gb: 1e9\n", "llm.kv_cache_gb", "4096"),
        ("  model: llama-3.2-1b\n", "llm.model", "write {arch: llama-3.2-1b}"),
        ("  model: {arch: llama-3.2-1B}\n", "llm.model.arch", "must be one of"),
        ("  model: {arch: x, hf: a/b}\n", "llm.model", "exactly one of arch, hf or path"),
        ("  dtype: float32\n", "llm.model", "give model or models"),
        ("  model: {arch: falcon-7b}\n  tasks: [qa, qa]\n", "llm.tasks[1]", "listed twice"),
        ("  model: {arch: falcon-7b}\n  task: trivia\n", "llm.task", "must be one of"),
        ("  model: {arch: falcon-7b}\n  batch_sizes: [1, 0]\n", "llm.batch_sizes[1]", "integer in [1, 1024]"),
        ("  model: {arch: falcon-7b}\n  max_new_tokens: 4\n  min_new_tokens: 8\n", "llm.min_new_tokens",
         "more"),
        ("  model: {arch: falcon-7b}\n  temperature: 0.7\n", "llm.temperature", "sampling: sample only"),
        ("  model: {arch: falcon-7b}\n  trust_remote_code: true\n", "llm.trust_remote_code", "no remote"),
        ("  model: {arch: falcon-7b}\n  tasks: [qa, factual]\n  dataset: {file: /d.csv}\n", "llm.dataset",
         "one"),
        ("  model: {arch: falcon-7b}\n  dataset: {file: /d.txt}\n", "llm.dataset.format", "required"),
        ("  model: {arch: falcon-7b}\n  dataset: {hf: squad, columns: {label: x}}\n",
         "llm.dataset.columns.label", "unknown key"),
        ("  model: {arch: falcon-7b}\n  ner: bert\n", "llm.ner", "spacy:<pipeline"),
        ("  model: {arch: falcon-7b}\n  stedy_state: true\n", "llm.stedy_state",
         "did you mean 'steady_state'"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key(body: str, key: str, problem: str) -> None:
    error = error_of(body)
    assert error.key == key and problem in error.problem, str(error)
    assert error.line is not None


def test_a_submitted_spec_needs_absolute_paths() -> None:
    data = {"workload": "llm", "llm": {"model": {"path": "weights"}}}
    with pytest.raises(JobSpecKeyError, match="absolute path in a submitted spec"):
        JobSpec.from_dict(data)
    spec = JobSpec.from_dict({"workload": "llm", "llm": {"model": {"path": "/m/w"}}})
    assert isinstance(spec.params, LlmParams) and spec.params.models[0] == ModelRef("path", "/m/w")


def test_a_dvfs_sweep_takes_a_list_a_range_or_all() -> None:
    head = "workload: llm\nllm:\n  model: {arch: llama-3.2-1b}\ndvfs:\n"
    spec = parse_job_spec(head + "  sm_clocks: [1980, 1410]\n  cooldown_s: 2\n", "job.yaml")
    assert spec.dvfs is not None and spec.dvfs.sweep == (1980, 1410) and spec.dvfs.is_sweep
    assert spec.dvfs.order == "interleaved" and spec.dvfs.cooldown_s == 2.0
    assert JobSpec.from_dict(spec.to_dict()) == spec
    ranged = parse_job_spec(head + "  sm_clocks: {range: [1000, 1300, 150]}\n  order: sequential\n", "j.yaml")
    assert ranged.dvfs is not None and ranged.dvfs.sweep == (1000, 1150, 1300)
    every = parse_job_spec(head + "  sm_clocks: all\n", "job.yaml")
    assert every.dvfs is not None and every.dvfs.sweep_all and every.to_dict()["dvfs"]["sm_clocks"] == "all"
    assert JobSpec.from_dict(every.to_dict()) == every
    for text, message in [
        ("  sm_clocks: {range: [1300, 1000, 10]}\n", "needs 0 < lowest <= highest"),
        ("  sm_clocks: [1410, 1410]\n", "listed twice"),
        ("  sm_clocks: some\n", "a list of clocks, {range: [lo, hi, step]} or all"),
        ("  sm_clocks: 1410\n  order: sequential\n", "applies to a sweep"),
    ]:
        with pytest.raises(JobSpecKeyError, match=re.escape(message)):
            parse_job_spec(head + text, "job.yaml")


@pytest.mark.parametrize(("name", "clocks", "models"), [("sweep-sim", 6, 1), ("study", 7, 5)])
def test_the_sweep_examples_load(name: str, clocks: int, models: int) -> None:
    spec = load_job_spec(QUICKSTART.with_name(f"{name}.yaml"))
    assert isinstance(spec.params, LlmParams) and len(spec.params.models) == models
    assert spec.dvfs is not None and len(spec.dvfs.sweep) == clocks
    assert all((mhz - 345) % 15 == 0 for mhz in spec.dvfs.sweep)  # the H100's supported SM clocks


def test_a_ci_target_makes_repetitions_a_cap() -> None:
    params = llm("  model: {arch: falcon-7b}\n  ci95_target: 0.05\n")
    assert params.ci95_target == 0.05 and params.repetitions == 10  # the default cap with a target
    assert llm("  model: {arch: falcon-7b}\n  ci95_target: 0.05\n  repetitions: 4\n").repetitions == 4
    assert error_of("  model: {arch: falcon-7b}\n  ci95_target: 0\n").key == "llm.ci95_target"


def test_a_range_lock_holds_for_the_whole_job() -> None:
    head = "workload: llm\nllm:\n  model: {arch: llama-3.2-1b}\ndvfs:\n"
    spec = parse_job_spec(head + "  sm_clock_range: [1005, 1410]\n", "job.yaml")
    assert spec.dvfs is not None and spec.dvfs.sm_clock_range == (1005, 1410) and not spec.dvfs.is_sweep
    assert spec.to_dict()["dvfs"]["sm_clock_range"] == [1005, 1410]
    assert JobSpec.from_dict(spec.to_dict()) == spec
    for text, message in [
        ("  sm_clock_range: [1410, 1005]\n", "lowest < highest"),
        ("  sm_clock_range: [1005, 1410]\n  sm_clocks: 1410\n", "not both"),
    ]:
        with pytest.raises(JobSpecKeyError, match=re.escape(message)):
            parse_job_spec(head + text, "job.yaml")


def test_a_search_needs_a_sweep_and_a_known_objective() -> None:
    head = "workload: llm\nllm:\n  model: {arch: llama-3.2-1b}\ndvfs:\n"
    spec = parse_job_spec(head + "  sm_clocks: all\n  search: {latency_budget: 1.2}\n", "job.yaml")
    assert spec.dvfs is not None and (spec.dvfs.search, spec.dvfs.latency_budget) == ("latency_budget", 1.2)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    for text, message in [
        ("  sm_clocks: 1410\n  search: energy\n", "searches a sweep's clocks"),
        ("  sm_clocks: all\n  search: power\n", "must be one of 'energy', 'edp'"),
        ("  sm_clocks: all\n  search: {latency_budget: 0.9}\n", "must be a number in [1, 10]"),
    ]:
        with pytest.raises(JobSpecKeyError, match=re.escape(message)):
            parse_job_spec(head + text, "job.yaml")


def test_the_engines_example_runs_the_compiled_engine_and_eager_is_one_word_away() -> None:
    path = QUICKSTART.with_name("engines.yaml")
    spec = load_job_spec(path)
    assert isinstance(spec.params, LlmParams) and spec.params.engine == "compiled"
    eager = parse_job_spec(path.read_text().replace("engine: compiled", "engine: eager"), str(path))
    assert isinstance(eager.params, LlmParams) and eager.params.engine == "eager"
    assert JobSpec.from_dict(spec.to_dict()) == spec  # the engine survives the wire


def test_a_vllm_job_keeps_its_kv_cache_size_over_the_wire_and_others_send_none() -> None:
    head = "name: v\nworkload: llm\nllm:\n  model: {arch: mistral-7b-v0.1}\n  engine: vllm\n"
    spec = parse_job_spec(head + "  kv_cache_gb: 12.5\n", "job.yaml")
    assert isinstance(spec.params, LlmParams) and spec.params.kv_cache_gb == 12.5
    assert JobSpec.from_dict(spec.to_dict()) == spec
    default = parse_job_spec(head, "job.yaml")
    assert isinstance(default.params, LlmParams) and default.params.kv_cache_gb is None
    assert "kv_cache_gb" not in default.params.to_dict() and JobSpec.from_dict(default.to_dict()) == default
