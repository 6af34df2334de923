"""Models with synthetic weights: faithful architectures, exact output lengths, phases in order, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
transformers = pytest.importorskip("transformers")

from gpuprof.client.wire.errors import GpuprofError  # noqa: E402
from gpuprof.client.wire.llm_spec import STUDY_ARCHS, LlmParams, ModelRef, SteadyState  # noqa: E402
from gpuprof.daemon.worker.llm import steady  # noqa: E402
from gpuprof.daemon.worker.llm.archs import arch_config  # noqa: E402
from gpuprof.daemon.worker.llm.engine import Device, load_model  # noqa: E402
from gpuprof.daemon.worker.llm.tokenizer import TOKENIZER_NAME, VOCAB_SIZE, build_tokenizer, load_tokenizer  # noqa: E402

# Parameter counts of the released models (their model cards and safetensors indexes).
RELEASED_PARAMETERS = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "mistral-7b-v0.1": 7_241_732_096,
    "falcon-7b": 6_921_720_704,
    "gpt-neo-2.7b": 2_651_307_520,
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def begin(self, name: str, **attrs: Any) -> None:
        self.events.append(("begin", name, attrs))

    def end(self, name: str, **attrs: Any) -> None:
        self.events.append(("end", name, attrs))


@pytest.mark.parametrize("arch", STUDY_ARCHS)
def test_full_architectures_have_the_released_models_parameter_count(arch: str) -> None:
    config = arch_config(arch, VOCAB_SIZE, 0, 1, 2)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMETERS[arch]


def test_the_shipped_tokenizer_is_the_one_the_build_makes(tmp_path: Path) -> None:
    built = tmp_path / "tokenizer.json"
    build_tokenizer().save(str(built), pretty=False)
    shipped = Path(__file__).parents[2] / "daemon" / "worker" / "llm" / "tokenizer.json"
    assert built.read_bytes() == shipped.read_bytes()
    tokenizer = load_tokenizer()
    text = "Why does ice float? Ünïcödé 日本 ✓"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: any text round-trips
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.name_or_path == TOKENIZER_NAME


@pytest.mark.parametrize("arch", [f"{name}-tiny" for name in STUDY_ARCHS])
def test_each_tiny_model_generates_the_asked_length_with_phases_in_order(arch: str) -> None:
    params = LlmParams(models=(ModelRef("arch", arch),), dtype="float32", max_new_tokens=6, min_new_tokens=6)
    lm = load_model(params.models[0], params, Device(None))
    assert lm.info["weights"].startswith("synthetic") and lm.info["tokenizer"] == TOKENIZER_NAME
    phases = Recorder()
    out = lm.generate(
        ["A short prompt.", "A longer prompt about the river Nile and its delta."], params, phases
    )
    assert out.output_tokens == [6, 6] and out.decode_steps == 5
    assert out.input_tokens[0] < out.input_tokens[1]  # padding is not counted
    assert [(kind, name) for kind, name, _ in phases.events] == [
        ("begin", "tokenize"), ("end", "tokenize"), ("begin", "prefill"), ("end", "prefill"),
        ("begin", "decode"), ("end", "decode"),
    ]  # fmt: skip
    assert phases.events[-1][2] == {"steps": 5}
    choices = lm.score_choices(
        [("The cup fell and", ["broke.", "sang a song.", "flew."])], params, Recorder()
    )
    assert choices.choices[0] in (0, 1, 2) and choices.output_tokens == [0]


def test_steady_state_windows_count_their_tokens() -> None:
    params = LlmParams(models=(ModelRef("arch", "llama-3.2-1b-tiny"),), dtype="float32")
    lm = load_model(params.models[0], params, Device(None))
    ids = steady.context_ids(lm, 2, 32, ["Some text about rivers and mountains."])
    markers = Recorder()
    settings = SteadyState(seconds=1.0, context_tokens=32, decode_tokens=4)
    steady.run_prefill(lm, ids, settings, markers, "m0.bs2")  # type: ignore[arg-type]
    steady.run_decode(lm, ids, settings, markers, "m0.bs2")  # type: ignore[arg-type]
    ends = [(name, attrs) for kind, name, attrs in markers.events if kind == "end"]
    begins = [attrs["id"] for kind, _, attrs in markers.events if kind == "begin"]
    # Each phase in back-to-back windows (steady.WINDOWS at most), so that their spread gives an interval;
    # decode's cache is cut back, never rebuilt, so its windows follow each other with no prefill between.
    prefills = [attrs for name, attrs in ends if name == "steady_prefill"]
    decodes = [attrs for name, attrs in ends if name == "steady_decode"]
    assert 2 <= len(prefills) <= steady.WINDOWS + 1 and 1 <= len(decodes) <= steady.WINDOWS + 1
    assert [name for name, _ in ends] == ["steady_prefill"] * len(prefills) + ["steady_decode"] * len(decodes)
    assert (
        [a["id"] for a in prefills]
        == [f"m0.bs2.s{i}" for i in range(len(prefills))]
        == begins[: len(prefills)]
    )
    for prefill in prefills:
        assert prefill["tokens"] == prefill["repetitions"] * 2 * 32 > 0
    for decode in decodes:
        assert decode["tokens"] == decode["steps"] * 2 and decode["steps"] >= 8  # a sync's worth at least
    assert sum(d["steps"] for d in decodes) > 4  # past one decode_tokens cycle


def test_a_full_size_model_is_refused_on_the_simulated_gpu() -> None:
    params = LlmParams(models=(ModelRef("arch", "mistral-7b-v0.1"),))
    device = Device(None)
    device.simulated = True  # as with GpuTarget(simulated=True), without the simulated library
    with pytest.raises(GpuprofError, match=r"use mistral-7b-v0\.1-tiny"):
        load_model(params.models[0], params, device)


def test_a_long_prompt_keeps_its_end_in_generation_and_in_its_features() -> None:
    params = LlmParams(
        models=(ModelRef("arch", "llama-3.2-1b-tiny"),), dtype="float32", max_input_tokens=8, max_new_tokens=2
    )
    lm = load_model(params.models[0], params, Device(None))
    prompt = "word " * 40 + "Question: which river?"
    out = lm.generate([prompt], params, Recorder())
    assert out.input_tokens == [8] and out.input_ids[0] == lm.encode(prompt, 8)
    assert lm.tokenizer.decode(out.input_ids[0]).endswith("which river?")


def test_a_local_model_directory_loads_with_its_own_tokenizer(tmp_path: Path) -> None:
    params = LlmParams(models=(ModelRef("arch", "gpt-neo-2.7b-tiny"),), dtype="float32", max_new_tokens=3)
    made = load_model(params.models[0], params, Device(None))
    made.model.save_pretrained(tmp_path / "model")  # what a user's directory of real weights looks like
    made.tokenizer.save_pretrained(tmp_path / "model")
    local = LlmParams(models=(ModelRef("path", str(tmp_path / "model")),), dtype="float32", max_new_tokens=3)
    lm = load_model(local.models[0], local, Device(None))
    assert lm.info["weights"] == "pretrained" and lm.info["model_source"] == "path"
    assert lm.info["parameters"] == made.info["parameters"] and lm.info["architecture"] == "GPTNeoForCausalLM"
    out = lm.generate(["The river Nile"], local, Recorder())
    assert out.input_tokens == made.generate(["The river Nile"], params, Recorder()).input_tokens
    with pytest.raises(GpuprofError, match=r"model directory .*/none: no such directory$"):
        load_model(ModelRef("path", str(tmp_path / "none")), local, Device(None))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(GpuprofError, match=r"weights\.bin: is a regular file, not a directory"):
        load_model(ModelRef("path", str(tmp_path / "weights.bin")), local, Device(None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GpuprofError, match=r"empty: no readable config\.json"):
        load_model(ModelRef("path", str(tmp_path / "empty")), local, Device(None))
