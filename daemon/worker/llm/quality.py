"""Answer quality against gold answers: yes/no, SQuAD v1.1 exact match and F1, ROUGE-L, multiple choice."""

from __future__ import annotations

import functools
import importlib
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gpuprof.client.wire.errors import GpuprofError, UsageError

__all__ = ["best_choice", "exact_match", "normalize_answer", "rouge_l", "token_f1", "yes_no"]

_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_LEAD_IN_WORDS = {"answer", "final"}  # with any word ending in ':', a label before the answer ("Answer: yes")
YES_NO_WINDOW = 3  # how many leading words may hold the answer
_EDGE_PUNCTUATION_RE = re.compile(r"^[\W_]+|[\W_]+$")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def _core(word: str) -> str:
    """``word`` without the punctuation around it."""
    return _EDGE_PUNCTUATION_RE.sub("", word)


def yes_no(text: str) -> str | None:
    """ "yes" or "no" when a generated answer opens with yes/true or no/false, else None."""
    words = [(word, _core(word).lower()) for word in text.split()]
    for word, core in [pair for pair in words if pair[1]][:YES_NO_WINDOW]:
        if core in _YES_NO:
            return _YES_NO[core]
        if not (word.endswith(":") or core in _LEAD_IN_WORDS):
            return None
    return None


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles a/an/the, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def _require(references: Sequence[object], metric: str) -> None:
    if not references:
        raise UsageError(f"{metric} needs at least one reference answer, got none")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    _require(golds, "exact_match")
    predicted = normalize_answer(prediction)
    return max(float(predicted == normalize_answer(gold)) for gold in golds)


def _f1(predicted: list[str], gold: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0  # also when both are empty, as in SQuAD v1.1's script
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD's token-level F1 of the normalised prediction against the best-matching gold answer."""
    _require(golds, "token_f1")
    predicted = normalize_answer(prediction).split()
    return max(_f1(predicted, normalize_answer(gold).split()) for gold in golds)


@functools.cache
def _rouge_scorer() -> Any:
    """One ROUGE-L scorer (Porter stemming) for the process; building one loads the stemmer."""
    try:
        # imported by name: rouge-score is optional and ships no type stubs
        rouge_scorer = importlib.import_module("rouge_score.rouge_scorer")
    except ImportError as exc:
        raise GpuprofError("rouge_l needs the rouge-score package: pip install rouge-score") from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure of the prediction against the best-matching reference (package ``rouge_score``)."""
    _require(references, "rouge_l")
    scorer = _rouge_scorer()
    return max(float(scorer.score(reference, prediction)["rougeL"].fmeasure) for reference in references)


def best_choice(loglikelihoods: Sequence[float]) -> int:
    """The index of the most likely choice; the first one on ties."""
    _require(loglikelihoods, "best_choice")
    if any(math.isnan(value) for value in loglikelihoods):
        raise UsageError(f"best_choice got a NaN log-likelihood: {list(loglikelihoods)}")
    return max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
