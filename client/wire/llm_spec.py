"""The ``llm:`` section of a job spec: models, a task and its prompts, batch sizes, generation settings.

The schema is in docs/jobspec.md ("workload: llm"). Paths in it (a model directory, a dataset file) are
resolved against the spec file's directory when the spec is read from a file, and must be absolute in a
spec submitted as data; the worker opens them as the job's user.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .presets import PRESETS, DatasetPreset
from .spec_schema import REQUIRED, Document, KeyPath, Section, did_you_mean, excerpt, file_path

__all__ = ["ARCHS", "ENGINES", "TASKS", "DatasetRef", "LlmParams", "ModelRef", "SteadyState", "read_llm"]

# The study's architectures: real configs with synthetic weights; "-tiny" keeps the layer types, shrunk.
STUDY_ARCHS = ("falcon-7b", "mistral-7b-v0.1", "llama-3.2-1b", "llama-3.2-3b", "gpt-neo-2.7b")
ARCHS = (*STUDY_ARCHS, *(f"{name}-tiny" for name in STUDY_ARCHS))
TASKS = ("qa", "commonsense", "factual")
# How a model runs its requests: transformers' eager generate (the seed study's method); a static KV cache
# with a compiled, graph-captured decode step (docs/llm.md, "Engines").
ENGINES = ("eager", "compiled", "vllm")
LLM_DTYPES = ("bfloat16", "float16", "float32")
DATASET_FORMATS = ("jsonl", "csv", "parquet")
# The columns each task reads; defaults are those of the usual Hugging Face datasets (squad, hellaswag,
# truthful_qa "generation"). "id" and, for qa, "kind" are optional.
TASK_COLUMNS = {
    "qa": ("question", "context", "answers", "kind", "id"),
    "commonsense": ("context", "endings", "label", "id"),
    "factual": ("question", "best_answer", "correct_answers", "id"),
}
DEFAULT_COLUMNS = {
    "qa": {"question": "question", "context": "context", "answers": "answers.text"},
    "commonsense": {"context": "ctx", "endings": "endings", "label": "label"},
    "factual": {"question": "question", "best_answer": "best_answer", "correct_answers": "correct_answers"},
}
MAX_MODELS = 16
MAX_BATCH_SIZES = 16
MAX_PROMPTS = 100_000
MAX_DATASET_ROWS = 100_000_000
DATASET_KEYS = ("preset", "hf", "file", "config", "split", "format", "columns", "limit")
_HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_ -]*(\.[A-Za-z_][A-Za-z0-9_ -]*)*")
LLM_KEYS = (
    "model",
    "models",
    "engine",
    "kv_cache_gb",
    "dtype",
    "task",
    "tasks",
    "dataset",
    "prompts",
    "shuffle",
    "seed",
    "batch_sizes",
    "max_input_tokens",
    "max_new_tokens",
    "min_new_tokens",
    "ignore_eos",
    "sampling",
    "temperature",
    "top_p",
    "warmup_requests",
    "repetitions",
    "ci95_target",
    "steady_state",
    "trust_remote_code",
    "ner",
)


@dataclass(frozen=True)
class ModelRef:
    """A model: ``arch`` (synthetic weights), ``hf`` (a Hugging Face id) or ``path`` (a local directory)."""

    kind: str
    name: str
    revision: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.kind == "arch"

    @property
    def label(self) -> str:
        return f"{self.name} (synthetic weights)" if self.synthetic else self.name


@dataclass(frozen=True)
class DatasetRef:
    """Where prompts come from: the task's ``builtin`` set, a Hugging Face dataset (``hf``), or a ``file``.

    ``preset`` names the preset (``presets.PRESETS``) the dataset was chosen by: it fixes the items' kind
    and framing, and asks every row for each mapped column. ``limit`` keeps the dataset's first rows only.
    """

    source: str = "builtin"
    name: str = ""
    config: str | None = None
    split: str = "validation"
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    preset: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class SteadyState:
    """Prefill-only, then decode-only, repetitions back to back for ``seconds`` each (per model, batch size).

    Prefill runs ``context_tokens`` per sequence; decode extends such a context by one token a step, for at
    most ``decode_tokens`` steps before a fresh context.
    """

    seconds: float = 5.0
    context_tokens: int = 512
    decode_tokens: int = 256


@dataclass(frozen=True)
class LlmParams:
    """LLM inference: every model x task x batch size is a point, measured request by request."""

    models: tuple[ModelRef, ...]
    engine: str = "eager"
    kv_cache_gb: float | None = None  # vllm: the KV cache's size (None: vLLM's own choice on a GPU)
    tasks: tuple[str, ...] = ("qa",)
    dataset: DatasetRef = field(default_factory=DatasetRef)
    dtype: str = "bfloat16"
    prompts: int = 32
    shuffle: bool = False
    seed: int = 0
    batch_sizes: tuple[int, ...] = (1,)
    max_input_tokens: int = 2048
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    ignore_eos: bool = False
    sampling: str = "greedy"
    temperature: float = 1.0
    top_p: float = 1.0
    warmup_requests: int = 2
    repetitions: int = 1
    ci95_target: float | None = None  # stop repeating a point once its CI half width / mean is this small
    steady_state: SteadyState | None = None
    trust_remote_code: bool = False
    ner: str = "auto"

    @property
    def planned_s(self) -> float:
        """A lower bound of the workload's running time: its steady-state phases."""
        if self.steady_state is None:
            return 0.0
        return 2 * self.steady_state.seconds * len(self.models) * len(self.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = [_model_dict(m) for m in self.models]
        data.pop("tasks")
        data["tasks"] = list(self.tasks)
        data["batch_sizes"] = list(self.batch_sizes)
        dataset = data.pop("dataset")
        data["dataset"] = "builtin" if self.dataset.source == "builtin" else _dataset_dict(dataset)
        if self.steady_state is None:
            data.pop("steady_state")
        if self.ci95_target is None:
            data.pop("ci95_target")
        if self.kv_cache_gb is None:
            data.pop("kv_cache_gb")
        if self.sampling == "greedy":
            data.pop("temperature")
            data.pop("top_p")
        return data


def _model_dict(model: ModelRef) -> dict[str, str]:
    out = {model.kind: model.name}
    if model.revision:
        out["revision"] = model.revision
    return out


def _dataset_dict(data: dict[str, Any]) -> dict[str, Any]:
    source, preset = data.pop("source"), data.pop("preset")
    out: dict[str, Any] = {} if preset is None else {"preset": preset}
    out[source] = data.pop("name")
    out.update({k: v for k, v in data.items() if v not in (None, {})})
    if source == "file":
        out.pop("split", None)
        out.pop("config", None)
    else:
        out.pop("format", None)
    return out


def _read_model(doc: Document, path: KeyPath, value: object) -> ModelRef:
    if isinstance(value, str):
        if value in ARCHS:
            raise doc.error(path, f"write {{arch: {value}}} for synthetic weights of this architecture")
        if value.startswith(("/", ".", "~")):
            return ModelRef("path", file_path(doc, path, value))
        if not _HF_ID.fullmatch(value) or len(value) > 200:
            raise doc.error(path, f"must be a Hugging Face id (org/name) or a path, got {excerpt(value)}")
        return ModelRef("hf", value)
    section = Section(doc, path, value, ("arch", "hf", "path", "revision"))
    kinds = [key for key in ("arch", "hf", "path") if section.has(key)]
    if len(kinds) != 1:
        raise doc.error(path, "give exactly one of arch, hf or path")
    kind = kinds[0]
    if kind == "arch":
        if section.has("revision"):
            raise section.error("revision", "applies to hf models only")
        return ModelRef("arch", section.choice("arch", REQUIRED, ARCHS))
    if kind == "path":
        if section.has("revision"):
            raise section.error("revision", "applies to hf models only")
        return ModelRef("path", file_path(doc, (*path, "path"), section.data["path"]))
    name = section.string("hf", REQUIRED, 200)
    if not _HF_ID.fullmatch(name):
        raise section.error("hf", f"must be a Hugging Face id such as org/name, got {excerpt(name)}")
    revision = section.string("revision", "", 100) if section.has("revision") else None
    return ModelRef("hf", name, revision)


def _preset_names() -> str:
    return ", ".join(map(repr, PRESETS))


def _dataset_preset(section: Section) -> DatasetPreset | None:
    """The preset that ``dataset`` names, as a plain string or as its mapping's ``preset``; None if none."""
    value = section.data.get("dataset", "builtin")
    path = (*section.path, "dataset")
    if isinstance(value, str) and value != "builtin":
        if value not in PRESETS:
            hint = did_you_mean(value, [*PRESETS, "builtin"])
            names = _preset_names()
            problem = f"must be builtin, a preset ({names}) or a mapping, got {excerpt(value)}{hint}"
            raise section.doc.error(path, problem)
        return PRESETS[value]
    if not isinstance(value, dict) or "preset" not in value:
        return None
    name = value["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        hint = did_you_mean(name, PRESETS) if isinstance(name, str) else ""
        raise section.doc.error(
            (*path, "preset"), f"must be one of {_preset_names()}, got {excerpt(name)}{hint}"
        )
    return PRESETS[name]


def _read_dataset(section: Section, tasks: tuple[str, ...], preset: DatasetPreset | None) -> DatasetRef:
    value = section.data.get("dataset", "builtin")
    path = (*section.path, "dataset")
    if value == "builtin":
        return DatasetRef()
    if len(tasks) != 1:
        raise section.error("dataset", "a dataset other than builtin serves one task: list one task")
    task = tasks[0]
    if preset is not None and isinstance(value, str):
        value = {"preset": preset.name}
    data = Section(section.doc, path, value, DATASET_KEYS)
    kinds = [key for key in ("hf", "file") if data.has(key)]
    if len(kinds) > 1 or (preset is None and not kinds):
        raise section.doc.error(
            path, "give builtin, a preset's name, or a mapping with a preset and/or one of hf or file"
        )
    columns = dict(DEFAULT_COLUMNS[task] if preset is None else preset.columns)
    if data.has("columns"):
        mapping = Section(section.doc, (*path, "columns"), data.data["columns"], TASK_COLUMNS[task])
        for key in mapping.data:
            column = mapping.string(key, REQUIRED, 200)
            if not _COLUMN.fullmatch(column):
                problem = f"must be a column name (a dot reaches into a nested one), got {excerpt(column)}"
                raise mapping.error(key, problem)
            columns[key] = column
    limit = data.integer("limit", REQUIRED, 1, MAX_DATASET_ROWS) if data.has("limit") else None
    named = None if preset is None else preset.name
    if kinds == ["file"]:
        file = file_path(section.doc, (*path, "file"), data.data["file"])
        suffix = Path(file).suffix.lstrip(".").lower()
        default_format = {"json": "jsonl", "parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}.get(suffix)
        fmt = data.choice("format", default_format or REQUIRED, DATASET_FORMATS)
        for key in ("config", "split"):
            if data.has(key):
                raise data.error(key, "applies to hf datasets only")
        return DatasetRef("file", file, format=fmt, columns=columns, preset=named, limit=limit)
    if data.has("hf") or preset is None:
        name = data.string("hf", REQUIRED, 4096)
        if name.startswith(("/", ".", "~")):  # a dataset directory: save_to_disk's, or data files
            name = file_path(section.doc, (*path, "hf"), name)
        elif not _HF_ID.fullmatch(name) or len(name) > 200:
            raise data.error(
                "hf", f"must be a Hugging Face dataset id or a dataset directory, got {excerpt(name)}"
            )
    else:  # a preset on its own: the hub dataset it names
        name = preset.hub_id
    if data.has("format"):
        raise data.error("format", "applies to dataset files only")
    config = None if preset is None else preset.config
    if data.has("config"):
        config = data.string("config", REQUIRED, 100)
    split = data.string("split", "validation" if preset is None else preset.split, 100)
    return DatasetRef("hf", name, config, split, columns=columns, preset=named, limit=limit)


def _read_steady(section: Section) -> SteadyState | None:
    value = section.data.get("steady_state")
    if value is None or value is False:
        return None
    if value is True:
        return SteadyState()
    steady = section.section("steady_state", ("seconds", "context_tokens", "decode_tokens"))
    return SteadyState(
        seconds=steady.number("seconds", 5.0, 0.5, 3600),
        context_tokens=steady.integer("context_tokens", 512, 1, 131072),
        decode_tokens=steady.integer("decode_tokens", 256, 1, 65536),
    )


def _one_or_many(section: Section, one: str, many: str, default: Any) -> list[tuple[KeyPath, Any]]:
    if section.has(one) and section.has(many):
        raise section.error(many, f"give {one} or {many}, not both")
    if section.has(one):
        return [((*section.path, one), section.data[one])]
    return section.items(many, default, MAX_MODELS)


def read_llm(section: Section) -> LlmParams:
    """Validates the ``llm:`` section."""
    doc = section.doc
    if not (section.has("model") or section.has("models")):
        raise section.error("model", "required key is missing (give model or models)")
    listed = _one_or_many(section, "model", "models", [])
    models = tuple(_read_model(doc, path, value) for path, value in listed)
    if len(set(models)) != len(models):
        raise section.error("models", "a model is listed twice")
    preset = _dataset_preset(section)
    tasks: list[str] = []
    listed_tasks = _one_or_many(section, "task", "tasks", ["qa" if preset is None else preset.task])
    for path, value in listed_tasks:
        if not isinstance(value, str) or value not in TASKS:
            hint = did_you_mean(value, TASKS) if isinstance(value, str) else ""
            raise doc.error(path, f"must be one of {', '.join(map(repr, TASKS))}, got {excerpt(value)}{hint}")
        if value in tasks:
            raise doc.error(path, f"{excerpt(value)} is listed twice")
        tasks.append(value)
    if preset is not None and len(tasks) == 1 and tasks[0] != preset.task:
        raise doc.error(
            listed_tasks[0][0],
            f"dataset preset {preset.name!r} is a {preset.task} dataset: write task: {preset.task}, "
            "or leave task out",
        )
    max_new = section.integer("max_new_tokens", 32, 1, 16384)
    min_new = section.integer("min_new_tokens", 0, 0, 16384)
    if min_new > max_new:
        raise section.error("min_new_tokens", f"{min_new} is more than max_new_tokens ({max_new})")
    ignore_eos = section.boolean("ignore_eos", False)
    if ignore_eos and section.has("min_new_tokens") and min_new != max_new:
        raise section.error("min_new_tokens", "ignore_eos generates max_new_tokens: leave min_new_tokens out")
    sampling = section.choice("sampling", "greedy", ("greedy", "sample"))
    for key in ("temperature", "top_p"):
        if sampling == "greedy" and section.has(key):
            raise section.error(key, "applies to sampling: sample only")
    ner = section.string("ner", "auto", 4096)
    if ner not in ("auto", "heuristic") and not (ner.startswith("spacy:") and len(ner) > 6):
        raise section.error(
            "ner", f"must be auto, heuristic or spacy:<pipeline name or path>, got {excerpt(ner)}"
        )
    engine = section.choice("engine", "eager", ENGINES)
    if section.has("kv_cache_gb") and engine != "vllm":
        raise section.error("kv_cache_gb", "applies to engine: vllm only")
    trust = section.boolean("trust_remote_code", False)
    if trust and all(m.synthetic for m in models):
        raise section.error("trust_remote_code", "synthetic-weight models run no remote code: leave it out")
    return LlmParams(
        models=models,
        engine=engine,
        kv_cache_gb=section.number("kv_cache_gb", 0, 0, 4096, low_open=True)
        if section.has("kv_cache_gb")
        else None,
        tasks=tuple(tasks),
        dataset=_read_dataset(section, tuple(tasks), preset),
        dtype=section.choice("dtype", "bfloat16", LLM_DTYPES),
        prompts=section.integer("prompts", 32, 1, MAX_PROMPTS),
        shuffle=section.boolean("shuffle", False),
        seed=section.integer("seed", 0, 0, 2**32 - 1),
        batch_sizes=section.integers("batch_sizes", [1], 1, 1024, MAX_BATCH_SIZES),
        max_input_tokens=section.integer("max_input_tokens", 2048, 8, 131072),
        max_new_tokens=max_new,
        min_new_tokens=max_new if ignore_eos else min_new,
        ignore_eos=ignore_eos,
        sampling=sampling,
        temperature=section.number("temperature", 1.0, 0, 100, low_open=True),
        top_p=section.number("top_p", 1.0, 0, 1, low_open=True),
        warmup_requests=section.integer("warmup_requests", 2, 0, 10_000),
        repetitions=section.integer("repetitions", 10 if section.has("ci95_target") else 1, 1, 1000),
        ci95_target=section.number("ci95_target", 0, 0, 1, low_open=True)
        if section.has("ci95_target")
        else None,
        steady_state=_read_steady(section),
        trust_remote_code=trust,
        ner=ner,
    )
