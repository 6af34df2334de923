"""The ``compiled`` engine: a static KV cache and a compiled decode step, graph-captured on a GPU.

Eager decoding (transformers' ``generate`` with its dynamic cache) launches every kernel of every layer
from Python, one token at a time: at batch 1 the GPU mostly waits for the CPU, and its energy per token
describes that wait. Here the KV cache is allocated once per batch size at its full length
(``max_len``), and one decode step (the forward of one token per sequence, the choice of the next token
and the end-of-sequence bookkeeping) is compiled with ``torch.compile``, in ``reduce-overhead`` mode on a
GPU so that a step is replayed as one CUDA graph. Shapes never change between steps, so nothing
recompiles while a window is measured: ``prepare`` compiles and captures each batch size before the
model's points, and its time is reported (``compile`` windows), not measured.

On a GPU the step is compiled without ``torch.compile``'s own graphs and captured by hand into one
``torch.cuda.CUDAGraph`` per batch size, whose inputs and outputs are fixed buffers: the step writes the
next token into its own input, advances the positions and appends the token to an output buffer, so a
decode step costs the host one ``replay()``. ``reduce-overhead`` mode would check its guards, its static
inputs' addresses and copy the outputs on every step, which on a slow host costs more than the step itself
on the GPU. Before it is used, a captured graph's tokens are checked against the uncaptured step's over
``CHECK_STEPS`` steps from the same prefill; where capture fails or they differ (a cache that keeps state
on the host, say), the engine falls back to ``reduce-overhead`` and its description says why.

At batch sizes up to ``AUTOTUNE_MAX_BATCH`` the step's matrix products are matrix-vector products, where
the library's default kernels leave memory bandwidth unused: there the step is also compiled with
``max-autotune-no-cudagraphs`` (Triton kernels tuned for each shape), both graphs are captured, checked and
timed over ``TIME_STEPS`` replays, and the faster one is kept; ``trials_text`` gives both times. Inside the
step, cuDNN's attention is allowed: the worker turns it off for eager decode, where it rebuilds a graph on
the CPU at every call, but in a captured graph that work is done once, at capture, and its decode kernel is
the fastest one for a single query over a masked static cache.

Prefill runs the model's own forward (eager, as in ``generate``): it is one large launch-bound-free pass.
The end of sequence is checked on the host every ``EOS_CHECK_STEPS`` steps only (one synchronisation),
so a batch whose sequences all ended may run up to that many steps of padding; they are counted in
``decode_steps``, as the GPU did them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams

from .engine import BatchOutput, LoadedModel, Phases, forward_accepts

__all__ = ["AUTOTUNE_MAX_BATCH", "AUTOTUNE_MODE", "CHECK_STEPS", "EOS_CHECK_STEPS", "CompiledDecoder"]


EOS_CHECK_STEPS = 16
CHECK_STEPS = 4  # steps of a captured graph checked against the uncaptured step
TIME_STEPS = 16  # replays that time a captured graph (their median), after a prefill
AUTOTUNE_MODE = "max-autotune-no-cudagraphs"
AUTOTUNE_MAX_BATCH = 4  # on the H100, llama-3.2-1b: 1.75 -> 1.50 ms a step at batch 1, 2.37 -> 2.61 at 8
RECOMPILE_LIMIT = 64  # one compilation per (batch size, mode): more than torch's default of 8
MODES = {"cuda": "reduce-overhead", "cpu": "default"}


def _static_cache(model: Any, max_len: int, batch: int, device: Any, dtype: Any) -> Any:
    """A transformers StaticCache of ``max_len`` positions: the keyword form of 4.56 and later (layers
    sized at their first update), else the older one that takes the batch, device and dtype.

    A sliding-window layer (Mistral's) keeps its length on the host, as an int that a step changes: a
    captured graph cannot advance it, and torch.compile specialises on it, so an uncaptured step would be
    compiled again at every step. Where the window holds the whole cache the layer never slides and
    computes what a plain static layer does, so it is made one; a cache longer than the window is refused.
    """
    from transformers import StaticCache

    try:
        cache = StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:
        return StaticCache(
            config=model.config, max_batch_size=batch, max_cache_len=max_len, device=device, dtype=dtype
        )
    layers = _layers(cache)
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        from transformers.cache_utils import StaticLayer

        for i, layer in enumerate(layers):
            if not getattr(layer, "is_sliding", False):
                continue
            window = int(getattr(layer, "max_cache_len", 0))
            if window < max_len:
                raise GpuprofError(
                    f"the compiled engine needs the KV cache ({max_len} positions: the longest prompt plus "
                    f"max_new_tokens, or context_tokens plus decode_tokens) within the model's sliding "
                    f"window ({window}); shorten them, or use engine: eager"
                )
            cache.layers[i] = StaticLayer(max_cache_len=max_len)
    return cache


class CompiledDecoder:
    """Generates with static KV caches (one per batch size) and a compiled decode step."""

    def __init__(self, lm: LoadedModel, params: LlmParams, max_len: int) -> None:
        self.lm, self.params, self.max_len = lm, params, max_len
        torch = lm.device.torch
        self.torch = torch
        self._capture = lm.device.device.type == "cuda"
        self.mode = "default" if self._capture else MODES.get(lm.device.device.type, "default")
        self._cache_kw = "cache" if forward_accepts(lm.model, "cache") else "past_key_values"
        self._caches: dict[int, Any] = {}
        self._graphs: dict[int, _Graph] = {}
        self._pool: Any = None
        self.graph_fallback: str | None = None  # why graphs are not captured by hand, where they are not
        self.dropped: list[int] = []  # batch sizes whose graph was dropped (their cache was reallocated)
        self.compile_s: dict[int, float] = {}
        self.trials: dict[int, dict[str, float | str]] = {}  # batch -> mode -> ms a step, or why not kept
        tokenizer = lm.tokenizer
        self._eos = tokenizer.eos_token_id
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos
        self._sample = params.sampling == "sample"
        # A worker that ran another model's compiled step drops it: its graphs, guards and captured memory
        # belong to that model (transformers 5.17 was seen to let them affect the next model's forward).
        torch._dynamo.reset()
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name, 8), RECOMPILE_LIMIT))
        self._keep = {"logits_to_keep": 1} if forward_accepts(lm.model, "logits_to_keep") else {}
        self._steps: dict[str, Any] = {}
        self._step = self._compiled(self.mode)

    @property
    def description(self) -> dict[str, Any]:
        """What a result says of the engine."""
        mode = self.mode
        if self._capture:
            graphs = "captured by hand, one CUDA graph per batch size"
            if self.dropped:
                sizes = ", ".join(map(str, sorted(set(self.dropped))))
                graphs += f" (dropped for batch {sizes}: its cache moved)"
            if self._graphs:
                by_mode: dict[str, list[int]] = {}
                for batch, graph in sorted(self._graphs.items()):
                    by_mode.setdefault(graph.mode, []).append(batch)
                mode = "; ".join(f"{m} (batch {', '.join(map(str, b))})" for m, b in by_mode.items())
        elif self.graph_fallback is not None:
            graphs = f"torch.compile's own (reduce-overhead): {self.graph_fallback}"
        else:
            graphs = "none (no GPU)"
        return {
            "engine": "compiled",
            "compile_mode": mode,
            "cuda_graphs": graphs,
            "kv_cache": f"static, {self.max_len} positions per sequence",
            "eos_check_steps": EOS_CHECK_STEPS,
        }

    def trials_text(self, batch: int) -> str | None:
        """The modes tried for ``batch``, each with its replay time or why it was ruled out; None where
        one mode only was tried."""
        tried = self.trials.get(batch)
        if not tried:
            return None
        return "; ".join(
            f"{mode} {value:.3f} ms a step" if isinstance(value, float) else f"{mode}: {value}"
            for mode, value in tried.items()
        )

    def _compiled(self, mode: str) -> Any:
        """The decode step compiled in ``mode`` (once per mode; each batch size compiles on first use)."""
        if mode not in self._steps:
            self._steps[mode] = self.torch.compile(self._decode_step, mode=mode, dynamic=False)
        return self._steps[mode]

    def _attention(self) -> Any:
        """Inside the step: every attention backend, cuDNN's included (see the module's docstring)."""
        attention = getattr(getattr(self.torch.nn, "attention", None), "sdpa_kernel", None)
        if attention is None or not self._capture:
            return contextlib.nullcontext()
        backends = self.torch.nn.attention.SDPBackend
        return attention(
            [backends.CUDNN_ATTENTION, backends.FLASH_ATTENTION, backends.EFFICIENT_ATTENTION, backends.MATH]
        )

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
        state = _Batch(first, positions[:, -1:] + 1, mask, finished, cache)
        graph = self._graphs.get(batch)
        if graph is not None and graph.addresses != _addresses(cache):
            # The cache was reallocated under the graph: its steps run uncaptured from now on (correct, and
            # slower), and the result says so. Capturing again here would run steps on this batch's cache.
            del self._graphs[batch]
            self.dropped.append(batch)
        elif graph is not None:
            graph.load(state)
        return state

    def decode(self, state: _Batch, steps: int, stop_at_eos: bool = True, run: Any = None) -> list[Any]:
        """Up to ``steps`` decode steps from ``state`` (advanced in place); with ``stop_at_eos`` stops once
        every sequence ended (checked every EOS_CHECK_STEPS). Returns the tokens, a [batch, 1] per step.
        ``run``: the compiled step to run uncaptured (the engine's own by default)."""
        if state.graph is not None:
            return self._replay(state, state.graph, steps, stop_at_eos)
        torch = self.torch
        run = run or self._step
        allow_after = torch.tensor(True, device=state.token.device)
        block = torch.tensor(False, device=state.token.device)
        tokens = []
        for step in range(steps):
            allow = allow_after if not stop_at_eos or step + 1 >= self.params.min_new_tokens else block
            if not stop_at_eos:
                state.finished = torch.zeros_like(state.finished)
            if self.mode == "reduce-overhead":  # a new step: the last replay's outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            with self._attention():
                token, finished = run(
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

    def _replay(self, state: _Batch, graph: _Graph, steps: int, stop_at_eos: bool) -> list[Any]:
        """``decode`` by replaying the batch size's graph: the tokens are views of its output buffer."""
        start = state.steps
        if start + steps > graph.out.shape[1]:
            raise GpuprofError(f"{start + steps} decode steps do not fit the static cache ({self.max_len})")
        done = 0
        for step in range(steps):
            graph.set_allow(not stop_at_eos or step + 1 >= self.params.min_new_tokens)
            if not stop_at_eos:
                graph.finished.zero_()
            graph.graph.replay()
            done = step + 1
            checked = stop_at_eos and self._eos is not None and done % EOS_CHECK_STEPS == 0
            if checked and bool(graph.finished.all()):
                break
        state.steps = start + done
        return [graph.out[:, i : i + 1] for i in range(start, start + done)]

    # --- capture ------------------------------------------------------------------------------------

    def _graph_step(self, graph: _Graph) -> None:
        """What a captured graph does: one step from its buffers, its token fed back and appended."""
        with self._attention():
            token, finished = self._compiled(graph.mode)(
                graph.token, graph.position, graph.mask, graph.finished, graph.allow, graph.cache
            )
        graph.token.copy_(token)
        graph.finished.copy_(finished)
        graph.out.index_copy_(1, graph.step, token)
        graph.step.add_(1)
        graph.position.add_(1)

    def _capture_graph(self, state: _Batch, mode: str) -> _Graph:
        """Compiles the step in ``mode`` for ``state``'s batch size, warms it up and captures it into a
        CUDA graph."""
        torch = self.torch
        graph = _Graph.buffers(state, self.max_len, mode)
        graph.load(state)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compiles and autotunes (synchronising), which capture forbids
            for _ in range(2):
                self._graph_step(graph)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph.graph, pool=self._pool):
            self._graph_step(graph)
        return graph

    def _check_graph(self, ids: Any, graph: _Graph) -> str | None:
        """Why the captured ``graph`` must not be used, or None: the cache must keep no state on the host
        that a step changes (a replay would not change it), and greedy tokens must match the step's own."""
        torch = self.torch
        state = self.prefill(ids, torch.ones_like(ids))  # not yet registered: the uncaptured step runs
        run = self._compiled(graph.mode)  # the captured step's own code: the same numbers, token for token
        before = _host_state(state.cache)
        reference = [self.decode(state, 1, stop_at_eos=False, run=run)[0]]
        after = _host_state(state.cache)
        if before != after:
            changed = sorted(k for k in after if before.get(k) != after[k])
            return f"the KV cache keeps state on the host that a step changes ({', '.join(changed[:3])})"
        reference += self.decode(state, CHECK_STEPS - 1, stop_at_eos=False, run=run)
        state = self.prefill(ids, torch.ones_like(ids))
        graph.load(state)
        replayed = self._replay(state, graph, CHECK_STEPS, stop_at_eos=False)
        if not self._sample and not torch.equal(torch.cat(reference, 1), torch.cat(replayed, 1)):
            return f"the captured step's tokens differ from the uncaptured step's over {CHECK_STEPS} steps"
        return None

    def _fall_back(self, reason: str) -> None:
        """From now on, torch.compile's reduce-overhead mode instead of graphs captured by hand."""
        torch = self.torch
        self.graph_fallback, self._capture, self.mode = reason, False, "reduce-overhead"
        self._graphs.clear()
        torch._dynamo.reset()
        self._steps.clear()
        self._step = self._compiled(self.mode)

    def prepare(self, batch: int, width: int = 8) -> float:
        """Compiles (and on a GPU captures) the decode step for ``batch`` sequences; returns its seconds,
        0 where that was done before."""
        if batch in self.compile_s:
            return 0.0
        torch = self.torch
        started = time.monotonic()
        ids = torch.full((batch, width), self._pad or 0, device=self.lm.device.device)
        with torch.inference_mode():
            self._cache(batch)  # a cache the engine cannot hold is refused here, before any compilation
            if self._capture:
                graph, why = self._choose_graph(batch, ids)
                if graph is not None:
                    self._graphs[batch] = graph
                else:
                    self._fall_back(why)
                    for done in list(self.compile_s):  # their graphs are gone: warm the new mode for them
                        self._warm(done, width)
            if not self._capture:
                self._warm(batch, width)
        self.lm.device.sync()
        self.compile_s[batch] = time.monotonic() - started
        return self.compile_s[batch]

    def _choose_graph(self, batch: int, ids: Any) -> tuple[_Graph | None, str]:
        """The batch size's graph: captured and checked in each candidate mode, the fastest kept (its
        trials recorded); else None and why the default mode's graph failed."""
        modes = ["default"] + ([AUTOTUNE_MODE] if batch <= AUTOTUNE_MAX_BATCH else [])
        kept: tuple[float, _Graph] | None = None
        why = ""
        tried: dict[str, float | str] = {}
        for mode in modes:
            try:
                graph = self._capture_graph(self.prefill(ids, self.torch.ones_like(ids)), mode)
                failed = self._check_graph(ids, graph)
                seconds = self._time_graph(ids, graph) if failed is None and len(modes) > 1 else 0.0
            except Exception as exc:  # any capture failure rules the mode out, and says why
                failed = f"capture failed: {type(exc).__name__}: {str(exc)[:200]}"
            if failed is not None:
                tried[mode] = failed
                why = why or failed
                continue
            tried[mode] = seconds * 1e3
            if kept is None or seconds < kept[0]:
                kept = (seconds, graph)
        if len(modes) > 1:
            self.trials[batch] = tried
        return (kept[1], "") if kept is not None else (None, why)

    def _time_graph(self, ids: Any, graph: _Graph) -> float:
        """Seconds a replay of ``graph`` takes (the median of TIME_STEPS, after a prefill)."""
        state = self.prefill(ids, self.torch.ones_like(ids))
        graph.load(state)
        steps = min(TIME_STEPS, graph.out.shape[1] - int(ids.shape[1]) - 1)
        times = []
        for _ in range(max(1, steps)):
            self.lm.device.sync()
            started = time.perf_counter()
            graph.graph.replay()
            self.lm.device.sync()
            times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    def _warm(self, batch: int, width: int) -> None:
        """Compiles the uncaptured step; reduce-overhead warms up on the first call, records on the
        second, replays from the third."""
        torch = self.torch
        ids = torch.full((batch, width), self._pad or 0, device=self.lm.device.device)
        self.decode(self.prefill(ids, torch.ones_like(ids)), 3, stop_at_eos=False)

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
    """A batch being decoded: its last tokens, next positions, mask, ended sequences and cache; with a
    captured graph, these are the graph's buffers, and ``steps`` the steps replayed since the prefill."""

    token: Any
    position: Any
    mask: Any
    finished: Any
    cache: Any
    graph: _Graph | None = None
    steps: int = 0


@dataclass
class _Graph:
    """One batch size's captured decode step and the fixed buffers it reads and writes."""

    token: Any
    position: Any
    mask: Any
    finished: Any
    allow: Any
    step: Any  # [1], the next column of ``out``
    out: Any  # [batch, max_len], the tokens of every step since the prefill
    cache: Any
    addresses: list[int]
    mode: str = "default"  # torch.compile's mode for the captured step
    graph: Any = None
    allowed: bool = True

    @classmethod
    def buffers(cls, state: _Batch, max_len: int, mode: str = "default") -> _Graph:
        torch_like = state.token
        return cls(
            token=state.token.clone(),
            position=state.position.clone(),
            mask=state.mask.clone(),
            finished=state.finished.clone(),
            allow=torch_like.new_ones((), dtype=state.finished.dtype),
            step=torch_like.new_zeros(1),
            out=torch_like.new_zeros(int(state.token.shape[0]), max_len),
            cache=state.cache,
            addresses=_addresses(state.cache),
            mode=mode,
        )

    def load(self, state: _Batch) -> None:
        """Copies a prefill's outputs into the buffers; ``state`` then reads and advances them."""
        self.token.copy_(state.token)
        self.position.copy_(state.position)
        self.mask.copy_(state.mask)
        self.finished.copy_(state.finished)
        self.step.zero_()
        state.token, state.position, state.mask, state.finished = (
            self.token, self.position, self.mask, self.finished
        )  # fmt: skip
        state.graph, state.steps = self, 0

    def set_allow(self, allowed: bool) -> None:
        """Whether the next steps may choose the end of sequence (written only when it changes)."""
        if allowed != self.allowed:
            self.allow.fill_(allowed)
            self.allowed = allowed


def _layers(cache: Any) -> list[Any]:
    return list(getattr(cache, "layers", None) or [])


def _addresses(cache: Any) -> list[int]:
    """The addresses of a static cache's tensors, which a captured graph reads and writes."""
    found = []
    for layer in _layers(cache):
        for name in ("keys", "values", "cumulative_length"):
            pointer = getattr(getattr(layer, name, None), "data_ptr", None)
            if pointer is not None:
                found.append(int(pointer()))
    return found


def _host_state(cache: Any) -> dict[str, Any]:
    """The numbers a cache keeps on the host (per layer), which a captured graph cannot advance."""
    state = {}
    for i, layer in enumerate(_layers(cache)):
        for name, value in vars(layer).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                state[f"layers[{i}].{name}"] = value
    for name, value in vars(cache).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            state[name] = value
    return state


def _generated(row: list[int], eos: int | None) -> int:
    """Tokens a request generated: up to and including its end of sequence, padding after it excluded."""
    return row.index(eos) + 1 if eos is not None and eos in row else len(row)
