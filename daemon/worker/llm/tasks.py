"""The study's tasks: where their items come from, the prompt each becomes, and how an answer is scored.

Items come from the task's built-in set (``prompts/<task>.jsonl``), a Hugging Face dataset (through
``datasets``, on nodes that reach the hub, or a local copy: a directory that ``save_to_disk`` wrote or one of
data files) or a local JSONL, CSV or Parquet file, with a column mapping; a preset (``client/wire/presets``)
names a dataset, its columns and the kind of its items. The worker reads them as the job's user. Prompt
templates and scoring rules are in docs/llm.md.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import DatasetRef
from gpuprof.client.wire.presets import PRESETS, DatasetPreset
from gpuprof.sampler.files import unusable_path

from . import quality

__all__ = ["Score", "TaskItem", "load_items", "score", "select"]

_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
_BUILTIN_COLUMNS = {
    "qa": {"id": "id", "kind": "kind", "question": "question", "context": "context", "answers": "answers"},
    "commonsense": {"id": "id", "context": "context", "endings": "endings", "label": "label"},
    "factual": {
        "id": "id",
        "question": "question",
        "best_answer": "best_answer",
        "correct_answers": "correct_answers",
    },
}
# Files that Dataset.save_to_disk and DatasetDict.save_to_disk write: such a directory needs load_from_disk.
_SAVED_MARKERS = ("state.json", "dataset_dict.json")


class MissingField(GpuprofError):
    """A row without a value the task needs; ``key`` is the task's name for it (a columns key)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class TaskItem:
    """One item: its prompt, and what scores the model's answer (gold answers, or endings and a label)."""

    id: str
    task: str
    kind: str  # yesno, extractive, free (qa); choice (commonsense); generation (factual)
    prompt: str
    golds: tuple[str, ...] = ()
    endings: tuple[str, ...] = ()
    label: int | None = None


@dataclass(frozen=True)
class Score:
    """A request's quality: the task's main ``metric`` and its value, with exact match where it applies."""

    metric: str | None
    value: float | None
    exact_match: float | None = None


def _field(row: Mapping[str, Any], column: str) -> Any:
    """The value at ``column``; a dot reaches into a nested mapping (SQuAD's ``answers.text``) or into each
    record of a list (NarrativeQA's ``answers.text``), or is part of a flattened column's name."""
    return _reach(row, column.split("."))


def _reach(value: Any, parts: list[str]) -> Any:
    if not parts:
        return value
    if hasattr(value, "tolist") and not isinstance(value, Mapping):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):  # a list of records: the field of each that has it
        return [found for found in (_reach(item, parts) for item in value) if found is not None]
    if not isinstance(value, Mapping):
        return None
    for end in range(len(parts), 0, -1):  # the longest name first: a flattened column's holds dots
        name = ".".join(parts[:end])
        if name in value:
            return _reach(value[name], parts[end:])
    return None


def _missing(value: Any) -> bool:
    """Whether a row's value is absent: None, a blank string, or a list of nothing else."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        value = value.tolist()
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return all(_missing(item) for item in value)
    return value is None


def _texts(value: Any) -> tuple[str, ...]:
    """A list of strings from a list, a JSON list in a string (CSV cells), a string or a boolean."""
    if isinstance(value, bool):
        return ("yes" if value else "no",)
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return (value,)
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if str(v).strip())
    return () if value is None else (str(value),)


def _qa_kind(context: str, golds: tuple[str, ...], given: Any) -> str:
    if given in ("yesno", "extractive", "free"):
        return str(given)
    if golds and all(g.strip().lower() in _YES_NO for g in golds):
        return "yesno"
    return "extractive" if any(g in context for g in golds) else "free"


def _qa_prompt(kind: str, context: str, question: str) -> str:
    question = question.strip()
    if kind == "yesno":
        ask = question if question.endswith("?") else f"{question}?"
        return f"{context.strip()}\nQuestion: {ask} Answer yes or no.\nAnswer:"
    lead = f"Read the passage and answer the question.\n\n{context.strip()}\n\n" if context.strip() else ""
    return f"{lead}Question: {question}\nAnswer:"


def _label(value: Any, count: int, index: int) -> int:
    """The right ending's index: an index (HellaSwag's string "2"), or 0/1 flags, one per ending, with a
    single 1 (TruthfulQA's ``mc1_targets.labels``)."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        ones = [place for place, flag in enumerate(value) if flag == 1]
        if len(value) != count or len(ones) != 1:
            raise GpuprofError(
                f"row {index}: label flags {value!r} need one flag per ending ({count}) and a single 1"
            )
        return ones[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise GpuprofError(f"row {index}: label {value!r} is not an ending's index") from None


def make_item(
    task: str,
    row: Mapping[str, Any],
    columns: Mapping[str, str],
    index: int,
    preset: DatasetPreset | None = None,
) -> TaskItem:
    """The TaskItem of one dataset row; GpuprofError names what the row lacks.

    A preset fixes the item's kind and frames a choice item's context; its rows must hold every mapped
    field but ``id`` and ``kind`` (a passage that a preset reads is never optional).
    """
    for key in () if preset is None else preset.required:
        if key in columns and _missing(_field(row, columns[key])):
            raise MissingField(key, f"row {index}: no {key!r} (column {columns[key]!r})")
    given_id = _field(row, columns["id"]) if "id" in columns else None
    ident = str(index if _missing(given_id) else given_id)

    def text(key: str, required: bool = True) -> str:
        value = _field(row, columns[key]) if key in columns else None
        if (value is None or str(value).strip() == "") and required:
            raise MissingField(key, f"row {index}: no {key!r} (column {columns.get(key, key)!r})")
        return "" if value is None else str(value)

    if task == "qa":
        context, question = text("context", required=False), text("question")
        golds = _texts(_field(row, columns["answers"]))
        given_kind = _field(row, columns["kind"]) if "kind" in columns else None
        kind = _qa_kind(context, golds, given_kind if preset is None else preset.kind)
        if kind == "yesno":
            golds = tuple(_YES_NO.get(g.strip().lower(), g) for g in golds)
        return TaskItem(ident, task, kind, _qa_prompt(kind, context, question), golds)
    if task == "commonsense":
        endings = _texts(_field(row, columns["endings"]))
        label_index = _label(_field(row, columns["label"]), len(endings), index)
        if len(endings) < 2 or not 0 <= label_index < len(endings):
            raise GpuprofError(f"row {index}: needs 2 or more endings and a label among them")
        prompt = text("context") if preset is None else preset.template.format(context=text("context"))
        return TaskItem(ident, task, "choice", prompt, endings=endings, label=label_index)
    best = _texts(_field(row, columns["best_answer"]))
    golds = tuple(dict.fromkeys(best + _texts(_field(row, columns["correct_answers"]))))
    return TaskItem(ident, task, "generation", f"Q: {text('question').strip()}\nA:", golds)


def _rows(dataset: DatasetRef, task: str, columns: Mapping[str, str]) -> list[Mapping[str, Any]]:
    if dataset.source == "builtin":
        path = resources.files("gpuprof.daemon.worker.llm") / "prompts" / f"{task}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if dataset.source == "hf":
        return _dataset_rows(_hf_dataset(dataset), columns, dataset.limit)
    return _file_rows(dataset)[: dataset.limit]


def _hf_dataset(dataset: DatasetRef) -> Any:
    """The split the spec names: from the hub or a directory of data files (``datasets.load_dataset``), or
    from a directory that ``save_to_disk`` wrote (``datasets.load_from_disk``)."""
    try:
        import datasets
    except ImportError:
        raise GpuprofError("Hugging Face datasets need the datasets package: pip install datasets") from None
    if dataset.name.startswith("/"):  # a local dataset directory, read as the job's user
        problem = unusable_path(dataset.name, directory=True)
        if problem is not None:
            raise GpuprofError(f"dataset directory {problem} (llm.dataset.hf)")
        if any((Path(dataset.name) / marker).is_file() for marker in _SAVED_MARKERS):
            return _saved_split(datasets, dataset)
    try:
        return datasets.load_dataset(dataset.name, dataset.config, split=dataset.split)
    except Exception as exc:  # offline, unknown name, bad split: datasets raises many kinds
        raise GpuprofError(f"cannot load dataset {dataset.name!r}: {type(exc).__name__}: {exc}") from None


def _saved_split(datasets: Any, dataset: DatasetRef) -> Any:
    """The split of a ``save_to_disk`` directory: a DatasetDict's entry, or a Dataset that is that split."""
    try:
        saved = datasets.load_from_disk(dataset.name)
    except Exception as exc:  # a damaged or foreign directory: datasets raises many kinds
        raise GpuprofError(f"cannot load dataset {dataset.name!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(saved, datasets.DatasetDict):
        if dataset.split not in saved:
            splits = ", ".join(map(repr, saved)) or "none"
            raise GpuprofError(
                f"dataset {dataset.name} has no split {dataset.split!r}; its splits: {splits} "
                "(llm.dataset.split)"
            )
        return saved[dataset.split]
    if saved.split is not None and str(saved.split) != dataset.split:  # a Dataset saved as one split
        raise GpuprofError(
            f"dataset {dataset.name} holds the {str(saved.split)!r} split, not {dataset.split!r} "
            "(llm.dataset.split)"
        )
    return saved


def _dataset_rows(loaded: Any, columns: Mapping[str, str], limit: int | None) -> list[Mapping[str, Any]]:
    """The first ``limit`` rows of a ``datasets.Dataset``, holding only the columns the mapping reads.

    Nested columns are flattened first (``document.summary.text``), so that a large field beside a mapped
    one (NarrativeQA's ``document.text``: whole books and scripts) is never read into memory.
    """
    flat = loaded.flatten()
    wanted = tuple(columns.values())
    keep = [name for name in flat.column_names if any(c == name or c.startswith(f"{name}.") for c in wanted)]
    if keep:  # with none, the rows stay whole and the first one names the missing column
        flat = flat.select_columns(keep)
    if limit is not None and limit < len(flat):
        flat = flat.select(range(limit))
    return list(flat)


def _file_rows(dataset: DatasetRef) -> list[Mapping[str, Any]]:
    import pandas as pd

    problem = unusable_path(dataset.name, directory=False)  # a FIFO would hang pandas; say why first
    if problem is not None:
        raise GpuprofError(f"dataset file {problem} (llm.dataset.file)")
    try:
        if dataset.format == "jsonl":
            frame = pd.read_json(dataset.name, lines=True, dtype=False)
        elif dataset.format == "csv":
            frame = pd.read_csv(dataset.name, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(dataset.name)
    except (OSError, ValueError) as exc:
        raise GpuprofError(f"dataset file {dataset.name}: not a {dataset.format} table ({exc})") from None
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _preset_of(task: str, dataset: DatasetRef) -> DatasetPreset | None:
    if dataset.preset is None:
        return None
    preset = PRESETS.get(dataset.preset)
    if preset is None:
        known = ", ".join(PRESETS)
        raise GpuprofError(f"unknown dataset preset {dataset.preset!r}; known: {known} (llm.dataset.preset)")
    if preset.task != task:
        raise GpuprofError(f"dataset preset {preset.name!r} is a {preset.task} dataset, not a {task} one")
    return preset


def load_items(task: str, dataset: DatasetRef) -> list[TaskItem]:
    """Every item of ``dataset`` for ``task``; an error names the dataset and the spec key to change."""
    preset = _preset_of(task, dataset)
    columns = _BUILTIN_COLUMNS[task] if dataset.source == "builtin" else dataset.columns
    rows = _rows(dataset, task, columns)
    where = {"builtin": "built-in", "file": "file", "hf": "dataset"}[dataset.source]
    name = f"{task} set" if dataset.source == "builtin" else dataset.name
    if preset is not None:
        name = f"{name} (preset {preset.name})"
    if not rows:
        raise GpuprofError(f"the {where} {name} has no rows")
    try:
        return [make_item(task, row, columns, index, preset) for index, row in enumerate(rows)]
    except MissingField as exc:
        raise GpuprofError(
            f"{where} {name}: {exc} (map another column with llm.dataset.columns.{exc.key})"
        ) from None
    except GpuprofError as exc:
        raise GpuprofError(f"{where} {name}: {exc}") from None


def select(items: Sequence[TaskItem], count: int, shuffle: bool, seed: int) -> list[TaskItem]:
    """``count`` items: the first ones, or a seeded shuffle's; cycles when the set is smaller."""
    order = list(items)
    if shuffle:
        random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(count)]


def score(item: TaskItem, output: str | None, choice: int | None = None) -> Score:
    """The quality of one answer: accuracy, F1 (with exact match) or ROUGE-L, as the item's kind asks."""
    if item.kind == "choice":
        if choice is None or item.label is None:
            return Score("accuracy", None)
        return Score("accuracy", float(choice == item.label))
    if not item.golds or output is None:
        return Score(None, None)
    if item.kind == "yesno":
        return Score("accuracy", float(quality.yes_no(output) == item.golds[0]))
    answer = output.strip().split("\n")[0]
    if item.kind == "extractive":
        return Score("f1", quality.token_f1(answer, item.golds), quality.exact_match(answer, item.golds))
    return Score("rouge_l", quality.rouge_l(answer, item.golds))
