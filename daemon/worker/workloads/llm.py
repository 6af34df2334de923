"""The llm workload: every model x task x batch size of the spec, measured request by request.

Markers (all with an ``id``): ``load`` per model; per point (model, task, batch size) a ``point`` window
holding ``warmup`` and, per batch, ``batch`` with ``tokenize``, ``prefill`` and ``decode`` inside, then
one ``request`` event per request carrying its tokens, input features, output and quality; per model and
batch size the ``steady_prefill`` and ``steady_decode`` windows when steady_state is asked for. The daemon
turns them into the requests table (docs/llm.md). A model is loaded once, whatever the number of points.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gpuprof.client.wire.dvfs_spec import DvfsParams
from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import LlmParams, ModelRef

from ..llm import tasks
from ..llm.compiled import CompiledDecoder
from ..llm.engine import BatchOutput, Device, LoadedModel, load_model
from ..llm.features import FeatureExtractor
from ..llm.vllm_engine import VllmModel
from ..markers import MarkerWriter
from .clock_search import search_clock
from .phase_clocks import PhaseClocks
from .target import GpuTarget, sigterm_deferred

MAX_OUTPUT_CHARS = 2000  # of each answer, kept with its request
PACE_ROUNDS = 4  # unmeasured batches of each task and batch size: one warms, three pace the simulated GPU
SETTLE_S = 0.1  # idle after a sweep point's clock is locked, before the point: the lock takes effect
Model = LoadedModel | VllmModel  # a model under any engine (docs/llm.md, "Engines")
Clocks = int | tuple[int, int] | None  # a point's SM clock, its (prefill, decode) clocks, or none locked


class _BatchPhases:
    """Phases of one batch, sent as markers with the batch's id."""

    def __init__(self, markers: MarkerWriter, batch_id: str) -> None:
        self.markers, self.batch_id = markers, batch_id

    def begin(self, name: str, t_ns: int | None = None, **attrs: Any) -> None:
        self.markers.begin(name, t_ns=t_ns, id=self.batch_id, **attrs)

    def end(self, name: str, t_ns: int | None = None, **attrs: Any) -> None:
        self.markers.end(name, t_ns=t_ns, id=self.batch_id, **attrs)


def _batches(items: Sequence[tasks.TaskItem], size: int) -> list[list[tasks.TaskItem]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _run_batch(lm: Model, batch: list[tasks.TaskItem], params: LlmParams, phases: Any) -> BatchOutput:
    if batch[0].kind == "choice":
        return lm.score_choices([(item.prompt, item.endings) for item in batch], params, phases)
    return lm.generate([item.prompt for item in batch], params, phases)


class _Progress:
    """How far a job's points are, for the user's progress line: points done, and the share done of the one
    running, of ``total`` points (None where a search decides how many)."""

    def __init__(self, total: int | None) -> None:
        self.total, self.done = total, 0

    def status(self, markers: MarkerWriter, text: str, share: float) -> None:
        done = min(self.done + share, self.total) if self.total else None
        markers.status(text, done=done, total=self.total)


class _Point:
    """One model x task x batch size (x SM clock, or prefill and decode clocks, in a sweep): warmup, then
    each repetition's batches."""

    def __init__(
        self,
        point_id: str,
        lm: Model,
        task: str,
        batch_size: int,
        params: LlmParams,
        mhz: int | None,
        progress: _Progress | None = None,
        phase_clocks: PhaseClocks | None = None,
    ) -> None:
        self.id, self.lm, self.task, self.batch_size, self.params = point_id, lm, task, batch_size, params
        self.sm_clock_mhz = mhz
        self.progress = progress or _Progress(None)
        self.phase_clocks = phase_clocks

    def run(self, items: list[tasks.TaskItem], extractor: _Features, markers: MarkerWriter) -> None:
        lm, params = self.lm, self.params
        batches = _batches(items, self.batch_size)
        pair = self.phase_clocks
        clocks = (
            {}
            if pair is None
            else {"prefill_clock_mhz": pair.prefill_mhz, "decode_clock_mhz": pair.decode_mhz}
        )
        markers.begin(
            "point", id=self.id, model=lm.ref.name, task=self.task, batch_size=self.batch_size,
            requests=len(items) * params.repetitions, sm_clock_mhz=self.sm_clock_mhz, **clocks,
        )  # fmt: skip
        lm.device.torch.manual_seed(params.seed)  # each point samples the same way, whatever ran before
        markers.begin("warmup", id=self.id, requests=params.warmup_requests)
        for index in range(-(-params.warmup_requests // self.batch_size)):
            _run_batch(lm, batches[index % len(batches)], params, _Silent())
        markers.end("warmup", id=self.id)
        limit = lm.input_limit(params)
        done, total = 0, len(batches) * params.repetitions
        last_status = time.monotonic()
        reached: bool | None = None  # None: no ci95_target
        repetitions = 0
        for rep in range(params.repetitions):
            for number, batch in enumerate(batches):
                batch_id = f"{self.id}.r{rep}.b{number}"
                markers.begin("batch", id=batch_id, size=len(batch))
                phases: Any = _BatchPhases(markers, batch_id)
                if pair is not None:  # the lock switched at each phase edge
                    phases = pair.phases(phases, batch_id, decodes=batch[0].kind != "choice")
                out = _run_batch(lm, batch, params, phases)
                markers.end("batch", id=batch_id)
                self._report(batch, out, batch_id, rep, extractor, markers, limit)
                done += 1
                if time.monotonic() - last_status > 2 or done == total:
                    last_status = time.monotonic()
                    self.progress.status(
                        markers, f"{lm.ref.name} {self.task} batch {self.batch_size}: {done}/{total} batches",
                        done / total,
                    )  # fmt: skip
            repetitions = rep + 1
            if params.ci95_target is not None:
                reached = self._precise_enough(markers, params.ci95_target)
                if reached:
                    break
        markers.end("point", id=self.id, repetitions=repetitions, ci95_target_reached=reached)

    def _precise_enough(self, markers: MarkerWriter, target: float) -> bool:
        """Whether the point's energy per request is known to ``target`` (CI half width / mean)."""
        energy = markers.energy_so_far(self.id)
        mean, half = energy.get("mean_j"), energy.get("ci95_j")
        return bool(mean and half is not None and half / mean <= target)

    def _report(
        self,
        batch: list[tasks.TaskItem],
        out: BatchOutput,
        batch_id: str,
        rep: int,
        extractor: _Features,
        markers: MarkerWriter,
        limit: int,
    ) -> None:
        """One ``request`` event per request of a finished batch (outside the measured phases)."""
        for index, item in enumerate(batch):
            features = extractor.of(item, self.lm, limit)
            output = out.outputs[index]
            quality = tasks.score(item, output, out.choices[index])
            markers.event(
                "request",
                id=batch_id,
                point=self.id,
                rep=rep,
                index=index,
                prompt_id=item.id,
                kind=item.kind,
                input_tokens=out.input_tokens[index],
                output_tokens=out.output_tokens[index],
                output=None if output is None else output[:MAX_OUTPUT_CHARS],
                **(out.timings[index] if out.timings else {}),
                choice=out.choices[index],
                quality=quality.value,
                quality_metric=quality.metric,
                exact_match=quality.exact_match,
                **{k: v for k, v in features.items() if k not in ("input_tokens",)},
            )


class _Features:
    """Each prompt's input features, computed once per model (they depend on its tokenizer)."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self.method = extractor.method
        self._cache: dict[tuple[int, str, str], dict[str, Any]] = {}

    def of(self, item: tasks.TaskItem, lm: Model, limit: int) -> dict[str, Any]:
        key = (id(lm), item.task, item.id)
        if key not in self._cache:
            ids = lm.encode(item.prompt, limit)
            self._cache[key] = self.extractor.features(item.prompt, ids).to_dict()
        return self._cache[key]


class _Silent:
    """Phases nobody hears: warmup batches."""

    def begin(self, name: str, **attrs: Any) -> None:
        pass

    def end(self, name: str, **attrs: Any) -> None:
        pass


def _steady(lm: Model, params: LlmParams, model_index: int, corpus: list[str], markers: MarkerWriter) -> None:
    """Steady-state prefill and decode at each batch size, on contexts cut from the job's prompts."""
    for batch_size in params.batch_sizes:
        markers.status(f"{lm.ref.name}: steady-state prefill and decode at batch {batch_size}")
        _steady_windows(lm, params, corpus, markers, batch_size, f"m{model_index}.bs{batch_size}")


def _steady_windows(
    lm: Model, params: LlmParams, corpus: list[str], markers: MarkerWriter, batch_size: int, base: str,
    phase_clocks: PhaseClocks | None = None,
) -> None:  # fmt: skip
    """One batch size's steady-state prefill and decode windows, ids ``base.s<n>``; with ``phase_clocks``,
    each phase at its own clock."""
    from ..llm import steady

    assert params.steady_state is not None
    width = min(params.steady_state.context_tokens, lm.input_limit(params))
    ids = steady.context_ids(lm, batch_size, width, corpus)
    if isinstance(lm, VllmModel):
        rows = ids.tolist()
        lm.steady_prefill(rows, params.steady_state, markers, base)
        lm.steady_decode(rows, params.steady_state, markers, base)
        return
    for phase, run in (("steady_prefill", steady.run_prefill), ("steady_decode", steady.run_decode)):
        if phase_clocks is not None:
            phase_clocks.before_steady(phase)
        # With ci95_target, another round of windows until their energy per token is that precise (at
        # most `repetitions` rounds): gpuprofd answers from its trace between rounds.
        start = 0
        for round_ in range(params.repetitions if params.ci95_target is not None else 1):
            start = run(lm, ids, params.steady_state, markers, base, start=start)
            if params.ci95_target is None or round_ + 1 == params.repetitions:
                break
            figures = markers.steady_so_far(base, phase)
            mean, spread = figures.get("mean_j_per_token"), figures.get("ci95_j_per_token")
            if mean and spread is not None and spread / mean <= params.ci95_target:
                break


def _vllm_limits(params: LlmParams, items: dict[str, list[tasks.TaskItem]]) -> tuple[int, int]:
    """(positions, sequences) vLLM's engine must hold at once: a prompt and its answer, or a steady-state
    context and its decode steps; a batch of requests, or of a commonsense batch's context + ending rows."""
    positions = params.max_input_tokens + params.max_new_tokens
    if params.steady_state is not None:
        steady = params.steady_state
        context = min(steady.context_tokens, params.max_input_tokens)
        positions = max(positions, context + steady.decode_tokens + 2)
    endings = max((len(item.endings) for task_items in items.values() for item in task_items), default=1)
    return positions, max(params.batch_sizes) * max(endings, 1)


def _load(
    ref: ModelRef, params: LlmParams, device: Device, items: dict[str, list[tasks.TaskItem]],
    clock: Callable[[], float],
) -> Model:  # fmt: skip
    """The model under the spec's engine: transformers' (eager, or with the compiled decoder) or vLLM's."""
    if params.engine == "vllm":
        from ..llm.vllm_engine import load_vllm

        return load_vllm(ref, params, device, *_vllm_limits(params, items))
    lm = load_model(ref, params, device, clock)
    if params.engine == "compiled":
        lm.decoder = CompiledDecoder(lm, params, _cache_positions(lm, params, items))
        lm.info.update(lm.decoder.description)
    return lm


def _pace(
    lm: Model, params: LlmParams, items: dict[str, list[tasks.TaskItem]], device: Device
) -> dict[str, Any] | None:
    """On the simulated GPU, runs a few unmeasured batches of every task and batch size, the first round
    to warm the model and the next timed on the CPU, and fixes the model's pace (``Device.pace``), so that a
    point's energy and latency follow its clock and the model's work, not the CPU's jitter
    (docs/simulated-gpu.md). Returns it, for the model's ``measure`` marker and so the result; None on a
    real GPU."""
    if not device.simulated or isinstance(lm, VllmModel):
        return None
    device.model_work(int(lm.info.get("parameters") or 0), int(lm.info.get("weights_bytes") or 0))
    if device.work is None:
        return None
    for round_ in range(PACE_ROUNDS):
        for task in params.tasks:
            for size in params.batch_sizes:
                _run_batch(lm, _batches(items[task], size)[0], params, _Silent())
        if round_ == 0:
            device.forget_timings()
    scale = device.pace()
    return {
        "scale": round(scale, 3) if scale else None,
        "model": "an H100 SXM's time for the work (989.4 TFLOP/s bf16, 3.35 TB/s), times scale",
    }


def _cache_positions(lm: Model, params: LlmParams, items: dict[str, list[tasks.TaskItem]]) -> int:
    """The static KV cache's length: the job's longest prompt (as kept) and its answer, or a steady-state
    context and its decode steps. Every decode step attends over it (masked), so no longer than needed."""
    limit = lm.input_limit(params)
    prompts = [item.prompt for task_items in items.values() for item in task_items if item.kind != "choice"]
    longest = max((len(lm.encode(prompt, limit)) for prompt in prompts), default=1) + params.max_new_tokens
    if params.steady_state is not None:
        steady = params.steady_state
        longest = max(longest, min(steady.context_tokens, limit) + steady.decode_tokens + 1)
    return longest


def decode_batch_sizes(params: LlmParams, items: dict[str, list[tasks.TaskItem]]) -> list[int]:
    """Every batch size the model decodes at: its points' full and last batches (of generating tasks) and
    its steady-state batches."""
    sizes: set[int] = set()
    for task_items in items.values():
        if not task_items or task_items[0].kind == "choice":  # scored by one prefill, never decoded
            continue
        for size in params.batch_sizes:
            sizes.update(len(batch) for batch in _batches(task_items, size))
    if params.steady_state is not None:
        sizes.update(params.batch_sizes)
    return sorted(sizes)


def _compile(
    lm: LoadedModel, params: LlmParams, items: dict[str, list[tasks.TaskItem]], model_index: int,
    markers: MarkerWriter,
) -> None:  # fmt: skip
    """Compiles (and captures) the decode step at every batch size before any measured window, each in a
    ``compile`` window: its time is reported, never measured as inference."""
    sizes = decode_batch_sizes(params, items)
    for size in sizes:
        window = f"m{model_index}.bs{size}"
        markers.status(f"{lm.ref.name}: compiling the decode step for batch {size}")
        markers.begin("compile", id=window, batch_size=size)
        seconds = lm.decoder.prepare(size)
        described = lm.decoder.description
        tried = lm.decoder.trials_text(size)
        trials = {"trials": tried} if tried else {}
        markers.end(
            "compile", id=window, seconds=round(seconds, 3),
            compile_mode=described["compile_mode"], cuda_graphs=described["cuda_graphs"], **trials,
        )  # fmt: skip


def plan(params: LlmParams, dvfs: DvfsParams | None) -> list[tuple[str, int, Clocks]]:
    """A model's points as (task, batch size, SM clock, (prefill, decode) clocks or None), in the order
    they run.

    Without a sweep: tasks, then batch sizes. A sweep adds its clocks, then its phase clock pairs:
    ``sequential`` runs every point at one clock (or pair) before the next; ``interleaved`` shuffles all
    points with the job's seed.
    """
    swept = dvfs is not None and (bool(dvfs.sweep) or bool(dvfs.phase_pairs))
    clocks: list[Clocks] = [*dvfs.sweep, *dvfs.phase_pairs] if dvfs is not None and swept else [None]
    points = [(task, size, mhz) for mhz in clocks for task in params.tasks for size in params.batch_sizes]
    if dvfs is not None and swept and dvfs.order == "interleaved":
        random.Random(params.seed).shuffle(points)
    return points


class _PointRunner:
    """Runs one model's points, each at its clock when the job sweeps (locked before, reset after)."""

    def __init__(
        self,
        lm: Model,
        extractor: _Features,
        items: dict[str, list[tasks.TaskItem]],
        params: LlmParams,
        dvfs: DvfsParams | None,
        device: Device,
        markers: MarkerWriter,
        counter: Iterator[int],
        progress: _Progress | None = None,
        model_index: int = 0,
    ) -> None:
        self.lm, self.extractor, self.items, self.params = lm, extractor, items, params
        self.dvfs, self.device, self.markers, self.counter = dvfs, device, markers, counter
        self.progress = progress or _Progress(None)
        self.model_index = model_index
        self.corpus = [item.prompt for task_items in items.values() for item in task_items]

    def run(self, task: str, batch_size: int, clocks: Clocks) -> str:
        """Runs the point at its SM clock, or at its (prefill, decode) clocks; returns its id."""
        point_id = f"p{next(self.counter)}"
        mhz = clocks if isinstance(clocks, int) else None
        lock = clocks[0] if isinstance(clocks, tuple) else mhz  # a pair's point starts at its prefill clock
        if lock is not None and self.dvfs is not None:
            _at_clock(self.markers, self.device, self.dvfs, lock)
        pair = PhaseClocks(self.markers, *clocks, current=lock) if isinstance(clocks, tuple) else None
        try:
            point = _Point(point_id, self.lm, task, batch_size, self.params, mhz, self.progress, pair)
            point.run(self.items[task], self.extractor, self.markers)
            if lock is not None and self.params.steady_state is not None:
                # At the point's clock: its energy per prefill and per decode token from steady windows
                # (ids m<i>.bs<n>.<point>.s<k>), which a 100 ms sensor resolves where short requests do not.
                at = f"{mhz} MHz" if pair is None else f"{pair.prefill_mhz}/{pair.decode_mhz} MHz"
                self.markers.status(f"{self.lm.ref.name}: steady state at {at}, batch {batch_size}")
                base = f"m{self.model_index}.bs{batch_size}.{point_id}"
                _steady_windows(self.lm, self.params, self.corpus, self.markers, batch_size, base, pair)
            self.progress.done += 1
        finally:
            if lock is not None:
                with sigterm_deferred():
                    self.markers.set_clocks(None)  # after every point, however it ended
        return point_id


def _search(
    params: LlmParams,
    dvfs: DvfsParams,
    model_index: int,
    run_point: Callable[[str, int, int | None], str],
    markers: MarkerWriter,
) -> None:
    """Per task and batch size, measures only the clocks a golden-section search for the optimum needs."""
    for task in params.tasks:
        for batch_size in params.batch_sizes:
            search_id = f"m{model_index}.{task}.bs{batch_size}"
            objective = dvfs.search or "energy"
            markers.begin("search", id=search_id, objective=objective, grid=len(dvfs.sweep))

            flagged: set[int] = set()  # clocks whose point ran off its clock (capped)

            def measure(
                mhz: int, task: str = task, batch_size: int = batch_size, flagged: set[int] = flagged
            ) -> tuple[float, float]:
                energy = markers.energy_so_far(run_point(task, batch_size, mhz))
                if energy.get("flagged"):
                    flagged.add(mhz)
                if energy.get("mean_j") is None or energy.get("latency_s") is None:
                    raise GpuprofError(
                        f"the point at {mhz} MHz has too few requests to compare: raise prompts"
                    )
                return float(energy["mean_j"]), float(energy["latency_s"])

            best, seen = search_clock(
                list(dvfs.sweep), measure, objective, dvfs.latency_budget, flagged.__contains__
            )
            markers.end("search", id=search_id, best_mhz=best, measured=sorted(seen))


def _at_clock(markers: MarkerWriter, device: Device, dvfs: DvfsParams, mhz: int) -> None:
    """Idles through the cooldown, has gpuprofd lock the point's SM clock, then idles SETTLE_S more: a GPU
    runs at a locked clock only a while after the call returns (docs/llm.md, "Clock sweeps")."""
    if dvfs.cooldown_s > 0:
        device.idle()
        markers.begin("cooldown", seconds=dvfs.cooldown_s)
        time.sleep(dvfs.cooldown_s)
        markers.end("cooldown")
    markers.set_clocks(mhz)
    device.idle()
    time.sleep(SETTLE_S)


def run(
    params: LlmParams,
    markers: MarkerWriter,
    target: GpuTarget,
    dvfs: DvfsParams | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Loads each model once and runs its points; the GPU is left idle however it ends.

    In a clock sweep gpuprofd locks each point's SM clock before it and unlocks it after it.
    """
    extractor = _Features(FeatureExtractor(params.ner))
    items = {
        task: tasks.select(
            tasks.load_items(task, params.dataset), params.prompts, params.shuffle, params.seed
        )
        for task in params.tasks
    }
    device = Device(target)
    counter = iter(range(1 << 30))  # point ids run across models
    searching = dvfs is not None and dvfs.search is not None
    progress = _Progress(None if searching else len(params.models) * len(plan(params, dvfs)))
    try:
        for model_index, ref in enumerate(params.models):
            markers.begin("load", id=f"m{model_index}", model=ref.name, model_source=ref.kind)
            lm = _load(ref, params, device, items, clock)
            markers.end("load", id=f"m{model_index}", ner=extractor.method, **lm.info)
            markers.status(f"loaded {ref.label} in {lm.info['load_s']:.1f} s on {device.name}")
            if isinstance(lm, LoadedModel) and lm.decoder is not None:
                _compile(lm, params, items, model_index, markers)
            pace = _pace(lm, params, items, device)  # after any compiling: what is timed is what runs
            paced: dict[str, Any] = {"simulated_pace": pace} if pace else {}
            markers.begin("measure", id=f"m{model_index}", **paced)

            run_point = _PointRunner(
                lm, extractor, items, params, dvfs, device, markers, counter, progress, model_index
            ).run
            if dvfs is not None and dvfs.search is not None:
                _search(params, dvfs, model_index, run_point, markers)
            else:
                for task, batch_size, mhz in plan(params, dvfs):
                    run_point(task, batch_size, mhz)
            if params.steady_state is not None:
                corpus = [item.prompt for task_items in items.values() for item in task_items]
                _steady(lm, params, model_index, corpus, markers)
            markers.end("measure", id=f"m{model_index}")
            del lm, run_point  # the runner holds the model too: both go before the next model loads
            gc.collect()  # a vLLM engine's memory is freed only once nothing refers to it
            extractor = _Features(extractor.extractor)  # the next model has its own tokenizer
            device.release()
    finally:
        with sigterm_deferred():  # a SIGTERM now must not leave the simulated GPU busy
            device.idle()
