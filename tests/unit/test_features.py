"""Prompt features: entropy, densities, the entity heuristic, the causal rule, complexity, spaCy selection."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from gpuprof.client.wire.errors import GpuprofError, UsageError
from gpuprof.daemon.worker.llm.features import (
    FeatureExtractor,
    PromptFeatures,
    causal_question_score,
    complexity_score,
    heuristic_entity_tokens,
    reasoning_marker_count,
    token_entropy_bits,
)


@pytest.fixture
def extractor() -> FeatureExtractor:
    return FeatureExtractor(ner="heuristic")


@pytest.mark.parametrize(
    ("token_ids", "bits"),
    [
        ([1, 1, 2, 2], 1.0),
        ([10, 20, 30, 40], 2.0),
        ([1, 1, 1, 1, 1, 1, 1, 2], -(7 / 8) * math.log2(7 / 8) - (1 / 8) * math.log2(1 / 8)),
        ([5, 5, 5], 0.0),
        ([7], 0.0),
        ([], 0.0),
    ],
)
def test_token_entropy_is_shannon_entropy_in_bits(token_ids: list[int], bits: float) -> None:
    assert token_entropy_bits(token_ids) == pytest.approx(bits, abs=1e-12)


def test_counts_and_ratios(extractor: FeatureExtractor) -> None:
    features = extractor.features("Paris is in France.", [1, 1, 2, 2, 3, 4])
    assert features.input_tokens == 6
    assert features.input_chars == 19
    assert features.unique_token_ratio == pytest.approx(4 / 6)
    assert features.entity_method == "heuristic"


def test_empty_prompt_has_zero_features(extractor: FeatureExtractor) -> None:
    features = extractor.features("", [])
    assert features == PromptFeatures(0, 0, 0.0, 0.0, 0.0, "heuristic", 0.0, 0.0, 0.0)


def test_token_ids_may_be_any_integer_sequence(extractor: FeatureExtractor) -> None:
    assert extractor.features("x", range(4)).token_entropy_bits == 2.0


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ("Barack Obama visited Paris in 2009.", 3),  # Barack opens the sentence; 2009 has a digit
        ("NASA launched the probe.", 1),  # an acronym counts even at a sentence start
        ("Yesterday I met Ada Lovelace in London.", 3),  # "I" is not an entity
        ("The cat sat. Dogs bark! Birds sing?", 0),  # every capital opens a sentence
        ("Question: Who wrote Hamlet?", 1),  # a colon ends a label, so Who opens a sentence
        ("first line\nSecond line", 0),  # a line starts a sentence
        ("It costs $5 on 3/4/2021.", 2),
        ("we met (Alice) and “Bob”.", 2),  # punctuation around a word is ignored
        ("visit New York City soon", 3),  # consecutive capitals count one each
        ("", 0),
    ],
)
def test_heuristic_entity_tokens(text: str, entities: int) -> None:
    assert heuristic_entity_tokens(text) == entities


def test_entity_density_is_per_whitespace_word(extractor: FeatureExtractor) -> None:
    assert extractor.features("Barack Obama visited Paris in 2009.", [1]).entity_density == 0.5


@pytest.mark.parametrize(
    ("text", "markers"),
    [
        ("If it rains, then the ground is wet because water falls.", 3),
        ("As a result, we left in order to rest.", 2),  # phrases count once each
        ("BECAUSE Why HOW", 3),  # case-insensitive
        ("Iffy, thence, somehow.", 0),  # whole words only
    ],
)
def test_reasoning_markers(text: str, markers: int) -> None:
    assert reasoning_marker_count(text) == markers


def test_reasoning_density_is_per_word(extractor: FeatureExtractor) -> None:
    text = "If it rains, then the ground is wet because water falls."
    assert extractor.features(text, [1]).reasoning_marker_density == pytest.approx(3 / 11)


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Why does ice float?", 1.0),
        ("Paris is in France.", 0.0),
        ("Question: How do magnets work?", 1.0),
        ("what happens if you heat ice", 1.0),
        ("Water boils at 100 C. Explain why.", 1.0),  # any sentence may ask
        ("How are you?", 0.0),  # not every "how" asks for a mechanism
        ("It fell because it was heavy.", 0.25),
        ("It fell because it was heavy; therefore it broke, as a result of which we left.", 0.5),
    ],
)
def test_causal_question_score(text: str, score: float) -> None:
    assert causal_question_score(text) == score


def test_complexity_weights_by_hand(extractor: FeatureExtractor) -> None:
    features = extractor.features("Paris is in France.", [1, 2, 3, 4])
    # length log2(5)/log2(2049), entropy 2/2 = 1, entities min(1, 5 * 1/4) = 1, reasoning 0, causal 0
    expected = 0.25 * math.log2(5) / math.log2(2049) + 0.20 * 1 + 0.15 * 1
    assert features.complexity_score == pytest.approx(expected)


def test_complexity_reaches_both_ends() -> None:
    assert complexity_score(0, 0.0, 0.0, 0.0, 0.0) == 0.0
    assert complexity_score(2048, 11.0, 1.0, 1.0, 1.0) == 1.0
    assert complexity_score(100_000, math.log2(100_000), 3.0, 3.0, 1.0) == 1.0


@pytest.mark.parametrize(
    "text",
    ["", "Why does ice float?", "NASA NASA NASA 1 2 3 because if then why how", "Paris is in France."],
)
@pytest.mark.parametrize("tokens", [0, 1, 2, 50, 5000])
def test_complexity_stays_in_unit_interval(extractor: FeatureExtractor, text: str, tokens: int) -> None:
    assert 0.0 <= extractor.features(text, [i % 7 for i in range(tokens)]).complexity_score <= 1.0


def test_complexity_grows_with_length_until_the_scale(extractor: FeatureExtractor) -> None:
    text = "Why does ice float on water?"
    scores = [extractor.features(text, list(range(n))).complexity_score for n in (2, 16, 256, 2048, 4096)]
    assert scores[0] < scores[1] < scores[2] < scores[3]
    assert scores[3] == scores[4]  # 2048 tokens and more saturate the length term


def test_to_dict_has_every_field(extractor: FeatureExtractor) -> None:
    assert extractor.features("Why?", [3, 3]).to_dict() == {
        "input_tokens": 2,
        "input_chars": 4,
        "token_entropy_bits": 0.0,
        "unique_token_ratio": 0.5,
        "entity_density": 0.0,
        "entity_method": "heuristic",
        "reasoning_marker_density": 1.0,
        "causal_question_score": 1.0,
        "complexity_score": pytest.approx(0.25 * math.log2(3) / math.log2(2049) + 0.20 + 0.20),
    }


@pytest.mark.parametrize("ner", ["spacy", "spacy:", "bert", ""])
def test_unknown_ner_choice_is_a_usage_error(ner: str) -> None:
    with pytest.raises(UsageError, match="heuristic"):
        FeatureExtractor(ner=ner)


def test_auto_without_spacy_uses_the_heuristic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` fail
    assert FeatureExtractor().method == "heuristic"


def test_named_spacy_pipeline_without_spacy_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(GpuprofError, match="pip install spacy"):
        FeatureExtractor(ner="spacy:en_core_web_sm")


def test_missing_spacy_pipeline_is_a_clear_error() -> None:
    # without spaCy installed the error says to install it; with it, that the pipeline cannot be loaded
    with pytest.raises(GpuprofError, match=r"cannot load spaCy pipeline|needs spaCy") as caught:
        FeatureExtractor(ner="spacy:/nonexistent")
    assert "/nonexistent" in str(caught.value)


def test_spacy_pipeline_from_a_path_counts_its_entity_tokens(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "GPE", "pattern": [{"LOWER": "paris"}]},
            {"label": "GPE", "pattern": [{"LOWER": "new"}, {"LOWER": "york"}]},
        ]
    )
    path = tmp_path / "ruler_pipeline"
    nlp.to_disk(path)

    extractor = FeatureExtractor(ner=f"spacy:{path}")
    # lower case, so the heuristic would find no entity: the 3 entity tokens come from the ruler
    features = extractor.features("we flew from paris to new york today.", [1, 2, 3])
    assert extractor.method == f"spacy:{path}"
    assert features.entity_method == f"spacy:{path}"
    assert features.entity_density == 3 / 8
