"""Dataset presets: the seed study's later tasks by name, each with its hub dataset, columns and metric.

A job spec names one as ``dataset: boolq`` (or ``dataset: {preset: boolq, ...}`` to override its split, read
a local copy or cut it with ``limit``). The table says which hub dataset an online node loads, which task
reads its rows, through which columns, and the metric its items are scored by; the worker reads a preset's
``kind`` and ``template`` when it makes items. The columns assume the hub datasets' schemas as docs/llm.md
("Presets") states them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "DatasetPreset"]


@dataclass(frozen=True)
class DatasetPreset:
    """A named dataset for one task: where it lives on the hub, its columns, its items' kind and metric.

    ``columns`` maps the task's fields to the dataset's columns (a dot reaches into a nested one, or into
    each record of a list). ``kind`` is the item kind every row becomes, not inferred row by row; ``metric``
    is what the worker's scorer reports for that kind. ``template`` frames a choice item's context, the
    endings following it after a space.
    """

    name: str
    hub_id: str
    config: str | None
    split: str
    task: str
    columns: dict[str, str]
    kind: str
    metric: str
    template: str = "{context}"

    @property
    def required(self) -> tuple[str, ...]:
        """The fields every row must hold: all mapped ones but the optional ``id`` and ``kind``."""
        return tuple(key for key in self.columns if key not in ("id", "kind"))


_ALL = (
    DatasetPreset(
        "boolq", "google/boolq", None, "validation", "qa",
        {"question": "question", "context": "passage", "answers": "answer"},
        kind="yesno", metric="accuracy",
    ),
    DatasetPreset(
        "hellaswag", "Rowan/hellaswag", None, "validation", "commonsense",
        {"context": "ctx", "endings": "endings", "label": "label", "id": "ind"},
        kind="choice", metric="accuracy",
    ),
    DatasetPreset(
        "truthfulqa_mc", "truthfulqa/truthful_qa", "multiple_choice", "validation", "commonsense",
        {"context": "question", "endings": "mc1_targets.choices", "label": "mc1_targets.labels"},
        kind="choice", metric="accuracy", template="Q: {context}\nA:",
    ),
    DatasetPreset(
        "narrativeqa", "deepmind/narrativeqa", None, "validation", "qa",
        {"question": "question.text", "context": "document.summary.text", "answers": "answers.text"},
        kind="free", metric="rouge_l",
    ),
)  # fmt: skip
PRESETS: dict[str, DatasetPreset] = {preset.name: preset for preset in _ALL}
