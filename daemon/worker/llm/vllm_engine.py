"""The ``vllm`` engine: vLLM's offline ``LLM`` on the job's GPU, each request timed by vLLM itself.

vLLM schedules a batch's requests itself (continuous batching), so the worker cannot stamp phase edges
between its calls. With ``disable_log_stats=False`` every ``RequestOutput`` carries ``RequestStateStats``:
``queued_ts``, ``scheduled_ts``, ``first_token_ts`` and ``last_token_ts``, read from ``time.monotonic()``
in this process (the engine core runs in-process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``), the clock of
gpuprof's markers and trace. A batch's phases are then stamped after the fact at those instants:
``tokenize`` from the call to the first request queued, ``prefill`` from the first scheduled to the last
first token, ``decode`` from there to the last token.

Synthetic-weight (``arch:``) models are written as a config and gpuprof's tokenizer into the job's
directory and loaded with ``load_format="dummy"`` (random weights made by vLLM on the device).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams, ModelRef

from .engine import BatchOutput, Device

__all__ = ["VllmModel", "load_vllm"]

CPU_KV_CACHE_GB = 1.0  # on a CPU (the simulated GPU) unless the spec says: vLLM's own default is 4 GiB+


def _vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise GpuprofError(f"engine vllm needs vLLM ({exc}): pip install 'gpuprof[vllm]'") from None


class VllmModel:
    """A model under vLLM's offline engine, with the eager engine's interface (``generate``)."""

    def __init__(
        self, ref: ModelRef, llm: Any, device: Device, info: dict[str, Any], params: LlmParams
    ) -> None:
        self.ref, self.llm, self.device, self.info = ref, llm, device, info
        self.tokenizer = llm.get_tokenizer()
        self.max_positions = params.max_input_tokens + params.max_new_tokens
        self.decoder = None

    def input_limit(self, params: LlmParams) -> int:
        return params.max_input_tokens

    def encode(self, text: str, limit: int) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids[-limit:]

    def _sampling(self, params: LlmParams) -> Any:
        vllm = _vllm()
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
        return vllm.SamplingParams(**options)

    def generate(self, prompts: Sequence[str], params: LlmParams, phases: Any) -> BatchOutput:
        """One batch through vLLM; its phases stamped at vLLM's own instants, after it returned."""
        limit = self.input_limit(params)
        inputs = [{"prompt_token_ids": self.encode(p, limit)} for p in prompts]
        self.device.busy()
        called = time.monotonic()
        try:
            outputs = self.llm.generate(inputs, self._sampling(params), use_tqdm=False)
            self.device.sync()
        finally:
            self.device.idle()
        stats = [o.metrics for o in outputs]
        if any(s is None or not getattr(s, "first_token_ts", 0) for s in stats):
            raise GpuprofError("vLLM gave no request timings: it must run with disable_log_stats=False")
        queued = min(s.queued_ts for s in stats)
        scheduled = min(s.scheduled_ts for s in stats)
        first = max(s.first_token_ts for s in stats)
        last = max(s.last_token_ts for s in stats)

        def at(seconds: float) -> int:
            return int(seconds * 1e9)

        phases.begin("tokenize", t_ns=at(called))
        phases.end("tokenize", t_ns=at(max(called, queued)))
        phases.begin("prefill", t_ns=at(max(called, scheduled)))
        phases.end("prefill", t_ns=at(first))
        phases.begin("decode", t_ns=at(first))
        steps = max(int(s.num_generation_tokens) for s in stats) - 1
        phases.end("decode", t_ns=at(max(first, last)), steps=max(steps, 0))
        counts = [len(o.outputs[0].token_ids) for o in outputs]
        texts = [o.outputs[0].text for o in outputs]
        ids = [list(i["prompt_token_ids"]) for i in inputs]
        return BatchOutput(
            [len(i) for i in ids], ids, counts, list(texts), [None] * len(prompts), max(steps, 0)
        )


def load_vllm(ref: ModelRef, params: LlmParams, device: Device, workdir: Path) -> VllmModel:
    """Starts vLLM's engine on ``ref`` (an ``arch:`` model as a config with dummy weights)."""
    vllm = _vllm()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process: one clock
    started = time.monotonic()
    source, extra = ref.name, {}
    if ref.synthetic:
        from .archs import arch_config
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
        config = arch_config(
            ref.name, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        folder = workdir / f"vllm-{ref.name}"
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        source, extra = str(folder), {"load_format": "dummy"}
    kv: dict[str, Any] = {}
    if device.device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{params.kv_cache_gb or CPU_KV_CACHE_GB:g}")
    elif params.kv_cache_gb:
        kv["kv_cache_memory_bytes"] = int(params.kv_cache_gb * (1 << 30))
    llm = vllm.LLM(
        model=source,
        revision=ref.revision,
        dtype=params.dtype,
        seed=params.seed,
        max_model_len=params.max_input_tokens + params.max_new_tokens,
        max_num_seqs=max(params.batch_sizes),
        disable_log_stats=False,
        trust_remote_code=params.trust_remote_code,
        **extra,
        **kv,
    )
    info = {
        "model": ref.name,
        "model_source": ref.kind,
        "weights": "synthetic (random, made by vLLM)" if ref.synthetic else "pretrained",
        "dtype": params.dtype,
        "device": device.name,
        "load_s": round(time.monotonic() - started, 3),
        "engine": "vllm",
        "vllm_version": str(vllm.__version__),
        "memory_bandwidth_gbs": device.memory_bandwidth_gbs(),
    }
    return VllmModel(ref, llm, device, info, params)
