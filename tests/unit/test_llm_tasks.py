"""The study's tasks: built-in sets, rows of the usual datasets and local files, prompts and scoring."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.llm_spec import DEFAULT_COLUMNS, DatasetRef
from gpuprof.daemon.worker.llm import tasks


@pytest.mark.parametrize(("task", "count", "kinds"), [
    ("qa", 300, {"yesno", "extractive"}), ("commonsense", 200, {"choice"}), ("factual", 200, {"generation"}),
])  # fmt: skip
def test_each_builtin_set_loads_whole(task: str, count: int, kinds: set[str]) -> None:
    items = tasks.load_items(task, DatasetRef())
    assert len(items) == count and {item.kind for item in items} == kinds
    assert len({item.id for item in items}) == count
    lengths = sorted(len(item.prompt.split()) for item in items)
    assert lengths[-1] > 4 * lengths[len(lengths) // 4]  # varied length: the study correlates energy with it


def test_builtin_extractive_answers_are_in_their_passages() -> None:
    for item in tasks.load_items("qa", DatasetRef()):
        if item.kind == "extractive":
            assert all(gold in item.prompt for gold in item.golds), item.id
        else:
            assert item.golds in (("yes",), ("no",)), item.id


def test_rows_of_the_usual_hub_datasets_become_items() -> None:
    squad = {"id": "s1", "context": "Paris is the capital of France.", "question": "What is the capital?",
             "answers": {"text": ["Paris"], "answer_start": [0]}}  # fmt: skip
    item = tasks.make_item("qa", squad, DEFAULT_COLUMNS["qa"] | {"id": "id"}, 0)
    assert (item.id, item.kind, item.golds) == ("s1", "extractive", ("Paris",))
    assert (
        item.prompt.endswith("Question: What is the capital?\nAnswer:")
        and "Paris is the capital" in item.prompt
    )
    boolq = {"question": "is paris in france", "passage": "Paris is in France.", "answer": True}
    item = tasks.make_item(
        "qa", boolq, {"question": "question", "context": "passage", "answers": "answer"}, 3
    )
    assert (item.id, item.kind, item.golds) == ("3", "yesno", ("yes",))
    assert item.prompt.endswith("is paris in france? Answer yes or no.\nAnswer:")
    hellaswag = {"ctx": "She picks up the kettle and", "endings": ["pours tea.", "eats it."], "label": "0"}
    item = tasks.make_item("commonsense", hellaswag, DEFAULT_COLUMNS["commonsense"], 0)
    assert (item.kind, item.endings, item.label) == ("choice", ("pours tea.", "eats it."), 0)
    truthful = {
        "question": "Do bulls hate red?",
        "best_answer": "No.",
        "correct_answers": ["No.", "They do not."],
    }
    item = tasks.make_item("factual", truthful, DEFAULT_COLUMNS["factual"], 0)
    assert item.golds == ("No.", "They do not.") and item.prompt == "Q: Do bulls hate red?\nA:"


def test_a_row_missing_a_column_is_named() -> None:
    with pytest.raises(GpuprofError, match="row 7: no 'question' \\(column 'q'\\)"):
        tasks.make_item("qa", {"context": "x"}, {"question": "q", "context": "context", "answers": "a"}, 7)
    with pytest.raises(GpuprofError, match="label 'x' is not an ending's index"):
        tasks.make_item("commonsense", {"ctx": "a", "endings": ["b", "c"], "label": "x"},
                        DEFAULT_COLUMNS["commonsense"], 0)  # fmt: skip


def test_csv_and_jsonl_files_with_a_column_mapping(tmp_path: Path) -> None:
    csv = tmp_path / "qa.csv"
    csv.write_text('passage,q,gold\n"The Nile is long.",How long is the Nile?,"[""long"", ""very long""]"\n')
    columns = {"question": "q", "context": "passage", "answers": "gold"}
    (item,) = tasks.load_items("qa", DatasetRef("file", str(csv), format="csv", columns=columns))
    assert item.golds == ("long", "very long") and item.kind == "extractive"
    jsonl = tmp_path / "f.jsonl"
    jsonl.write_text(json.dumps({"question": "Q?", "best_answer": "A.", "correct_answers": []}) + "\n")
    (item,) = tasks.load_items("factual", DatasetRef("file", str(jsonl), format="jsonl",
                                                     columns=DEFAULT_COLUMNS["factual"]))  # fmt: skip
    assert item.golds == ("A.",)


def test_a_dataset_directory_loads_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    rows = [{"id": f"s{i}", "context": f"The year was {1900 + i}.", "question": "Which year?",
             "answers": {"text": [str(1900 + i)], "answer_start": [13]}} for i in range(3)]  # fmt: skip
    folder = tmp_path / "squad-like"
    folder.mkdir()
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = DatasetRef("hf", str(folder), None, "validation", columns=DEFAULT_COLUMNS["qa"] | {"id": "id"})
    items = tasks.load_items("qa", dataset)
    assert [(i.id, i.kind, i.golds) for i in items] == [
        (f"s{k}", "extractive", (str(1900 + k),)) for k in range(3)
    ]
    with pytest.raises(GpuprofError, match="cannot load dataset"):
        tasks.load_items("qa", DatasetRef("hf", str(folder), None, "train", columns=DEFAULT_COLUMNS["qa"]))


def test_an_unreadable_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GpuprofError, match="no such file"):
        tasks.load_items("qa", DatasetRef("file", str(tmp_path / "none.csv"), format="csv"))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(GpuprofError, match="not a parquet table"):
        tasks.load_items("qa", DatasetRef("file", str(bad), format="parquet"))


def test_selection_is_reproducible_and_cycles() -> None:
    items = tasks.load_items("commonsense", DatasetRef())
    assert tasks.select(items, 5, False, 0) == items[:5]
    shuffled = tasks.select(items, 5, True, 7)
    assert shuffled == tasks.select(items, 5, True, 7) != items[:5]
    assert [i.id for i in tasks.select(items[:2], 5, False, 0)] == [items[k % 2].id for k in range(5)]


def test_scoring_follows_the_item_kind() -> None:
    yesno = tasks.TaskItem("a", "qa", "yesno", "p", ("no",))
    assert tasks.score(yesno, " No, it is not.").value == 1.0 and tasks.score(yesno, "Yes").value == 0.0
    extractive = tasks.TaskItem("b", "qa", "extractive", "p", ("July 1969",))
    score = tasks.score(extractive, " in 1969\nQuestion: next")  # only the first line answers
    assert score.metric == "f1" and score.value == pytest.approx(0.5) and score.exact_match == 0.0
    choice = tasks.TaskItem("c", "commonsense", "choice", "p", endings=("x", "y"), label=1)
    assert tasks.score(choice, None, 1).value == 1.0 and tasks.score(choice, None, 0).value == 0.0
    pytest.importorskip("rouge_score")
    generation = tasks.TaskItem("d", "factual", "generation", "p", ("Bulls are colour-blind to red.",))
    assert tasks.score(generation, "Bulls are colour-blind to red.").value == pytest.approx(1.0)


def test_a_dataset_the_task_cannot_use_is_named_with_the_key_to_change(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"query": "Is ice cold?", "answers": ["yes"]}) + "\n")
    with pytest.raises(GpuprofError) as caught:
        tasks.load_items("qa", DatasetRef("file", str(rows), format="jsonl", columns=DEFAULT_COLUMNS["qa"]))
    assert str(caught.value) == (
        f"file {rows}: row 0: no 'question' (column 'question') "
        "(map another column with llm.dataset.columns.question)"
    )
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)  # pandas would wait for a writer forever
    with pytest.raises(
        GpuprofError, match=r"dataset file .*rows\.fifo: is a FIFO \(named pipe\), not a regular"
    ):
        tasks.load_items("qa", DatasetRef("file", str(fifo), format="jsonl", columns=DEFAULT_COLUMNS["qa"]))
    with pytest.raises(
        GpuprofError, match=r"dataset directory .*rows\.jsonl: is a regular file, not a directory"
    ):
        tasks.load_items("qa", DatasetRef("hf", str(rows), None, "validation", columns=DEFAULT_COLUMNS["qa"]))
