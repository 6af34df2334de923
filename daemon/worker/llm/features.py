"""Per-prompt input features that are correlated with inference energy (Maliakel et al., arXiv 2501.08219).

Words are the whitespace-split tokens of the prompt text; densities are counts per word. ``docs/features.md``
gives every formula. Named-entity tokens come from a spaCy pipeline when one is available, else from this
heuristic, which counts a word (surrounding punctuation stripped) as an entity token when

- it contains a digit (numbers, dates, quantities), or
- it is an all-caps acronym: at least two letters, all upper case ("NASA", "U.S."), wherever it stands, or
- it starts with an upper-case letter and is not at a sentence start; a sentence starts at the first word of
  each line and after a word ending in ``.``, ``!``, ``?`` or ``:`` (closing quotes and brackets ignored).
  The pronoun "I" and its contractions ("I'm") are not entities.

Consecutive capitalised words ("New York City") count one each. ``entity_method`` records which counter ran.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpuprof.client.wire.errors import GpuprofError, UsageError

__all__ = [
    "CAUSAL_CONNECTIVES",
    "CAUSAL_OPENERS",
    "COMPLEXITY_WEIGHTS",
    "LENGTH_SCALE_TOKENS",
    "REASONING_MARKERS",
    "SPACY_PIPELINES",
    "FeatureExtractor",
    "PromptFeatures",
    "causal_question_score",
    "complexity_score",
    "heuristic_entity_tokens",
    "reasoning_marker_count",
    "token_entropy_bits",
]

# The spaCy pipelines ner="auto" tries, in this order.
SPACY_PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")

REASONING_MARKERS = (
    "because",
    "therefore",
    "thus",
    "hence",
    "since",
    "so that",
    "if",
    "then",
    "why",
    "how",
    "explain",
    "consequently",
    "as a result",
    "in order to",
    "which means",
    "due to",
    "leads to",
    "implies",
    "otherwise",
    "unless",
)

# A sentence that starts with one of these asks for a cause or a mechanism.
CAUSAL_OPENERS = (
    "why",
    "how does",
    "how do",
    "how did",
    "how can",
    "how could",
    "how would",
    "what causes",
    "what caused",
    "what happens if",
    "what happens when",
    "what would happen if",
    "what would happen when",
    "what is the reason",
    "what was the reason",
    "what are the reasons",
    "what is the cause",
    "what are the causes",
    "what leads to",
    "what led to",
    "explain why",
    "explain how",
    "for what reason",
)

CAUSAL_CONNECTIVES = (
    "because",
    "therefore",
    "thus",
    "hence",
    "consequently",
    "as a result",
    "due to",
    "caused by",
    "leads to",
    "led to",
    "results in",
    "so that",
    "in order to",
    "which means",
)

CONNECTIVE_CREDIT = 0.25  # causal score per connective when no sentence opens causally
CONNECTIVE_CREDIT_CAP = 0.5

LENGTH_SCALE_TOKENS = 2048  # the prompt length whose length term reaches 1
COMPLEXITY_WEIGHTS = {"length": 0.25, "entropy": 0.20, "entities": 0.15, "reasoning": 0.20, "causal": 0.20}


def _phrase_pattern(phrases: Sequence[str], anchored: bool = False) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern matching any of ``phrases``, longest first."""
    alternatives = "|".join(
        r"\s+".join(map(re.escape, phrase.split())) for phrase in sorted(phrases, key=len, reverse=True)
    )
    return re.compile(("^" if anchored else r"\b") + f"(?:{alternatives})" + r"\b", re.IGNORECASE)


_REASONING_RE = _phrase_pattern(REASONING_MARKERS)
_OPENER_RE = _phrase_pattern(CAUSAL_OPENERS, anchored=True)
_CONNECTIVE_RE = _phrase_pattern(CAUSAL_CONNECTIVES)
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_QUESTION_LABEL_RE = re.compile(r"^(?:question|q)\s*:\s*", re.IGNORECASE)
_PRONOUN_I_RE = re.compile(r"^I(?:['’][a-z]+)?$")
_EDGE_PUNCTUATION_RE = re.compile(r"^[\W_]+|[\W_]+$")
_CLOSERS = "\"'”’)]}»"


@dataclass(frozen=True)
class PromptFeatures:
    """The input features of one prompt."""

    input_tokens: int
    input_chars: int
    token_entropy_bits: float
    unique_token_ratio: float
    entity_density: float
    entity_method: str
    reasoning_marker_density: float
    causal_question_score: float
    complexity_score: float

    def to_dict(self) -> dict[str, float | int | str]:
        """The features by field name."""
        return dataclasses.asdict(self)


def token_entropy_bits(token_ids: Sequence[int]) -> float:
    """Shannon entropy in bits of the token ids' empirical distribution; 0.0 for one distinct id or none."""
    counts = Counter(token_ids)
    if len(counts) <= 1:
        return 0.0
    total = len(token_ids)
    return -math.fsum(c / total * math.log2(c / total) for c in counts.values())


def _core(word: str) -> str:
    """``word`` without the punctuation around it."""
    return _EDGE_PUNCTUATION_RE.sub("", word)


def _is_acronym(core: str) -> bool:
    letters = [ch for ch in core if ch.isalpha()]
    return len(letters) >= 2 and all(ch.isupper() for ch in letters)


def _ends_sentence(word: str) -> bool:
    return word.rstrip(_CLOSERS).endswith((".", "!", "?", ":"))


def _looks_like_entity(core: str, at_sentence_start: bool) -> bool:
    if any(ch.isdigit() for ch in core) or _is_acronym(core):
        return True
    return core[0].isupper() and not at_sentence_start and not _PRONOUN_I_RE.match(core)


def heuristic_entity_tokens(text: str) -> int:
    """How many whitespace words of ``text`` look like named-entity tokens (the module docstring's rule)."""
    count = 0
    for line in text.splitlines():
        previous: str | None = None
        for word in line.split():
            core = _core(word)
            at_sentence_start = previous is None or _ends_sentence(previous)
            previous = word
            if core and _looks_like_entity(core, at_sentence_start):
                count += 1
    return count


def reasoning_marker_count(text: str) -> int:
    """How many reasoning markers ``text`` holds, as non-overlapping whole-word phrases."""
    return len(_REASONING_RE.findall(text))


def causal_question_score(text: str) -> float:
    """1.0 when a sentence asks for a cause or mechanism, else 0.25 per causal connective up to 0.5."""
    for sentence in _SENTENCE_SPLIT_RE.split(text):
        opening = " ".join(_QUESTION_LABEL_RE.sub("", sentence.strip().lstrip("\"'“‘(*-# ")).split())
        if _OPENER_RE.match(opening):
            return 1.0
    return min(CONNECTIVE_CREDIT_CAP, CONNECTIVE_CREDIT * len(_CONNECTIVE_RE.findall(text)))


def complexity_score(
    input_tokens: int,
    entropy_bits: float,
    entity_density: float,
    reasoning_density: float,
    causal_score: float,
) -> float:
    """The weighted sum of the normalised features (weights ``COMPLEXITY_WEIGHTS``), in [0, 1]."""
    terms = {
        "length": min(1.0, math.log2(1 + input_tokens) / math.log2(1 + LENGTH_SCALE_TOKENS)),
        "entropy": min(1.0, entropy_bits / math.log2(max(input_tokens, 2))),
        "entities": min(1.0, 5 * entity_density),
        "reasoning": min(1.0, 10 * reasoning_density),
        "causal": causal_score,
    }
    score = math.fsum(COMPLEXITY_WEIGHTS[name] * value for name, value in terms.items())
    return min(1.0, max(0.0, score))  # rounding may step a hair past either end


EntityCounter = Callable[[str], int]


def _import_spacy() -> Any:
    return importlib.import_module("spacy")  # imported by name: spaCy is optional, and large


def _spacy_counter(nlp: Any) -> EntityCounter:
    """Entity tokens (sum of ``len(ent)`` over ``doc.ents``) according to the spaCy pipeline ``nlp``."""

    def count(text: str) -> int:
        return sum(len(ent) for ent in nlp(text).ents)

    return count


def _load_spacy(name: str) -> EntityCounter:
    """A counter from the spaCy pipeline ``name`` (a package or a path); GpuprofError when it cannot load."""
    try:
        spacy = _import_spacy()
    except ImportError as exc:
        raise GpuprofError(
            f"ner='spacy:{name}' needs spaCy, which is not installed: pip install spacy"
        ) from exc
    try:
        nlp = spacy.load(name)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise GpuprofError(
            f"cannot load spaCy pipeline {name!r} ({exc}); install it (python -m spacy download NAME), "
            "give the path of a saved pipeline, or use ner='heuristic'"
        ) from exc
    return _spacy_counter(nlp)


def _first_installed_pipeline() -> str | None:
    """The first of SPACY_PIPELINES that is installed; None when none is, or spaCy is not."""
    try:
        spacy = _import_spacy()
    except ImportError:
        return None
    return next((name for name in SPACY_PIPELINES if spacy.util.is_package(name)), None)


def _entity_counter(ner: str) -> tuple[EntityCounter, str]:
    """The entity counter that ``ner`` asks for, and its name for ``entity_method``."""
    if ner == "heuristic":
        return heuristic_entity_tokens, "heuristic"
    if ner == "auto":
        name = _first_installed_pipeline()
        if name is None:
            return heuristic_entity_tokens, "heuristic"
        return _load_spacy(name), f"spacy:{name}"
    name = ner.removeprefix("spacy:")
    if ner.startswith("spacy:") and name:
        return _load_spacy(name), ner
    raise UsageError(f"ner={ner!r}: expected 'auto', 'heuristic' or 'spacy:<pipeline name or path>'")


class FeatureExtractor:
    """Computes PromptFeatures; named entities from spaCy when a pipeline is available, else the heuristic."""

    method: str  # what PromptFeatures.entity_method says: "spacy:<ner's name or path>" or "heuristic"

    def __init__(self, ner: str = "auto") -> None:
        """``ner``: "auto", "heuristic" or "spacy:<pipeline name or path>"; a spaCy pipeline loads here."""
        self._count_entities, self.method = _entity_counter(ner)

    def features(self, text: str, token_ids: Sequence[int]) -> PromptFeatures:
        """The features of the prompt ``text``, tokenised as ``token_ids``."""
        ids = [int(token) for token in token_ids]  # plain ints: tensor elements do not hash by value
        words = len(text.split())
        entropy = token_entropy_bits(ids)
        entity_density = self._count_entities(text) / words if words else 0.0
        reasoning_density = reasoning_marker_count(text) / words if words else 0.0
        causal = causal_question_score(text)
        return PromptFeatures(
            input_tokens=len(ids),
            input_chars=len(text),
            token_entropy_bits=entropy,
            unique_token_ratio=len(set(ids)) / len(ids) if ids else 0.0,
            entity_density=entity_density,
            entity_method=self.method,
            reasoning_marker_density=reasoning_density,
            causal_question_score=causal,
            complexity_score=complexity_score(len(ids), entropy, entity_density, reasoning_density, causal),
        )
