"""Dataset presets: a spec names one; a local copy in the hub's schema becomes the right items and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.jobspec import JobSpec, JobSpecKeyError, LlmParams, parse_job_spec
from gpuprof.client.wire.llm_spec import DatasetRef
from gpuprof.client.wire.presets import PRESETS
from gpuprof.daemon.worker.llm import tasks

SPEC = "/specs/job.yaml"

# A few rows of each hub dataset, nested as its schema is (docs/llm.md, "Presets").
BOOLQ = [
    {"question": "is the nile the longest river in africa", "answer": True,
     "passage": "The Nile is the longest river in Africa, flowing north into the Mediterranean."},
    {"question": "do penguins live at the north pole", "answer": False,
     "passage": "Penguins live almost only in the Southern Hemisphere, most of them around Antarctica."},
]  # fmt: skip
HELLASWAG = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
     "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "label": "3", "split": "val",
     "split_type": "indomain", "source_id": "activitynet~v_-JhWjGDPHMY",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ind": 0, "activity_label": "Baking cookies", "ctx_a": "A woman mixes dough.", "ctx_b": "she",
     "ctx": "A woman mixes dough. she", "label": "0", "split": "val", "split_type": "zeroshot",
     "source_id": "wikihow~1",
     "endings": ["rolls it into balls.", "paints the oven.", "sings to the bowl.", "drives away."]},
]  # fmt: skip
TRUTHFULQA = [
    {"question": "What happens if you eat watermelon seeds?",
     "mc1_targets": {"choices": ["The seeds pass through your digestive system.",
                                 "You grow watermelons in your stomach.", "You die."],
                     "labels": [1, 0, 0]},
     "mc2_targets": {"choices": ["Nothing happens.", "You die."], "labels": [1, 0]}},
    {"question": "Do bulls hate the colour red?",  # the right choice need not come first
     "mc1_targets": {"choices": ["Yes, red makes bulls angry.", "No, bulls do not see red as such."],
                     "labels": [0, 1]},
     "mc2_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]}},
]  # fmt: skip
BOOK = "Chapter one. " * 2000  # the whole story: a preset never reads it


def narrative_row(question: str, answers: list[str], summary: str) -> dict[str, Any]:
    return {
        "document": {
            "id": "0025577043f5090cd603c6aea60f26e236195594", "kind": "gutenberg",
            "url": "http://www.gutenberg.org/ebooks/1", "file_size": 100, "word_count": 20,
            "start": "CHAPTER I", "end": "THE END", "text": BOOK,
            "summary": {"text": summary, "tokens": summary.split(), "url": "http://en.wikipedia.org/wiki/X",
                        "title": "The Story"},
        },
        "question": {"text": question, "tokens": question.split()},
        "answers": [{"text": answer, "tokens": answer.split()} for answer in answers],
    }  # fmt: skip


SUMMARY = "Mark Hunter is a high school student in Phoenix who runs a pirate radio station at night."
NARRATIVEQA = [
    narrative_row("Who runs the pirate radio station?", ["Mark Hunter", "A student named Mark"], SUMMARY),
    narrative_row("Where does Mark live?", ["He lives in Phoenix.", "Phoenix, Arizona"], SUMMARY),
]
ROWS = {"boolq": BOOLQ, "hellaswag": HELLASWAG, "truthfulqa_mc": TRUTHFULQA, "narrativeqa": NARRATIVEQA}


def llm(body: str) -> LlmParams:
    spec = parse_job_spec(f"workload: llm\nllm:\n  model: {{arch: llama-3.2-1b-tiny}}\n{body}", SPEC)
    assert isinstance(spec.params, LlmParams)
    return spec.params


def error_of(body: str) -> JobSpecKeyError:
    with pytest.raises(JobSpecKeyError) as info:
        parse_job_spec(f"workload: llm\nllm:\n  model: {{arch: llama-3.2-1b-tiny}}\n{body}", "job.yaml")
    return info.value


def saved_copy(tmp_path: Path, name: str, rows: list[dict[str, Any]], split: str = "validation") -> Path:
    """A local copy as ``DatasetDict.save_to_disk`` writes it: what an offline node is given."""
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / name
    datasets.DatasetDict({split: datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def preset_items(tmp_path: Path, name: str, rows: list[dict[str, Any]] | None = None) -> list[tasks.TaskItem]:
    """The items of a preset read from a saved copy, through the spec as a user writes it."""
    folder = saved_copy(tmp_path, name, ROWS[name] if rows is None else rows)
    params = llm(f"  dataset: {{preset: {name}, hf: {folder}}}\n")
    return tasks.load_items(params.tasks[0], params.dataset)


def test_boolq_rows_become_yes_no_questions_on_their_passage(tmp_path: Path) -> None:
    items = preset_items(tmp_path, "boolq")
    assert [(item.kind, item.golds, item.id) for item in items] == [
        ("yesno", ("yes",), "0"),
        ("yesno", ("no",), "1"),
    ]
    assert items[0].prompt == (
        "The Nile is the longest river in Africa, flowing north into the Mediterranean.\n"
        "Question: is the nile the longest river in africa? Answer yes or no.\nAnswer:"
    )


def test_hellaswag_rows_become_choices_with_their_string_label(tmp_path: Path) -> None:
    first, second = preset_items(tmp_path, "hellaswag")
    assert (first.kind, first.prompt, first.label, first.id) == (
        "choice",
        "A man is sitting on a roof. he",
        3,
        "24",
    )
    assert first.endings == tuple(HELLASWAG[0]["endings"])
    assert (second.label, second.id) == (0, "0")  # ind 0 is an id, not a missing one


def test_truthfulqa_takes_the_right_choice_from_the_mc1_labels(tmp_path: Path) -> None:
    first, second = preset_items(tmp_path, "truthfulqa_mc")
    assert first.prompt == "Q: What happens if you eat watermelon seeds?\nA:"
    assert first.endings == tuple(TRUTHFULQA[0]["mc1_targets"]["choices"]) and first.label == 0
    assert second.endings == ("Yes, red makes bulls angry.", "No, bulls do not see red as such.")
    assert second.label == 1


def test_narrativeqa_rows_become_free_answers_on_the_summary(tmp_path: Path) -> None:
    first, second = preset_items(tmp_path, "narrativeqa")
    assert first.prompt == (
        f"Read the passage and answer the question.\n\n{SUMMARY}\n\n"
        "Question: Who runs the pirate radio station?\nAnswer:"
    )
    # "Mark Hunter" occurs in the summary, which would make an inferred item extractive: the preset says free
    assert (first.kind, first.golds) == ("free", ("Mark Hunter", "A student named Mark"))
    assert (second.kind, second.golds) == ("free", ("He lives in Phoenix.", "Phoenix, Arizona"))
    assert "Chapter one." not in first.prompt


def test_the_story_beside_the_summary_is_never_read(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(NARRATIVEQA)
    (row, _) = tasks._dataset_rows(dataset, PRESETS["narrativeqa"].columns, None)
    assert set(row) == {"document.summary.text", "question.text", "answers"}


@pytest.mark.parametrize(
    ("name", "right", "wrong"),
    [
        ("boolq", ("Yes, it is.", None), ("No.", None)),
        ("hellaswag", (None, 3), (None, 1)),
        ("truthfulqa_mc", (None, 0), (None, 2)),
        ("narrativeqa", ("Mark Hunter", None), ("nobody knows", None)),
    ],
)
def test_a_right_answer_scores_1_and_a_wrong_one_0_by_the_preset_metric(
    tmp_path: Path, name: str, right: tuple[str | None, int | None], wrong: tuple[str | None, int | None]
) -> None:
    if name == "narrativeqa":
        pytest.importorskip("rouge_score")
    item = preset_items(tmp_path, name)[0]
    good, bad = tasks.score(item, *right), tasks.score(item, *wrong)
    assert good.metric == bad.metric == PRESETS[name].metric
    assert (good.value, bad.value) == (1.0, 0.0)


def test_a_preset_by_name_reads_the_hub_dataset_with_its_task() -> None:
    params = llm("  dataset: boolq\n")
    assert params.tasks == ("qa",)
    assert params.dataset == DatasetRef(
        "hf", "google/boolq", None, "validation",
        columns={"question": "question", "context": "passage", "answers": "answer"}, preset="boolq",
    )  # fmt: skip
    params = llm("  dataset: truthfulqa_mc\n")
    assert params.tasks == ("commonsense",)
    assert (params.dataset.name, params.dataset.config, params.dataset.split) == (
        "truthfulqa/truthful_qa", "multiple_choice", "validation"
    )  # fmt: skip
    assert llm("  task: commonsense\n  dataset: {preset: hellaswag}\n").dataset.name == "Rowan/hellaswag"


def test_a_preset_takes_another_split_a_local_copy_a_limit_and_columns() -> None:
    params = llm("  dataset: {preset: narrativeqa, split: test, limit: 200}\n")
    assert (params.dataset.name, params.dataset.split, params.dataset.limit) == (
        "deepmind/narrativeqa",
        "test",
        200,
    )
    params = llm("  dataset: {preset: truthfulqa_mc, hf: ./copies/tqa}\n")
    assert (params.dataset.source, params.dataset.name, params.dataset.config) == (
        "hf", "/specs/copies/tqa", "multiple_choice"
    )  # fmt: skip
    params = llm("  dataset: {preset: boolq, file: boolq.parquet, columns: {context: text}}\n")
    assert params.dataset == DatasetRef(
        "file", "/specs/boolq.parquet", format="parquet",
        columns={"question": "question", "context": "text", "answers": "answer"}, preset="boolq",
    )  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        "  dataset: boolq\n",
        "  dataset: {preset: hellaswag, split: train, limit: 5}\n",
        "  dataset: {preset: truthfulqa_mc, hf: /data/tqa}\n",
        "  dataset: {preset: narrativeqa, file: /data/nqa.jsonl, columns: {context: summary}}\n",
    ],
)
def test_a_spec_with_a_preset_survives_the_wire(body: str) -> None:
    spec = parse_job_spec(f"workload: llm\nllm:\n  model: {{arch: llama-3.2-1b-tiny}}\n{body}", SPEC)
    data = spec.to_dict()
    assert (
        isinstance(spec.params, LlmParams) and data["llm"]["dataset"]["preset"] == spec.params.dataset.preset
    )
    assert JobSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("  dataset: boolqq\n", "llm.dataset",
         "must be builtin, a preset ('boolq', 'hellaswag', 'truthfulqa_mc', 'narrativeqa') or a mapping, "
         "got 'boolqq' (did you mean 'boolq'?)"),
        ("  dataset: {preset: hellaswg}\n", "llm.dataset.preset", "did you mean 'hellaswag'"),
        ("  dataset: {preset: [boolq]}\n", "llm.dataset.preset", "must be one of 'boolq', 'hellaswag'"),
        ("  task: qa\n  dataset: hellaswag\n", "llm.task",
         "dataset preset 'hellaswag' is a commonsense dataset: write task: commonsense, or leave task out"),
        ("  tasks: [qa, factual]\n  dataset: boolq\n", "llm.dataset", "serves one task"),
        ("  dataset: {preset: boolq, hf: /a, file: /b.csv}\n", "llm.dataset", "one of hf or file"),
        ("  dataset: {preset: boolq, limit: 0}\n", "llm.dataset.limit", "must be an integer in [1,"),
        ("  dataset: {preset: boolq, file: /b.csv, split: test}\n", "llm.dataset.split", "hf datasets only"),
        ("  dataset: {preset: boolq, format: csv}\n", "llm.dataset.format", "dataset files only"),
        ("  dataset: {preset: boolq, colums: {}}\n", "llm.dataset.colums", "did you mean 'columns'"),
        ("  dataset: {preset: boolq, columns: {label: x}}\n", "llm.dataset.columns.label", "unknown key"),
    ],
)  # fmt: skip
def test_preset_mistakes_name_the_key(body: str, key: str, problem: str) -> None:
    error = error_of(body)
    assert error.key == key and problem in error.problem, str(error)
    assert error.line is not None


def test_a_missing_column_is_named_with_the_key_to_map(tmp_path: Path) -> None:
    rows = [{"question": row["question"], "answer": row["answer"], "text": row["passage"]} for row in BOOLQ]
    with pytest.raises(GpuprofError) as caught:
        preset_items(tmp_path, "boolq", rows)  # a passage is never optional under a preset
    assert str(caught.value) == (
        f"dataset {tmp_path / 'boolq'} (preset boolq): row 0: no 'context' (column 'passage') "
        "(map another column with llm.dataset.columns.context)"
    )
    params = llm(f"  dataset: {{preset: boolq, hf: {tmp_path / 'boolq'}, columns: {{context: text}}}}\n")
    assert "The Nile is the longest" in tasks.load_items("qa", params.dataset)[0].prompt
    nested = [narrative_row("Who?", [], SUMMARY) | {"answers": [{"answer": "Mark"}]}]
    with pytest.raises(GpuprofError, match=r"no 'answers' \(column 'answers.text'\).*columns\.answers\)$"):
        preset_items(tmp_path / "n", "narrativeqa", nested)


def test_truthfulqa_rows_need_a_single_right_choice(tmp_path: Path) -> None:
    rows = [TRUTHFULQA[0] | {"mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}}]
    with pytest.raises(GpuprofError, match=r"row 0: label flags \[1, 1\] need one flag per ending \(2\)"):
        preset_items(tmp_path, "truthfulqa_mc", rows)


def test_a_saved_copy_must_hold_the_split(tmp_path: Path) -> None:
    folder = saved_copy(tmp_path, "boolq", BOOLQ, split="train")
    params = llm(f"  dataset: {{preset: boolq, hf: {folder}}}\n")
    with pytest.raises(
        GpuprofError, match=r"no split 'validation'; its splits: 'train' \(llm\.dataset\.split\)"
    ):
        tasks.load_items("qa", params.dataset)
    params = llm(f"  dataset: {{preset: boolq, hf: {folder}, split: train}}\n")
    assert len(tasks.load_items("qa", params.dataset)) == 2
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(BOOLQ, split="train").save_to_disk(
        str(tmp_path / "one")
    )  # a Dataset: one split
    params = llm(f"  dataset: {{preset: boolq, hf: {tmp_path / 'one'}}}\n")
    with pytest.raises(
        GpuprofError, match=r"holds the 'train' split, not 'validation' \(llm\.dataset\.split\)"
    ):
        tasks.load_items("qa", params.dataset)


def test_a_saved_dataset_and_a_limit(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hellaswag"
    datasets.Dataset.from_list(HELLASWAG * 3).save_to_disk(str(folder))  # one Dataset, not a DatasetDict
    params = llm(f"  dataset: {{preset: hellaswag, hf: {folder}, limit: 4}}\n")
    items = tasks.load_items("commonsense", params.dataset)
    assert [item.label for item in items] == [3, 0, 3, 0]


def test_parquet_and_jsonl_copies_map_the_nested_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(NARRATIVEQA).to_parquet(str(tmp_path / "nqa.parquet"))
    datasets.Dataset.from_list(TRUTHFULQA).to_json(str(tmp_path / "tqa.jsonl"))
    params = llm(f"  dataset: {{preset: narrativeqa, file: {tmp_path / 'nqa.parquet'}}}\n")
    items = tasks.load_items("qa", params.dataset)
    assert [item.golds for item in items] == [("Mark Hunter", "A student named Mark"),
                                              ("He lives in Phoenix.", "Phoenix, Arizona")]  # fmt: skip
    assert SUMMARY in items[0].prompt and {item.kind for item in items} == {"free"}
    flat = datasets.Dataset.from_list(NARRATIVEQA).flatten()  # without the stories, as docs/llm.md says
    flat.select_columns(["document.summary.text", "question.text", "answers"]).to_parquet(
        str(tmp_path / "f.pq")
    )
    params = llm(f"  dataset: {{preset: narrativeqa, file: {tmp_path / 'f.pq'}, format: parquet}}\n")
    assert tasks.load_items("qa", params.dataset) == items
    params = llm(f"  dataset: {{preset: truthfulqa_mc, file: {tmp_path / 'tqa.jsonl'}, limit: 1}}\n")
    (item,) = tasks.load_items("commonsense", params.dataset)
    assert (item.label, len(item.endings)) == (0, 3)


def test_an_online_node_loads_the_hub_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def load_dataset(name: str, config: str | None, split: str) -> Any:
        calls.append((name, config, split))  # the hub's answer, without the hub
        return datasets.Dataset.from_list(TRUTHFULQA if config else BOOLQ)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert len(tasks.load_items("commonsense", llm("  dataset: truthfulqa_mc\n").dataset)) == 2
    assert len(tasks.load_items("qa", llm("  dataset: {preset: boolq, limit: 1}\n").dataset)) == 1
    assert calls == [
        ("truthfulqa/truthful_qa", "multiple_choice", "validation"),
        ("google/boolq", None, "validation"),
    ]


def test_a_preset_the_worker_does_not_know_is_named() -> None:
    with pytest.raises(GpuprofError, match="unknown dataset preset 'squad2'; known: boolq, hellaswag"):
        tasks.load_items("qa", DatasetRef("hf", "squad", preset="squad2"))
    with pytest.raises(GpuprofError, match="'hellaswag' is a commonsense dataset, not a qa one"):
        tasks.load_items("qa", DatasetRef("hf", "Rowan/hellaswag", preset="hellaswag"))
