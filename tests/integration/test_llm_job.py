"""An llm job through gpuprofd on the simulated GPU: every request measured, reachable from every client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
pytest.importorskip("transformers")

from daemon_harness import DaemonProcess

from gpuprof.client import Client
from gpuprof.client.cli import main

REQUIRED = ("input_tokens", "output_tokens", "ttft_s", "tpot_s", "latency_s", "energy_j", "j_per_token",
            "token_entropy", "entity_density", "observed_sm_clock_mhz", "quality")  # fmt: skip
SPEC = """\
name: tiny-study
workload: llm
timeout_s: 600
llm:
  models: [{arch: llama-3.2-1b-tiny}, {arch: gpt-neo-2.7b-tiny}]
  tasks: [qa, commonsense, factual]
  dtype: float32
  prompts: 4
  batch_sizes: [1, 2]
  max_new_tokens: 4
  ignore_eos: true
  warmup_requests: 1
  ner: heuristic
  steady_state: {seconds: 0.5, context_tokens: 32, decode_tokens: 8}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str, Path]]:
    root = tmp_path_factory.mktemp("llm")
    daemon = DaemonProcess(root).start()
    spec = root / "study.yaml"
    spec.write_text(SPEC)
    try:
        with Client(daemon.endpoint) as client:
            handle = client.submit(str(spec))
            job = handle.wait(timeout_s=300)
        assert job["state"] == "succeeded", job.get("reason")
        yield daemon, str(job["id"]), root
    finally:
        daemon.kill()


def test_every_request_of_every_point_is_in_the_result(finished: tuple[DaemonProcess, str, Path]) -> None:
    daemon, job_id, _ = finished
    with Client(daemon.endpoint) as client:
        result = client.handle(job_id).result()
    requests = result.requests
    assert len(requests) == 2 * 3 * 2 * 4  # models x tasks x batch sizes x prompts
    for column in REQUIRED:
        assert column in requests, column
    assert requests["energy_j"].notna().all() and (requests["energy_j"] > 0).all()
    assert requests["simulated"].all()
    generated = requests[requests["task"] != "commonsense"]
    assert (generated["output_tokens"] == 4).all() and generated["tpot_s"].notna().all()
    scored = requests[requests["task"] == "commonsense"]
    assert (scored["output_tokens"] == 0).all() and scored["choice"].notna().all()
    assert set(requests["quality_metric"]) == {"accuracy", "f1", "rouge_l"}
    assert set(requests["model_source"]) == {"arch"} and set(requests["entity_method"]) == {"heuristic"}
    llm = result.summary["llm"]
    points = pd.DataFrame(llm["points"])
    assert len(points) == 12 and set(points["batch_size"]) == {1, 2}
    assert (points["requests"] == 4).all()
    steady = pd.DataFrame(llm["steady_state"])
    assert len(steady) == 2 * 2 * 2 and (steady["j_per_token"] > 0).all()  # models x batch sizes x phases
    assert {m["model"] for m in llm["models"]} == {"llama-3.2-1b-tiny", "gpt-neo-2.7b-tiny"}
    assert not {"batch", "prefill"} & {w for w in result.windows["name"]}  # those feed the requests


def test_show_json_and_export_give_the_requests(
    finished: tuple[DaemonProcess, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, job_id, root = finished
    assert main(["show", job_id, "--json", "--endpoint", daemon.endpoint]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["requests"]) == 48 and all(r["energy_j"] > 0 for r in shown["requests"])
    out = root / "requests.parquet"
    assert main(["export", job_id, "--requests", "-o", str(out), "--endpoint", daemon.endpoint]) == 0
    assert "wrote 48 requests" in capsys.readouterr().out
    exported = pd.read_parquet(out)
    assert list(exported["prompt_id"]) == list(shown_ids(shown))
    assert main(["show", job_id, "--endpoint", daemon.endpoint]) == 0
    text = capsys.readouterr().out
    assert "llama-3.2-1b-tiny" in text and "steady state (SIMULATED)" in text and "J/TOKEN" in text


def shown_ids(shown: dict[str, object]) -> list[str]:
    return [str(r["prompt_id"]) for r in shown["requests"]]  # type: ignore[index, union-attr]


def test_a_job_with_an_unreadable_dataset_fails_saying_so(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        spec = tmp_path / "job.yaml"
        spec.write_text(
            "workload: llm\ntimeout_s: 120\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n"
            f"  dataset: {{file: {tmp_path}/missing.jsonl}}\n  prompts: 1\n"
        )
        with Client(daemon.endpoint) as client:
            job = client.submit(str(spec)).wait(timeout_s=120)
        assert job["state"] == "failed"
        assert f"dataset file {tmp_path}/missing.jsonl: no such file" in job["reason"]
    finally:
        daemon.kill()


@pytest.mark.parametrize(("target", "repetitions"), [("1.0", 1), ("1.0e-9", 3)])
def test_a_point_and_a_steady_phase_repeat_until_their_energy_is_known_to_the_target(
    tmp_path: Path, target: str, repetitions: int
) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        spec = tmp_path / "job.yaml"
        spec.write_text(
            "workload: llm\ntimeout_s: 300\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n  dtype: float32\n"
            "  prompts: 4\n  batch_sizes: [2]\n  max_new_tokens: 2\n  ignore_eos: true\n  ner: heuristic\n"
            f"  warmup_requests: 0\n  ci95_target: {target}\n  repetitions: 3\n"
            "  steady_state: {seconds: 0.5, context_tokens: 16, decode_tokens: 8}\n"
        )
        with Client(daemon.endpoint) as client:
            result = client.submit(str(spec)).result(timeout_s=240)
        (point,) = result.summary["llm"]["points"]
        assert point["repetitions"] == repetitions and point["requests"] == 4 * repetitions
        assert point["ci95_target_reached"] is (repetitions == 1)  # 1e-9 is never reached: the cap stops it
        # A steady phase runs rounds of windows the same way, each round its 0.5 s at least.
        for phase in result.summary["llm"]["steady_state"]:
            assert (phase["seconds"] >= 3 * 0.5) is (repetitions == 3), phase
    finally:
        daemon.kill()


def test_a_compiled_engine_job_reports_its_compile_time_apart_from_its_requests(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    spec = tmp_path / "compiled.yaml"
    spec.write_text(
        "workload: llm\ntimeout_s: 600\nllm:\n  model: {arch: llama-3.2-1b-tiny}\n  engine: compiled\n"
        "  dtype: float32\n  prompts: 3\n  batch_sizes: [2]\n  max_new_tokens: 4\n  ignore_eos: true\n"
        "  warmup_requests: 1\n  ner: heuristic\n"
        "  steady_state: {seconds: 0.5, context_tokens: 16, decode_tokens: 8}\n"
    )
    try:
        with Client(daemon.endpoint) as client:
            job = client.submit(str(spec)).wait(timeout_s=300)
            assert job["state"] == "succeeded", job.get("reason")
            result = client.handle(str(job["id"])).result()
    finally:
        daemon.kill()
    (model,) = result.summary["llm"]["models"]
    assert model["engine"] == "compiled" and model["compile_mode"] == "default"  # a CPU: no CUDA graphs
    assert model["torch_version"] and model["transformers_version"] and model["weights_bytes"] > 0
    compiles = result.windows[result.windows["name"] == "compile"]
    assert sorted(a["id"] for a in compiles["attrs"]) == ["m0.bs1", "m0.bs2"]  # 3 prompts: batches of 2 and 1
    assert all(a["seconds"] > 0 for a in compiles["attrs"])
    measure = result.windows[result.windows["name"] == "measure"].iloc[0]
    assert (compiles["t_end_ns"] <= measure["t_start_ns"]).all()  # compiled before anything is measured
    requests = result.requests
    assert len(requests) == 3 and set(requests["engine"]) == {"compiled"}
    assert (requests["output_tokens"] == 4).all() and (requests["energy_j"] > 0).all()
    steady = result.summary["llm"]["steady_state"]
    assert {s["phase"] for s in steady} == {"prefill", "decode"} and all(
        s["engine"] == "compiled" for s in steady
    )
    assert all(s["bandwidth_bound_share"] is None for s in steady)  # the model ran on a CPU: no bound
