"""Loading a model once and running its requests, with each phase's edges reported after synchronisation.

A ``Phases`` receives ``begin(name)`` and ``end(name, **attrs)`` for ``tokenize``, ``prefill`` and
``decode`` of every batch; each edge is stamped only once the device finished the work before it (CUDA
synchronised), so a phase's window covers its GPU work. On the simulated GPU the model runs on this CPU
and the simulated GPU's utilization follows the phases (100 % inside prefill and decode, 0 % outside).
"""

from __future__ import annotations

import importlib
import inspect
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams, ModelRef
from gpuprof.sampler.files import unusable_path

from ..workloads.target import GpuTarget
from .archs import arch_config
from .tokenizer import TOKENIZER_NAME, load_tokenizer

__all__ = ["BatchOutput", "Device", "LoadedModel", "Phases", "load_model"]


class Phases(Protocol):
    """Where a batch reports its phases (the workload turns them into markers)."""

    def begin(self, name: str, **attrs: Any) -> None: ...

    def end(self, name: str, **attrs: Any) -> None: ...


def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise GpuprofError(f"LLM jobs need torch ({exc}): pip install 'gpuprof[inference]'") from None


PACE_MARGIN = 2.0  # a simulated phase's paced time over the CPU's, on the slowest call that paced it
PACE_OUTLIER = 3.0  # a timed call slower than this times its phase's median does not pace the model
# The simulated GPU's phases are an H100 SXM's work: bf16 peak FLOP/s and HBM3 bytes/s (spec sheet).
H100_PEAK_FLOPS, H100_PEAK_BYTES_S = 989.4e12, 3.35e12
FORWARD_S = 1e-3  # a forward pass's fixed cost: an eager model's kernel launches, ~1 ms on an H100


class Device:
    """The torch device a job runs on, its synchronisation, and the simulated GPU's utilization if any."""

    def __init__(self, target: GpuTarget | None) -> None:
        """The job's GPU, or with no target this CPU alone (no GPU, real or simulated: for tests)."""
        self.torch = _torch()
        self.simulated = target is not None and target.simulated
        self._sim: Any = None
        self.work: tuple[float, float] | None = (
            None  # the model's parameters and weight bytes (simulated GPU)
        )
        self.scale: float | None = None  # simulated seconds per second of the H100's modelled time
        self._ratios: list[tuple[str, float]] = []  # (phase, the CPU's time over the modelled time), timed
        if target is None:
            self.device = self.torch.device("cpu")
            self.name = "CPU"
        elif target.simulated:
            from gpuprof.sampler.sim import SimulatedNvml

            self._sim, self._sim_index = SimulatedNvml(), target.sim_index
            gpus = self._sim.default_config().gpus
            top = gpus[min(target.sim_index, len(gpus) - 1)].max_graphics_clock_mhz if gpus else 1980
            self._top_mhz = int(top)
            self.device = self.torch.device("cpu")
            self.name = f"simulated GPU {target.sim_index} (model on the CPU)"
        else:
            if not self.torch.cuda.is_available():
                raise GpuprofError("no CUDA GPU is visible to the worker")
            self.device = self.torch.device("cuda:0")
            self.name = str(self.torch.cuda.get_device_name(0))
            # cuDNN's attention builds a new graph for every sequence length: ~3 ms of CPU per attention
            # call on our H100 (torch 2.11), which makes decode CPU-bound. Flash and memory-efficient
            # attention, what serving stacks use, have no such cost.
            if hasattr(self.torch.backends.cuda, "enable_cudnn_sdp"):
                self.torch.backends.cuda.enable_cudnn_sdp(False)

    def memory_bandwidth_gbs(self) -> float | None:
        """The GPU's peak memory bandwidth in GB/s from its bus width and memory clock (double data rate);
        None on the CPU and on the simulated GPU (its model runs on the CPU)."""
        if self.device.type != "cuda":
            return None
        props = self.torch.cuda.get_device_properties(0)
        width, khz = getattr(props, "memory_bus_width", 0), getattr(props, "memory_clock_rate", 0)
        return round(width / 8 * khz * 1e3 * 2 / 1e9, 1) if width and khz else None

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def stretch(self, phase: str, elapsed_s: float, units: int = 1, rows: int = 1) -> None:
        """On the simulated GPU, holds a phase busy for as long as the simulated GPU would take on it at its
        clock (docs/simulated-gpu.md): ``slowdown`` times its time at the top clock.

        That time is the model's work on an H100 (``work``: a forward pass's fixed cost, then a prefill's
        FLOPs at its peak; a decode step's weight reads at its bandwidth, and its FLOPs), times one ``scale``
        fixed for the model from
        the CPU's own times (``pace``), not the CPU's time of this call: the CPU's time varies from call to
        call by more than a clock step changes it, and its shares of prefill and decode are not a GPU's.
        Until a model is paced, the CPU's time. The slowdown at SM clock f against the top clock F: prefill
        is compute-bound, F / f; decode is mostly memory-bound, 0.3 F / f + 0.7.
        """
        if self._sim is None or elapsed_s <= 0:
            return
        from gpuprof.sampler.sim import COMPUTE_BOUND, MEMORY_BOUND, slowdown

        clock = self._sim.status()[self._sim_index].sm_clock_mhz
        factor = slowdown(COMPUTE_BOUND if phase == "prefill" else MEMORY_BOUND, self._top_mhz, clock)
        modelled = self._modelled_s(phase, max(units, 1), max(rows, 1))
        if modelled is not None and self.scale is None:
            self._ratios.append((phase, elapsed_s / modelled))
        target = self.scale * modelled * factor if modelled and self.scale else elapsed_s * factor
        if target > elapsed_s:
            time.sleep(target - elapsed_s)

    def _modelled_s(self, phase: str, units: int, rows: int) -> float | None:
        """The H100's time for a phase's work at its top clock (s), from the model's size; None without it."""
        if self.work is None:
            return None
        parameters, weights_bytes = self.work
        forwards = 1 if phase == "prefill" else units  # a prefill is one forward pass, a decode step one each
        flops = 2.0 * parameters * (units if phase == "prefill" else rows * units)
        reads = 0.0 if phase == "prefill" else weights_bytes * units  # each decode step reads the weights
        return forwards * FORWARD_S + flops / H100_PEAK_FLOPS + reads / H100_PEAK_BYTES_S

    def model_work(self, parameters: int, weights_bytes: int) -> None:
        """The model whose phases are modelled from now on (its pace forgotten)."""
        self.work = (
            (float(parameters), float(weights_bytes)) if parameters > 0 and weights_bytes > 0 else None
        )
        self.forget_timings()

    def pace(self) -> float | None:
        """Fixes the model's ``scale``: PACE_MARGIN x the most the CPU took over the modelled time on the
        calls timed so far, so that the CPU stays below the paced time on nearly every later call; returns
        it. A call that took over PACE_OUTLIER times its phase's median (the CPU taken away for a moment) is
        left out: it would slow every later phase of the job by as much."""
        if self.scale is None and self._ratios:
            kept = []
            for phase in {phase for phase, _ in self._ratios}:
                ratios = [ratio for each, ratio in self._ratios if each == phase]
                median = statistics.median(ratios)
                kept += [ratio for ratio in ratios if ratio <= PACE_OUTLIER * median]
            self.scale = PACE_MARGIN * max(kept)
        self._ratios.clear()
        return self.scale

    def forget_timings(self) -> None:
        """Drops the calls timed and the scale fixed: a model's first calls are slower than the rest (call it
        before anything is measured)."""
        self._ratios.clear()
        self.scale = None

    def busy(self) -> None:
        if self._sim is not None:
            self._sim.set_utilization(self._sim_index, 100)

    def idle(self) -> None:
        if self._sim is not None:
            self._sim.set_utilization(self._sim_index, 0)

    def release(self) -> None:
        """Leaves the GPU idle with its cached memory freed, and its pacing forgotten (between models)."""
        self.idle()
        self.work = None
        self.forget_timings()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


@dataclass
class BatchOutput:
    """What one batch gave back, per request: token counts, the answer's text, or the chosen ending."""

    input_tokens: list[int]
    input_ids: list[list[int]]
    output_tokens: list[int]
    outputs: list[str | None]
    choices: list[int | None]
    decode_steps: int
    # Per request, where an engine timed each one itself (vLLM): CLOCK_MONOTONIC ns of its ``scheduled``,
    # ``first_token`` and ``last_token`` instants; None where the batch's phases are its requests' phases.
    timings: list[dict[str, int]] | None = None


class _PhaseStreamer:
    """Stamps the end of prefill at the first generated token and counts the decode steps after it."""

    def __init__(self, device: Device, phases: Phases, prefill_tokens: int, rows: int) -> None:
        self.device, self.phases = device, phases
        self.prefill_tokens, self.rows = prefill_tokens, rows
        self.puts = 0
        self.started = self.decode_started = time.monotonic()

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:  # the first put is the prompt, the second the first new token
            self.device.sync()
            self.device.stretch("prefill", time.monotonic() - self.started, self.prefill_tokens, self.rows)
            self.phases.end("prefill")
            self.phases.begin("decode")
            self.decode_started = time.monotonic()

    def end(self) -> None:
        self.device.sync()
        if self.puts > 2:
            self.device.stretch("decode", time.monotonic() - self.decode_started, self.puts - 2, self.rows)


@dataclass
class LoadedModel:
    """A model and its tokenizer on the job's device, and what the result says about them."""

    ref: ModelRef
    model: Any
    tokenizer: Any
    device: Device
    info: dict[str, Any]
    max_positions: int | None
    decoder: Any = None  # the compiled engine's CompiledDecoder; None: eager generate

    def input_limit(self, params: LlmParams) -> int:
        """The most prompt tokens kept: max_input_tokens, less where the model's positions end sooner."""
        limit = params.max_input_tokens
        if self.max_positions:
            limit = min(limit, self.max_positions - params.max_new_tokens)
        if limit < 1:
            raise GpuprofError(
                f"{self.ref.label} has {self.max_positions} positions; max_new_tokens leaves none to a prompt"
            )
        return limit

    def encode(self, text: str, limit: int) -> list[int]:
        """The prompt's token ids, cut to its last ``limit`` tokens (the question is at the end)."""
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids[-limit:]

    def generate(self, prompts: Sequence[str], params: LlmParams, phases: Phases) -> BatchOutput:
        """Generates answers for one batch of prompts (with the compiled engine's decoder where set)."""
        if self.decoder is not None:
            return self.decoder.generate(prompts, params, phases)
        torch = self.device.torch
        limit = self.input_limit(params)
        phases.begin("tokenize")
        batch = self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=limit
        ).to(self.device.device)
        phases.end("tokenize")
        lengths = [int(n) for n in batch["attention_mask"].sum(dim=1).tolist()]
        streamer = _PhaseStreamer(self.device, phases, int(batch["input_ids"].numel()), len(prompts))
        sample = params.sampling == "sample"
        options: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "min_new_tokens": params.min_new_tokens or None,
            "do_sample": sample,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "streamer": streamer,
        }
        if sample:
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=None)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        self.device.busy()
        try:
            phases.begin("prefill")
            streamer.started = time.monotonic()
            with torch.inference_mode():
                sequences = self.model.generate(**batch, **options)
            self.device.sync()
        finally:
            self.device.idle()
        steps = max(0, streamer.puts - 2)
        if streamer.puts < 2:  # no token came: the prefill ends here, with an empty decode
            phases.end("prefill")
            phases.begin("decode")
        phases.end("decode", steps=steps)
        new = sequences[:, batch["input_ids"].shape[1] :].tolist()
        counts = [self._generated(row) for row in new]
        outputs = [
            self.tokenizer.decode(row[:n], skip_special_tokens=True)
            for row, n in zip(new, counts, strict=True)
        ]
        ids = [row[-n:] if n else [] for row, n in zip(batch["input_ids"].tolist(), lengths, strict=True)]
        return BatchOutput(lengths, ids, counts, list(outputs), [None] * len(prompts), steps)

    def _generated(self, row: list[int]) -> int:
        """Tokens a request generated: up to and including its end of sequence, padding after it excluded."""
        eos = self.tokenizer.eos_token_id
        return row.index(eos) + 1 if eos in row else len(row)

    def choose(self, context: str, endings: Sequence[str], limit: int) -> tuple[list[int], list[list[int]]]:
        """Token ids of the context and of each ending (with its leading space), context cut to fit."""
        ctx = self.encode(context, limit)
        outs = [self.tokenizer(" " + e.strip(), add_special_tokens=False)["input_ids"] for e in endings]
        return ctx, outs

    def score_choices(
        self, items: Sequence[tuple[str, Sequence[str]]], params: LlmParams, phases: Phases
    ) -> BatchOutput:
        """Picks each item's ending with the highest mean log-likelihood per token: one prefill, no decode."""
        torch = self.device.torch
        limit = self.input_limit(params)
        phases.begin("tokenize")
        encoded = [self.choose(context, endings, limit) for context, endings in items]
        rows = [ctx + ending for ctx, endings in encoded for ending in endings]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device.device)
        phases.end("tokenize")  # right padding: a causal model's scores of real tokens ignore what follows
        self.device.busy()
        try:
            phases.begin("prefill")
            started = time.monotonic()
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
            self.device.sync()
            self.device.stretch("prefill", time.monotonic() - started, int(ids.numel()), int(ids.shape[0]))
            phases.end("prefill")
        finally:
            self.device.idle()
        phases.begin("decode")
        phases.end("decode", steps=0)
        choices: list[int | None] = []
        row = 0
        for ctx, endings in encoded:
            means = []
            for ending in endings:
                start = len(ctx) - 1  # the logit at position i predicts token i + 1
                means.append(
                    float(picked[row, start : start + len(ending)].mean()) if ending else float("-inf")
                )
                row += 1
            choices.append(max(range(len(means)), key=means.__getitem__))
        lengths = [len(ctx) + sum(len(e) for e in endings) for ctx, endings in encoded]
        contexts = [ctx for ctx, _ in encoded]
        return BatchOutput(lengths, contexts, [0] * len(items), [None] * len(items), choices, 0)


def _param_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _weights_kwargs(dtype: Any) -> dict[str, Any]:
    """The dtype keyword of from_pretrained/from_config: ``dtype`` since transformers 4.56, before that
    ``torch_dtype``."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_model(
    ref: ModelRef, params: LlmParams, device: Device, clock: Callable[[], float] = time.monotonic
) -> LoadedModel:
    """Loads ``ref``: synthetic weights made on the device, or pretrained ones (from the hub or a path)."""
    torch = device.torch
    try:
        import transformers
    except ImportError as exc:
        raise GpuprofError(f"LLM jobs need transformers ({exc}): pip install 'gpuprof[inference]'") from None
    dtype = getattr(torch, params.dtype)
    started = clock()
    if ref.synthetic:
        if device.simulated and not ref.name.endswith("-tiny"):
            raise GpuprofError(
                f"{ref.name} would run on this CPU (the GPU is simulated): use {ref.name}-tiny, or a real GPU"
            )
        tokenizer = load_tokenizer()
        config = arch_config(
            ref.name, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        torch.manual_seed(params.seed)
        with torch.device(device.device):  # weights are made where they run, in their dtype: no copy
            model = transformers.AutoModelForCausalLM.from_config(config, **_weights_kwargs(dtype))
        tokenizer_name = TOKENIZER_NAME
        weights = "synthetic (random, made on the device)"
    else:
        source = {"local_files_only": True} if ref.kind == "path" else {"revision": ref.revision}
        if ref.kind == "path":  # else transformers takes a missing directory for a malformed hub id
            problem = unusable_path(ref.name, directory=True)
            if problem is None and not os.access(Path(ref.name) / "config.json", os.R_OK):
                problem = f"{ref.name}: no readable config.json (not a saved transformers model)"
            if problem is not None:
                raise GpuprofError(f"model directory {problem}")
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                ref.name, trust_remote_code=params.trust_remote_code, padding_side="left", **source
            )
            model = transformers.AutoModelForCausalLM.from_pretrained(
                ref.name, trust_remote_code=params.trust_remote_code, **_weights_kwargs(dtype), **source
            ).to(device.device)
        except PermissionError as exc:
            raise GpuprofError(f"model {ref.name}: permission denied to the job's user ({exc})") from None
        except (OSError, ValueError) as exc:  # ValueError: a malformed hub id, a config transformers refuses
            raise GpuprofError(f"cannot load model {ref.name}: {exc}") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer_name = str(tokenizer.name_or_path)
        weights = "pretrained"
    tokenizer.truncation_side = "left"  # a prompt too long loses its start: the question is at its end
    model.eval()
    device.sync()
    config = model.config
    positions = getattr(config, "max_position_embeddings", None)
    info = {
        "model": ref.name,
        "model_source": ref.kind,
        "weights": weights,
        "architecture": type(model).__name__,
        "parameters": _param_count(model),
        "dtype": params.dtype,
        "tokenizer": tokenizer_name,
        "attention": str(getattr(config, "_attn_implementation", None) or "default"),
        "device": device.name,
        "load_s": round(clock() - started, 3),
        "engine": params.engine,
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
        "weights_bytes": int(sum(p.numel() * p.element_size() for p in model.parameters())),
        "memory_bandwidth_gbs": device.memory_bandwidth_gbs(),
    }
    return LoadedModel(ref, model, tokenizer, device, info, positions if isinstance(positions, int) else None)


def forward_accepts(model: Any, name: str) -> bool:
    """Whether the model's forward takes keyword ``name`` (``logits_to_keep`` is not in every model)."""
    return name in inspect.signature(model.forward).parameters
