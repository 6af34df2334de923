"""The study's tasks: where their items come from, the prompt each becomes, and how an answer is scored.

Items come from the task's built-in set (``prompts/<task>.jsonl``), a Hugging Face dataset (through
``datasets``, on nodes that reach the hub) or a local JSONL, CSV or Parquet file, with a column mapping.
The worker reads them as the job's user. Prompt templates and scoring rules are in docs/llm.md.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import DatasetRef
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
    """The value at ``column``; a dot reaches into a nested mapping (``answers.text``)."""
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


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


def make_item(task: str, row: Mapping[str, Any], columns: Mapping[str, str], index: int) -> TaskItem:
    """The TaskItem of one dataset row; GpuprofError names what the row lacks."""
    ident = str(_field(row, columns["id"]) if "id" in columns and _field(row, columns["id"]) else index)

    def text(key: str, required: bool = True) -> str:
        value = _field(row, columns[key]) if key in columns else None
        if (value is None or str(value).strip() == "") and required:
            raise MissingField(key, f"row {index}: no {key!r} (column {columns.get(key, key)!r})")
        return "" if value is None else str(value)

    if task == "qa":
        context, question = text("context", required=False), text("question")
        golds = _texts(_field(row, columns["answers"]))
        kind = _qa_kind(context, golds, _field(row, columns["kind"]) if "kind" in columns else None)
        if kind == "yesno":
            golds = tuple(_YES_NO.get(g.strip().lower(), g) for g in golds)
        return TaskItem(ident, task, kind, _qa_prompt(kind, context, question), golds)
    if task == "commonsense":
        endings = _texts(_field(row, columns["endings"]))
        label = _field(row, columns["label"])
        try:
            label_index = int(label)
        except (TypeError, ValueError):
            raise GpuprofError(f"row {index}: label {label!r} is not an ending's index") from None
        if len(endings) < 2 or not 0 <= label_index < len(endings):
            raise GpuprofError(f"row {index}: needs 2 or more endings and a label among them")
        return TaskItem(ident, task, "choice", text("context"), endings=endings, label=label_index)
    best = _texts(_field(row, columns["best_answer"]))
    golds = tuple(dict.fromkeys(best + _texts(_field(row, columns["correct_answers"]))))
    return TaskItem(ident, task, "generation", f"Q: {text('question').strip()}\nA:", golds)


def _rows(dataset: DatasetRef, task: str) -> list[Mapping[str, Any]]:
    if dataset.source == "builtin":
        path = resources.files("gpuprof.daemon.worker.llm") / "prompts" / f"{task}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if dataset.source == "hf":
        try:
            import datasets
        except ImportError:
            raise GpuprofError(
                "Hugging Face datasets need the datasets package: pip install datasets"
            ) from None
        if dataset.name.startswith("/"):  # a local dataset directory, read as the job's user
            problem = unusable_path(dataset.name, directory=True)
            if problem is not None:
                raise GpuprofError(f"dataset directory {problem} (llm.dataset.hf)")
        try:
            loaded = datasets.load_dataset(dataset.name, dataset.config, split=dataset.split)
        except Exception as exc:  # offline, unknown name, bad split: datasets raises many kinds
            raise GpuprofError(f"cannot load dataset {dataset.name!r}: {type(exc).__name__}: {exc}") from None
        return list(loaded)
    return _file_rows(dataset)


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


def load_items(task: str, dataset: DatasetRef) -> list[TaskItem]:
    """Every item of ``dataset`` for ``task``; an error names the dataset and the spec key to change."""
    columns = _BUILTIN_COLUMNS[task] if dataset.source == "builtin" else dataset.columns
    rows = _rows(dataset, task)
    where = {"builtin": "built-in", "file": "file", "hf": "dataset"}[dataset.source]
    name = f"{task} set" if dataset.source == "builtin" else dataset.name
    if not rows:
        raise GpuprofError(f"the {where} {name} has no rows")
    try:
        return [make_item(task, row, columns, index) for index, row in enumerate(rows)]
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
