"""Answer quality: yes/no parsing, SQuAD v1.1 exact match and F1, ROUGE-L, multiple choice."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence

import pytest

from gpuprof.client.wire.errors import GpuprofError, UsageError
from gpuprof.daemon.worker.llm import quality
from gpuprof.daemon.worker.llm.quality import (
    best_choice,
    exact_match,
    normalize_answer,
    rouge_l,
    token_f1,
    yes_no,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Yes, it is.", "yes"),
        ("no.", "no"),
        ("Maybe yes", None),
        ("TRUE", "yes"),
        ("false, because", "no"),
        ("  ... **Yes**", "yes"),  # leading punctuation is skipped
        ("Answer: No", "no"),
        ("A: yes", "yes"),
        ("Final answer: yes", "yes"),
        ("The answer is yes", None),  # the answer must open the text
        ("Nobody knows", None),
        ("A no-brainer", None),
        ("", None),
    ],
)
def test_yes_no(text: str, answer: str | None) -> None:
    assert yes_no(text) == answer


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("An apple, a day", "apple day"),
        ("Eiffel-Tower", "eiffeltower"),  # punctuation is removed, not replaced by a space
        ("Theater", "theater"),  # articles only as whole words
    ],
)
def test_normalize_answer_is_squads(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "golds", "score"),
    [
        ("the Eiffel Tower", ["Eiffel Tower"], 1.0),
        ("Eiffel", ["Eiffel Tower"], 0.0),
        ("Paris", ["London", "paris."], 1.0),
    ],
)
def test_exact_match(prediction: str, golds: list[str], score: float) -> None:
    assert exact_match(prediction, golds) == score


@pytest.mark.parametrize(
    ("prediction", "golds", "score"),
    [
        ("in 1969", ["July 1969"], 0.5),  # 1 common of 2 and 2
        ("Neil Armstrong", ["Armstrong"], 2 / 3),  # precision 1/2, recall 1
        ("in 1969", ["July 1969", "1969"], 2 / 3),  # the best gold counts
        ("red red blue", ["red blue"], 0.8),  # common tokens are counted with multiplicity
        ("Paris", ["London"], 0.0),
        ("the", ["a"], 0.0),  # both empty after normalisation: 0 as in SQuAD v1.1
    ],
)
def test_token_f1(prediction: str, golds: list[str], score: float) -> None:
    assert token_f1(prediction, golds) == pytest.approx(score)


@pytest.mark.parametrize("metric", [exact_match, token_f1, rouge_l])
def test_metrics_need_a_reference(metric: Callable[[str, Sequence[str]], float]) -> None:
    with pytest.raises(UsageError, match="at least one"):
        metric("x", [])


def test_rouge_l() -> None:
    pytest.importorskip("rouge_score", reason="rouge-score is not installed")
    assert rouge_l("the cat sat on the mat", ["the cat sat on the mat"]) == 1.0
    assert rouge_l("red green", ["blue yellow"]) == 0.0
    # LCS "the cat on the mat": 5 of 6 tokens each side
    assert rouge_l("the cat sat on the mat", ["the cat lay on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l("the cat sat on the mat", ["blue", "the cat lay on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l("the cats ran", ["the cat ran"]) == 1.0  # Porter stemming


@pytest.fixture
def fresh_rouge_scorer() -> Iterator[None]:
    quality._rouge_scorer.cache_clear()
    yield
    quality._rouge_scorer.cache_clear()


@pytest.mark.usefixtures("fresh_rouge_scorer")
def test_rouge_l_without_the_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rouge_score.rouge_scorer", None)  # makes the import fail
    with pytest.raises(GpuprofError, match="pip install rouge-score"):
        rouge_l("a", ["a"])


def test_best_choice() -> None:
    assert best_choice([-3.2, -1.5, -2.0]) == 1
    assert best_choice([-1.0, -1.0, -4.0]) == 0  # the first on ties
    assert best_choice([float("-inf"), -9.0]) == 1


@pytest.mark.parametrize("loglikelihoods", [[], [-1.0, math.nan]])
def test_best_choice_rejects_no_or_nan_scores(loglikelihoods: list[float]) -> None:
    with pytest.raises(UsageError):
        best_choice(loglikelihoods)
