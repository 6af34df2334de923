"""The ``vllm`` engine: vLLM's offline ``LLM`` on the job's GPU, each request timed by vLLM itself.

vLLM schedules a batch's requests itself (continuous batching), so the worker cannot stamp phase edges
between its calls. With ``disable_log_stats=False`` every ``RequestOutput`` carries ``RequestStateStats``:
``queued_ts``, ``scheduled_ts``, ``first_token_ts`` and ``last_token_ts``, read from ``time.monotonic()``
in this process (the engine core runs in-process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``), the clock of
gpuprof's markers and trace. A batch's phases are then stamped after the fact at those instants:
``tokenize`` from the call to the first request scheduled, ``prefill`` from there to the last first token,
``decode`` from there to the last token; each request's own instants go with its ``request`` event, and
the daemon shares the batch's energy among the requests active at each instant (docs/llm.md, "Engines").

Synthetic-weight (``arch:``) models are written as a config and gpuprof's tokenizer into a temporary
directory and loaded with ``load_format="dummy"`` (random weights made by vLLM on the device). Prefix
caching is off: every repetition of a prompt pays its prefill, as in the other engines.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams, ModelRef, SteadyState
from gpuprof.sampler.files import unusable_path

from ..markers import MarkerWriter
from .engine import BatchOutput, Device, Phases
from .tokenizer import TOKENIZER_NAME

__all__ = ["VllmModel", "load_vllm"]

CPU_KV_CACHE_GB = 1.0  # on a CPU (the simulated GPU) unless the spec says: vLLM's own default is 4 GiB+


def _vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise GpuprofError(f"engine vllm needs vLLM ({exc}): pip install 'gpuprof[vllm]'") from None


def _ns(seconds: float) -> int:
    """A vLLM instant (``time.monotonic()`` seconds) as gpuprof's CLOCK_MONOTONIC nanoseconds."""
    return int(seconds * 1e9)


def _stats(outputs: Sequence[Any]) -> list[Any]:
    stats = [getattr(o, "metrics", None) for o in outputs]
    if any(s is None or not getattr(s, "first_token_ts", 0) for s in stats):
        raise GpuprofError("vLLM gave no request timings: it must run with disable_log_stats=False")
    return stats


def _model_facts(model: Any) -> dict[str, Any]:
    """Run inside vLLM's worker (``LLM.apply_model``): the model's class, size and attention backends."""
    backends = set()
    for module in model.modules():
        finder = getattr(module, "get_attn_backend", None)
        if callable(finder):
            try:
                backends.add(str(finder().get_name()))
            except Exception:  # a layer that cannot say: the others still do
                continue
    params = list(model.parameters())
    return {
        "architecture": type(model).__name__,
        "parameters": int(sum(p.numel() for p in params)),
        "weights_bytes": int(sum(p.numel() * p.element_size() for p in params)),
        "attention": ", ".join(sorted(backends)) or "unknown",
    }


class VllmModel:
    """A model under vLLM's offline engine, with the other engines' interface (``generate``,
    ``score_choices``) and its own steady-state windows."""

    def __init__(
        self, ref: ModelRef, llm: Any, device: Device, info: dict[str, Any], max_positions: int
    ) -> None:
        self.ref, self.llm, self.device, self.info = ref, llm, device, info
        self.tokenizer = llm.get_tokenizer()
        self.max_positions = max_positions
        self.decoder = None  # no compiled decoder: vLLM compiles and captures at load

    def input_limit(self, params: LlmParams) -> int:
        return min(params.max_input_tokens, self.max_positions - params.max_new_tokens)

    def encode(self, text: str, limit: int) -> list[int]:
        """The prompt's token ids, cut to its last ``limit`` tokens (the question is at the end)."""
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids[-limit:]

    def _sampling(self, params: LlmParams, **override: Any) -> Any:
        options: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "min_tokens": params.min_new_tokens,
            "ignore_eos": params.ignore_eos,
            "seed": params.seed,
        }
        if params.sampling == "sample":
            options.update(temperature=params.temperature, top_p=params.top_p)
        else:
            options.update(temperature=0.0)
        options.update(override)
        return _vllm().SamplingParams(**options)

    def _run(self, inputs: list[list[int]], sampling: Any) -> tuple[int, list[Any], list[Any]]:
        """(ns of the call, outputs, their stats) of one ``LLM.generate`` over token ids."""
        self.device.busy()
        called = time.monotonic_ns()
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": ids} for ids in inputs], sampling, use_tqdm=False
            )
            self.device.sync()
        finally:
            self.device.idle()
        return called, outputs, _stats(outputs)

    @staticmethod
    def _stamp(phases: Phases, called: int, timings: list[dict[str, int]], steps: int) -> None:
        """The batch's phases at vLLM's instants: tokenize until its first request is scheduled, prefill
        until every request has its first token, decode until the last token."""
        scheduled = max(called, min(t["scheduled_ns"] for t in timings))
        first = max(scheduled, max(t["first_token_ns"] for t in timings))
        last = max(first, max(t["last_token_ns"] for t in timings))
        phases.begin("tokenize", t_ns=called)
        phases.end("tokenize", t_ns=scheduled)
        phases.begin("prefill", t_ns=scheduled)
        phases.end("prefill", t_ns=first)
        phases.begin("decode", t_ns=first)
        phases.end("decode", t_ns=last, steps=steps)

    def generate(self, prompts: Sequence[str], params: LlmParams, phases: Phases) -> BatchOutput:
        """One batch through vLLM; its phases stamped at vLLM's own instants, after it returned."""
        limit = self.input_limit(params)
        ids = [self.encode(p, limit) for p in prompts]
        called, outputs, stats = self._run(ids, self._sampling(params))
        timings = [
            {
                "queued_ns": _ns(s.queued_ts),
                "scheduled_ns": _ns(s.scheduled_ts),
                "first_token_ns": _ns(s.first_token_ts),
                "last_token_ns": _ns(max(s.last_token_ts, s.first_token_ts)),
            }
            for s in stats
        ]
        counts = [len(o.outputs[0].token_ids) for o in outputs]
        steps = max(max(counts, default=0) - 1, 0)
        self._stamp(phases, called, timings, steps)
        texts = [str(o.outputs[0].text) for o in outputs]
        return BatchOutput(
            [len(i) for i in ids], ids, counts, list(texts), [None] * len(prompts), steps, timings
        )

    def score_choices(
        self, items: Sequence[tuple[str, Sequence[str]]], params: LlmParams, phases: Phases
    ) -> BatchOutput:
        """Picks each item's ending with the highest mean log-likelihood per token, from vLLM's prompt
        log-probabilities: one prefill of every context + ending, one token generated and not counted."""
        limit = self.input_limit(params)
        encoded = []
        for context, endings in items:
            ctx = self.encode(context, limit)
            outs = [self.tokenizer(" " + e.strip(), add_special_tokens=False)["input_ids"] for e in endings]
            encoded.append((ctx, outs))
        rows = [ctx + ending for ctx, endings in encoded for ending in endings]
        scoring = self._sampling(params, max_tokens=1, min_tokens=0, prompt_logprobs=0, ignore_eos=False)
        called, outputs, stats = self._run(rows, scoring)
        choices: list[int | None] = []
        timings = []
        row = 0
        for ctx, endings in encoded:
            means, own = [], stats[row : row + len(endings)]
            for ending in endings:
                logprobs = outputs[row].prompt_logprobs or []
                picked = [
                    logprobs[position][token].logprob
                    for position, token in enumerate(rows[row])
                    if position >= len(ctx) and logprobs[position] and token in logprobs[position]
                ]
                means.append(sum(picked) / len(picked) if picked and ending else float("-inf"))
                row += 1
            choices.append(max(range(len(means)), key=means.__getitem__))
            first = max(_ns(s.first_token_ts) for s in own)
            timings.append(
                {
                    "scheduled_ns": min(_ns(s.scheduled_ts) for s in own),
                    "first_token_ns": first,
                    "last_token_ns": first,  # the token generated is not an answer: no decode
                }
            )
        self._stamp(phases, called, timings, 0)
        lengths = [len(ctx) + sum(len(e) for e in endings) for ctx, endings in encoded]
        contexts = [ctx for ctx, _ in encoded]
        return BatchOutput(lengths, contexts, [0] * len(items), [None] * len(items), choices, 0, timings)

    def steady_prefill(
        self, ids: list[list[int]], steady: SteadyState, markers: MarkerWriter, name: str
    ) -> None:
        """Prefill of ``ids`` again and again (one token generated each) for ``steady.seconds``, in one
        ``steady_prefill`` window from the first request scheduled to the last first token."""
        batch, width = len(ids), len(ids[0])
        sampling = _vllm().SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        begun = ended = 0
        reps = 0
        deadline = time.monotonic() + steady.seconds
        while reps == 0 or time.monotonic() < deadline:
            _, _, stats = self._run(ids, sampling)
            if reps == 0:
                begun = min(_ns(s.scheduled_ts) for s in stats)
            ended = max(_ns(s.first_token_ts) for s in stats)
            reps += 1
        markers.begin("steady_prefill", t_ns=begun, id=name, batch_size=batch, context_tokens=width)
        markers.end("steady_prefill", t_ns=max(begun, ended), repetitions=reps, tokens=reps * batch * width,
                    id=name)  # fmt: skip

    def steady_decode(
        self, ids: list[list[int]], steady: SteadyState, markers: MarkerWriter, name: str
    ) -> None:
        """Decode at a full batch, as the ML.ENERGY benchmark defines its steady state: per window the
        batch's requests (``steady.decode_tokens`` each, end of sequence ignored) from the instant every one
        has its first token (the batch is full) to the instant the first one ends (it starts to drain).
        Windows follow each other until ``steady.seconds`` have passed."""
        batch, width = len(ids), len(ids[0])
        sampling = _vllm().SamplingParams(
            max_tokens=steady.decode_tokens + 1, min_tokens=steady.decode_tokens + 1, temperature=0.0,
            ignore_eos=True,
        )  # fmt: skip
        deadline = time.monotonic() + steady.seconds
        segment = 0
        while segment == 0 or time.monotonic() < deadline:
            _, outputs, stats = self._run(ids, sampling)
            full = max(_ns(s.first_token_ts) for s in stats)
            drains = min(_ns(s.last_token_ts) for s in stats)
            if drains <= full:
                raise GpuprofError(
                    f"steady decode at batch {batch}: vLLM never ran the {batch} requests together "
                    "(raise the KV cache, kv_cache_gb, or lower the batch size)"
                )
            tokens = 0.0
            for output, s in zip(outputs, stats, strict=True):
                generated = len(output.outputs[0].token_ids) - 1  # after the first token
                span = _ns(s.last_token_ts) - _ns(s.first_token_ts)
                tokens += generated * (drains - full) / span if span > 0 else 0.0
            window = f"{name}.s{segment}"
            markers.begin("steady_decode", t_ns=full, id=window, batch_size=batch, context_tokens=width)
            markers.end("steady_decode", t_ns=drains, id=window, steps=round(tokens / batch),
                        tokens=round(tokens))  # fmt: skip
            segment += 1


def _model_source(ref: ModelRef, folder: Path) -> tuple[str, dict[str, Any]]:
    """(what vLLM loads, extra LLM keywords) for ``ref``: a synthetic model's config and tokenizer saved in
    ``folder`` with dummy weights, a local directory checked first, or a hub id as given."""
    if ref.synthetic:
        from .archs import arch_config
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
        config = arch_config(
            ref.name, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        config.architectures = [config.architectures[0] if config.architectures else _causal_lm(config)]
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return str(folder), {"load_format": "dummy"}
    if ref.kind == "path":
        problem = unusable_path(ref.name, directory=True)
        if problem is None and not os.access(Path(ref.name) / "config.json", os.R_OK):
            problem = f"{ref.name}: no readable config.json (not a saved transformers model)"
        if problem is not None:
            raise GpuprofError(f"model directory {problem}")
        return ref.name, {}
    return ref.name, {"revision": ref.revision}


def _causal_lm(config: Any) -> str:
    """The causal-LM class name of a transformers config (LlamaConfig -> LlamaForCausalLM)."""
    return type(config).__name__.removesuffix("Config") + "ForCausalLM"


def load_vllm(
    ref: ModelRef, params: LlmParams, device: Device, max_positions: int, max_sequences: int
) -> VllmModel:
    """Starts vLLM's engine on ``ref`` for sequences of up to ``max_positions`` tokens, ``max_sequences``
    of them at once; its compilation and graph capture happen here, outside every measured window."""
    vllm = _vllm()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process: one clock
    if device.simulated and ref.synthetic and not ref.name.endswith("-tiny"):
        raise GpuprofError(
            f"{ref.name} would run on this CPU (the GPU is simulated): use {ref.name}-tiny, or a real GPU"
        )
    started = time.monotonic()
    kv: dict[str, Any] = {}
    if device.device.type == "cpu":
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{params.kv_cache_gb or CPU_KV_CACHE_GB:g}"
    elif params.kv_cache_gb:
        kv["kv_cache_memory_bytes"] = int(params.kv_cache_gb * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="gpuprof-vllm-") as folder:
        source, extra = _model_source(ref, Path(folder))
        try:
            llm = vllm.LLM(
                model=source,
                tokenizer=source,
                dtype=params.dtype,
                seed=params.seed,
                max_model_len=max_positions,
                max_num_seqs=max_sequences,
                enable_prefix_caching=False,
                disable_log_stats=False,
                trust_remote_code=params.trust_remote_code,
                **extra,
                **kv,
            )
        except (ValueError, RuntimeError, OSError, TypeError) as exc:  # what vLLM refuses (TypeError: an
            # option this vLLM does not know)
            raise GpuprofError(f"vLLM cannot run {ref.label}: {str(exc)[:500]}") from None
    facts = llm.apply_model(_model_facts)[0]
    kv_bytes = getattr(getattr(llm.llm_engine, "vllm_config", None), "cache_config", None)
    info = {
        "model": ref.name,
        "model_source": ref.kind,
        "weights": "synthetic (random, made by vLLM)" if ref.synthetic else "pretrained",
        **facts,
        "dtype": params.dtype,
        "tokenizer": TOKENIZER_NAME if ref.synthetic else ref.name,
        "device": device.name,
        "load_s": round(time.monotonic() - started, 3),
        "engine": "vllm",
        "vllm_version": str(vllm.__version__),
        "torch_version": str(device.torch.__version__),
        "transformers_version": str(importlib.import_module("transformers").__version__),
        "kv_cache_bytes": getattr(kv_bytes, "kv_cache_memory_bytes", None),
        "max_num_seqs": max_sequences,
        "prefix_caching": False,
        "memory_bandwidth_gbs": device.memory_bandwidth_gbs(),
    }
    return VllmModel(ref, llm, device, info, max_positions)
