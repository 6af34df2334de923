"""The compiled engine on a CPU: the same answers as eager generate, its phases, its end-of-sequence rules."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="LLM jobs need torch (pip install '.[test]')")
pytest.importorskip("transformers")

from test_llm_engine import Recorder  # noqa: E402

from gpuprof.client.wire.errors import GpuprofError  # noqa: E402
from gpuprof.client.wire.llm_spec import LlmParams, ModelRef, SteadyState  # noqa: E402
from gpuprof.daemon.worker.llm import compiled, steady  # noqa: E402
from gpuprof.daemon.worker.llm.compiled import (  # noqa: E402
    AUTOTUNE_MAX_BATCH,
    AUTOTUNE_MODE,
    EOS_CHECK_STEPS,
    CompiledDecoder,
)
from gpuprof.daemon.worker.llm.engine import Device, LoadedModel, load_model  # noqa: E402
from gpuprof.daemon.worker.workloads.llm import decode_batch_sizes  # noqa: E402

PROMPTS = ["A short prompt.", "A longer prompt about the river Nile and its delta, which floods each year."]


def varied(arch: str, **settings: Any) -> tuple[LoadedModel, LlmParams]:
    """A tiny model whose random weights are scaled up, so that greedy answers vary from token to token."""
    params = LlmParams(models=(ModelRef("arch", arch),), dtype="float32", **settings)
    lm = load_model(params.models[0], params, Device(None))
    with torch.no_grad():
        for weight in lm.model.parameters():
            weight.mul_(8)
    return lm, params


@pytest.mark.parametrize("arch", ["llama-3.2-1b-tiny", "gpt-neo-2.7b-tiny"])
def test_compiled_generation_gives_eager_generates_answers(arch: str) -> None:
    lm, params = varied(arch, max_new_tokens=20)
    eager = lm.generate(PROMPTS, params, Recorder())
    assert len(set(eager.outputs[0] or "")) > 5  # a varied answer, or the comparison proves little
    lm.decoder = CompiledDecoder(lm, params, 96)
    assert lm.decoder.prepare(2) > 0 and lm.decoder.prepare(2) == 0  # compiled once per batch size
    phases = Recorder()
    compiled = lm.generate(PROMPTS, params, phases)
    assert compiled.outputs == eager.outputs  # left padding, positions and the static cache line up
    assert compiled.output_tokens == eager.output_tokens == [20, 20]
    assert compiled.input_tokens == eager.input_tokens and compiled.decode_steps == 19
    assert [(kind, name) for kind, name, _ in phases.events] == [
        ("begin", "tokenize"), ("end", "tokenize"), ("begin", "prefill"), ("end", "prefill"),
        ("begin", "decode"), ("end", "decode"),
    ]  # fmt: skip


def test_the_end_of_sequence_waits_for_min_new_tokens_and_stops_the_batch() -> None:
    lm, params = varied("llama-3.2-1b-tiny", max_new_tokens=60, min_new_tokens=3)
    eos = lm.tokenizer.eos_token_id

    def favour_eos(module: Any, inputs: Any, output: Any) -> Any:
        output[..., eos] += 1e4
        return output

    lm.model.lm_head.register_forward_hook(favour_eos)
    eager = lm.generate(PROMPTS, params, Recorder())
    lm.decoder = CompiledDecoder(lm, params, 96)
    compiled = lm.generate(PROMPTS, params, Recorder())
    assert compiled.output_tokens == eager.output_tokens == [4, 4]  # three tokens, then the end of sequence
    assert compiled.decode_steps == EOS_CHECK_STEPS  # all ended: stopped at the first check, not at 59


def test_sampling_with_a_tiny_top_p_keeps_only_the_likeliest_token() -> None:
    lm, greedy = varied("llama-3.2-1b-tiny", max_new_tokens=12)
    expected = lm.generate(PROMPTS[:1], greedy, Recorder())
    _, sample = varied("llama-3.2-1b-tiny", max_new_tokens=12, sampling="sample", top_p=1e-6)
    lm.decoder = CompiledDecoder(lm, sample, 64)
    assert lm.generate(PROMPTS[:1], sample, Recorder()).outputs == expected.outputs


def test_compiled_steady_decode_rebuilds_its_context_between_windows() -> None:
    settings = SteadyState(seconds=0.3, context_tokens=16, decode_tokens=4)
    params = LlmParams(
        models=(ModelRef("arch", "llama-3.2-1b-tiny"),), dtype="float32", steady_state=settings
    )
    lm = load_model(params.models[0], params, Device(None))
    lm.decoder = CompiledDecoder(lm, params, 32)
    lm.decoder.prepare(2)
    ids = steady.context_ids(lm, 2, 16, ["Some text about rivers and mountains."])
    markers = Recorder()
    ticks = iter(range(1_000_000))  # a clock of 10 ms a reading: windows by count, not by the CPU's speed
    steady.run_decode(lm, ids, settings, markers, "m0.bs2", clock=lambda: next(ticks) * 0.01)  # type: ignore[arg-type]
    ends = [attrs for kind, name, attrs in markers.events if kind == "end" and name == "steady_decode"]
    begins = [attrs["id"] for kind, name, attrs in markers.events if kind == "begin"]
    assert len(ends) > 1 and begins == [f"m0.bs2.s{n}" for n in range(len(ends))]
    assert all(e["steps"] == 4 and e["tokens"] == 8 for e in ends[:-1])  # decode_tokens a window


def test_every_batch_size_a_model_decodes_at_is_compiled_before_it_runs() -> None:
    from gpuprof.daemon.worker.llm.tasks import TaskItem

    def items(count: int, kind: str) -> list[TaskItem]:
        return [TaskItem(id=str(i), task="qa", kind=kind, prompt="p") for i in range(count)]

    params = LlmParams(models=(ModelRef("arch", "x"),), batch_sizes=(4, 8))
    assert decode_batch_sizes(params, {"qa": items(10, "free")}) == [2, 4, 8]  # 10 = 4+4+2 = 8+2
    assert decode_batch_sizes(params, {"commonsense": items(10, "choice")}) == []  # scored, not decoded
    steady_params = LlmParams(models=(ModelRef("arch", "x"),), batch_sizes=(4,), steady_state=SteadyState())
    assert decode_batch_sizes(steady_params, {"qa": items(3, "free")}) == [3, 4]


class _FakeCudaGraphs:
    """torch.cuda's graph calls on the CPU: a capture records the decoder's step without running it (as a
    real capture runs nothing), and a replay runs the recorded step on the graph's buffers."""

    def __init__(
        self,
        decoder: CompiledDecoder,
        monkeypatch: pytest.MonkeyPatch,
        fail: bool = False,
        autotune: bool = False,
    ) -> None:
        self.capturing: Any = None
        self.fail = fail
        self.replays = 0
        real_step = decoder._graph_step

        def step(graph: Any) -> None:
            if self.capturing is None:
                real_step(graph)
            else:
                self.capturing.body = lambda: real_step(graph)

        class Graph:
            body: Any = None

            def replay(inner) -> None:
                self.replays += 1
                inner.body()

        stream = type("Stream", (), {"wait_stream": lambda s, other: None})
        monkeypatch.setattr(decoder, "_graph_step", step)
        monkeypatch.setattr(torch.cuda, "Stream", stream)
        monkeypatch.setattr(torch.cuda, "current_stream", stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "graph_pool_handle", object)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", self.capture)
        decoder._capture = True  # as on a GPU
        if not autotune:  # one mode only: which of two is faster on this CPU is no test's business
            monkeypatch.setattr(compiled, "AUTOTUNE_MAX_BATCH", 0)

    @contextlib.contextmanager
    def capture(self, graph: Any, pool: Any = None) -> Any:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.capturing = graph
        try:
            yield
        finally:
            self.capturing = None


def on_fake_gpu(
    monkeypatch: pytest.MonkeyPatch,
    max_len: int,
    fail: bool = False,
    autotune: bool = False,
    arch: str = "llama-3.2-1b-tiny",
    **settings: Any,
) -> tuple[LoadedModel, LlmParams, Any, CompiledDecoder, _FakeCudaGraphs]:
    """A varied tiny model, its eager answers to PROMPTS, and a compiled decoder capturing as on a GPU."""
    lm, params = varied(arch, **settings)
    eager = lm.generate(PROMPTS, params, Recorder())
    lm.decoder = decoder = CompiledDecoder(lm, params, max_len)
    return lm, params, eager, decoder, _FakeCudaGraphs(decoder, monkeypatch, fail=fail, autotune=autotune)


def test_a_step_captured_by_hand_feeds_its_tokens_back_and_answers_as_eager_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lm, params, eager, decoder, graphs = on_fake_gpu(monkeypatch, 96, max_new_tokens=20)
    decoder.prepare(2)
    assert 2 in decoder._graphs and decoder.graph_fallback is None  # the check passed: no fallback
    assert decoder.description["cuda_graphs"].startswith("captured by hand")
    checked = graphs.replays
    compiled = lm.generate(PROMPTS, params, Recorder())
    assert graphs.replays - checked == 19  # every decode step a replay
    assert compiled.outputs == eager.outputs and compiled.output_tokens == [20, 20]
    # steady decode: the buffers advance across calls, and a prefill starts them again
    with torch.inference_mode():
        ids = torch.randint(10, 200, (2, 8))
        state = decoder.prefill(ids, torch.ones_like(ids))
        first = torch.cat(
            decoder.decode(state, 3, stop_at_eos=False) + decoder.decode(state, 2, stop_at_eos=False), 1
        )
        state = decoder.prefill(ids, torch.ones_like(ids))
        again = torch.cat(decoder.decode(state, 5, stop_at_eos=False), 1)
    assert torch.equal(first, again) and state.steps == 5


def test_a_sliding_window_model_whose_window_holds_the_cache_is_captured_and_answers_as_eager_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mistral's sliding-window cache layers keep their length on the host, which a replay cannot advance
    (and on which torch.compile would recompile at every uncaptured step): within the window they are plain
    static layers, so the step is captured, not sent to the fallback."""
    lm, params, eager, decoder, graphs = on_fake_gpu(
        monkeypatch, 96, arch="mistral-7b-v0.1-tiny", max_new_tokens=20
    )
    assert lm.model.config.sliding_window >= 96
    decoder.prepare(2)
    assert decoder.graph_fallback is None and 2 in decoder._graphs
    checked = graphs.replays
    compiled = lm.generate(PROMPTS, params, Recorder())
    assert graphs.replays - checked == 19
    assert compiled.outputs == eager.outputs and compiled.output_tokens == [20, 20]


def test_a_cache_longer_than_the_sliding_window_is_refused_before_anything_compiles() -> None:
    lm, params = varied("mistral-7b-v0.1-tiny", max_new_tokens=8)
    window = lm.model.config.sliding_window
    decoder = CompiledDecoder(lm, params, window + 1)
    refused = rf"KV cache \({window + 1} positions.*sliding window \({window}\)"
    with pytest.raises(GpuprofError, match=refused):
        decoder.prepare(1)
    assert decoder.compile_s == {}


def test_a_capture_that_fails_falls_back_to_reduce_overhead_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lm, params, eager, decoder, _ = on_fake_gpu(monkeypatch, 64, fail=True, max_new_tokens=8)
    decoder.prepare(2)
    assert not decoder._graphs and decoder.mode == "reduce-overhead"
    assert "capture failed: RuntimeError" in decoder.description["cuda_graphs"]
    assert lm.generate(PROMPTS, params, Recorder()).outputs == eager.outputs


def test_at_a_small_batch_the_faster_of_two_compiled_graphs_is_kept_and_both_times_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lm, params, eager, decoder, _ = on_fake_gpu(monkeypatch, 64, autotune=True, max_new_tokens=12)
    timed: list[tuple[int, str]] = []

    def time_graph(ids: Any, graph: Any) -> float:  # the autotuned graph replays faster
        timed.append((int(ids.shape[0]), graph.mode))
        return 0.0015 if graph.mode == AUTOTUNE_MODE else 0.00175

    monkeypatch.setattr(decoder, "_time_graph", time_graph)
    decoder.prepare(2)
    decoder.prepare(AUTOTUNE_MAX_BATCH + 1)
    assert timed == [(2, "default"), (2, AUTOTUNE_MODE)]  # a larger batch: default mode only, not timed
    larger = AUTOTUNE_MAX_BATCH + 1
    assert decoder._graphs[2].mode == AUTOTUNE_MODE and decoder._graphs[larger].mode == "default"
    described = decoder.description
    assert described["compile_mode"] == f"{AUTOTUNE_MODE} (batch 2); default (batch {larger})"
    assert decoder.trials == {2: {"default": pytest.approx(1.75), AUTOTUNE_MODE: pytest.approx(1.5)}}
    assert decoder.trials_text(2) == f"default 1.750 ms a step; {AUTOTUNE_MODE} 1.500 ms a step"
    assert decoder.trials_text(larger) is None
    assert lm.generate(PROMPTS, params, Recorder()).outputs == eager.outputs  # the kept graph answers


def test_a_mode_whose_capture_fails_is_ruled_out_and_the_other_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    lm, params, eager, decoder, _ = on_fake_gpu(monkeypatch, 64, autotune=True, max_new_tokens=8)
    capture = decoder._capture_graph

    def failing(state: Any, mode: str) -> Any:
        if mode == AUTOTUNE_MODE:
            raise RuntimeError("no valid triton configs")
        return capture(state, mode)

    monkeypatch.setattr(decoder, "_capture_graph", failing)
    decoder.prepare(2)
    assert decoder._graphs[2].mode == "default" and decoder.graph_fallback is None
    tried = decoder.trials[2]
    assert tried[AUTOTUNE_MODE] == "capture failed: RuntimeError: no valid triton configs"
    assert isinstance(tried["default"], float) and tried["default"] > 0  # timed for real on the CPU
    assert lm.generate(PROMPTS, params, Recorder()).outputs == eager.outputs
