"""The ``compiled`` engine: a static KV cache and a compiled decode step, graph-captured on a GPU.

Eager decoding (transformers' ``generate`` with its dynamic cache) launches every kernel of every layer
from Python, one token at a time: at batch 1 the GPU mostly waits for the CPU, and its energy per token
describes that wait. Here the KV cache is allocated once per batch size at its full length
(``max_len``), and one decode step (the forward of one token per sequence, the choice of the next token
and the end-of-sequence bookkeeping) is compiled with ``torch.compile``, in ``reduce-overhead`` mode on a
GPU so that a step is replayed as one CUDA graph. Shapes never change between steps, so nothing
recompiles while a window is measured: ``prepare`` compiles and captures each batch size before the
model's points, and its time is reported (``compile`` windows), not measured.

Prefill runs the model's own forward (eager, as in ``generate``): it is one large launch-bound-free pass.
The end of sequence is checked on the host every ``EOS_CHECK_STEPS`` steps only (one synchronisation),
so a batch whose sequences all ended may run up to that many steps of padding; they are counted in
``decode_steps``, as the GPU did them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams

from .engine import BatchOutput, LoadedModel, Phases, forward_accepts

__all__ = ["EOS_CHECK_STEPS", "CompiledDecoder"]


EOS_CHECK_STEPS = 16
MODES = {"cuda": "reduce-overhead", "cpu": "default"}


def _static_cache(model: Any, max_len: int, batch: int, device: Any, dtype: Any) -> Any:
    """A transformers StaticCache of ``max_len`` positions: the keyword form of 4.56 and later (layers
    sized at their first update), else the older one that takes the batch, device and dtype."""
    from transformers import StaticCache

    try:
        return StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:
        return StaticCache(
            config=model.config, max_batch_size=batch, max_cache_len=max_len, device=device, dtype=dtype
        )


class CompiledDecoder:
    """Generates with static KV caches (one per batch size) and a compiled decode step."""

    def __init__(self, lm: LoadedModel, params: LlmParams, max_len: int) -> None:
        self.lm, self.params, self.max_len = lm, params, max_len
        torch = lm.device.torch
        self.torch = torch
        self.mode = MODES.get(lm.device.device.type, "default")
        self._cache_kw = "cache" if forward_accepts(lm.model, "cache") else "past_key_values"
        self._caches: dict[int, Any] = {}
        self.compile_s: dict[int, float] = {}
        tokenizer = lm.tokenizer
        self._eos = tokenizer.eos_token_id
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos
        self._sample = params.sampling == "sample"
        # A worker that ran another model's compiled step drops it: its graphs, guards and captured memory
        # belong to that model (transformers 5.17 was seen to let them affect the next model's forward).
        torch._dynamo.reset()
        self._keep = {"logits_to_keep": 1} if forward_accepts(lm.model, "logits_to_keep") else {}
        self._step = torch.compile(self._decode_step, mode=self.mode, dynamic=False)

    @property
    def description(self) -> dict[str, Any]:
        """What a result says of the engine."""
        return {
            "engine": "compiled",
            "compile_mode": self.mode,
            "kv_cache": f"static, {self.max_len} positions per sequence",
            "eos_check_steps": EOS_CHECK_STEPS,
        }

    # --- the compiled part -------------------------------------------------------------------------

    def _choose(self, logits: Any, allow_eos: Any) -> Any:
        """The next token of each sequence (the end of sequence only where ``allow_eos``)."""
        torch = self.torch
        logits = logits.float().clone()
        if self._eos is not None:
            logits[:, self._eos] = torch.where(allow_eos, logits[:, self._eos], torch.finfo(logits.dtype).min)
        if not self._sample:
            return logits.argmax(-1, keepdim=True)
        probs = torch.softmax(logits / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            outside = ordered.cumsum(-1) - ordered > self.params.top_p  # keeps the token that crosses top_p
            probs = torch.zeros_like(probs).scatter(-1, order, ordered.masked_fill(outside, 0.0))
        # The exponential race: argmax(p / E) with E ~ Exp(1) draws from p, without a host synchronisation.
        return (probs / torch.empty_like(probs).exponential_(1.0)).argmax(-1, keepdim=True)

    def _decode_step(
        self, token: Any, position: Any, mask: Any, finished: Any, allow_eos: Any, cache: Any
    ) -> tuple[Any, Any]:
        """One token per sequence: (the next tokens, which sequences have ended)."""
        out = self.lm.model(
            input_ids=token,
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        chosen = self._choose(out.logits[:, -1], allow_eos)
        chosen = self.torch.where(finished, self.torch.full_like(chosen, self._pad), chosen)
        if self._eos is not None:
            finished = finished | (chosen == self._eos)
        return chosen, finished

    # --- a batch -------------------------------------------------------------------------------------

    def _cache(self, batch: int) -> Any:
        cache = self._caches.get(batch)
        if cache is None:
            device = self.lm.device.device
            cache = _static_cache(self.lm.model, self.max_len, batch, device, self.lm.model.dtype)
            self._caches[batch] = cache
        else:
            cache.reset()
        return cache

    def prefill(self, ids: Any, attention: Any) -> _Batch:
        """Fills the batch size's cache, reset, with the prompts (left-padded); chooses the first tokens."""
        torch = self.torch
        batch, width = (int(n) for n in ids.shape)
        if width + 1 > self.max_len:
            raise GpuprofError(f"a prompt of {width} tokens does not fit the static cache ({self.max_len})")
        cache = self._cache(batch)
        # The mask spans the whole cache: 0 on padding, 1 on every position a token is or will be written
        # (the cache's own offset keeps the attention causal); positions count real tokens only.
        mask = torch.ones(batch, self.max_len, dtype=attention.dtype, device=ids.device)
        mask[:, :width] = attention
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        out = self.lm.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
            **{self._cache_kw: cache}, **self._keep,
        )  # fmt: skip
        allow = torch.tensor(self.params.min_new_tokens <= 0, device=ids.device)
        first = self._choose(out.logits[:, -1], allow)
        finished = first == self._eos if self._eos is not None else torch.zeros_like(first, dtype=torch.bool)
        return _Batch(first, positions[:, -1:] + 1, mask, finished, cache)

    def decode(self, state: _Batch, steps: int, stop_at_eos: bool = True) -> list[Any]:
        """Up to ``steps`` decode steps from ``state`` (advanced in place); with ``stop_at_eos`` stops once
        every sequence ended (checked every EOS_CHECK_STEPS). Returns the tokens, a [batch, 1] per step."""
        torch = self.torch
        allow_after = torch.tensor(True, device=state.token.device)
        block = torch.tensor(False, device=state.token.device)
        tokens = []
        for step in range(steps):
            allow = allow_after if not stop_at_eos or step + 1 >= self.params.min_new_tokens else block
            if not stop_at_eos:
                state.finished = torch.zeros_like(state.finished)
            if self.mode == "reduce-overhead":  # a new step: the last replay's outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            token, finished = self._step(
                state.token, state.position, state.mask, state.finished, allow, state.cache
            )
            # A captured graph's outputs live in its memory pool, overwritten by its next replay: what is
            # kept, or fed to the next step, is copied out.
            state.token, state.finished = token.clone(), finished.clone()
            tokens.append(state.token)
            state.position = state.position + 1
            checked = stop_at_eos and self._eos is not None and (step + 1) % EOS_CHECK_STEPS == 0
            if checked and bool(state.finished.all()):
                break
        return tokens

    def prepare(self, batch: int, width: int = 8) -> float:
        """Compiles (and on a GPU captures) the decode step for ``batch`` sequences; returns its seconds,
        0 where that was done before."""
        if batch in self.compile_s:
            return 0.0
        torch = self.torch
        started = time.monotonic()
        ids = torch.full((batch, width), self._pad or 0, device=self.lm.device.device)
        with torch.inference_mode():
            state = self.prefill(ids, torch.ones_like(ids))
            # reduce-overhead warms up on the first call, records on the second, replays from the third
            self.decode(state, 3, stop_at_eos=False)
        self.lm.device.sync()
        self.compile_s[batch] = time.monotonic() - started
        return self.compile_s[batch]

    def generate(self, prompts: Sequence[str], params: LlmParams, phases: Phases) -> BatchOutput:
        """One batch, its phases stamped as the eager engine stamps them (after synchronisation)."""
        lm, torch, device = self.lm, self.torch, self.lm.device
        limit = lm.input_limit(params)
        phases.begin("tokenize")
        batch = lm.tokenizer(
            list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=limit
        ).to(device.device)
        phases.end("tokenize")
        ids, attention = batch["input_ids"], batch["attention_mask"]
        lengths = [int(n) for n in attention.sum(dim=1).tolist()]
        device.busy()
        try:
            phases.begin("prefill")
            started = time.monotonic()
            with torch.inference_mode():
                state = self.prefill(ids, attention)
                first = state.token.clone()
                device.sync()
                device.stretch("prefill", time.monotonic() - started, int(ids.numel()), int(ids.shape[0]))
                phases.end("prefill")
                phases.begin("decode")
                started = time.monotonic()
                tokens = self.decode(state, params.max_new_tokens - 1)
                device.sync()
                device.stretch("decode", time.monotonic() - started, len(tokens), int(ids.shape[0]))
        finally:
            device.idle()
        phases.end("decode", steps=len(tokens))
        new = torch.cat([first, *tokens], dim=1).tolist()
        counts = [_generated(row, self._eos) for row in new]
        outputs = [
            lm.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new, counts, strict=True)
        ]
        kept = [row[-n:] if n else [] for row, n in zip(ids.tolist(), lengths, strict=True)]
        return BatchOutput(lengths, kept, counts, list(outputs), [None] * len(prompts), len(tokens))


@dataclass
class _Batch:
    """A batch being decoded: its last tokens, next positions, mask, ended sequences and cache."""

    token: Any
    position: Any
    mask: Any
    finished: Any
    cache: Any


def _generated(row: list[int], eos: int | None) -> int:
    """Tokens a request generated: up to and including its end of sequence, padding after it excluded."""
    return row.index(eos) + 1 if eos is not None and eos in row else len(row)
