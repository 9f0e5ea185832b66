"""Parsing of teacher replies and each synth filter on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from domainkit.config.schema import SynthFilterConfig
from domainkit.synth.filters import (
    FilterLog,
    GroundingScorer,
    decontaminate,
    drop_near_duplicates,
    mask_pii,
    text_problem,
)
from domainkit.synth.parsing import clean_reply, fact_sentences, parse_question, repetition_ratio
from domainkit.synth.sample import Sample

from .conftest import HashEmbedder


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("How long is the warranty?", "How long is the warranty?"),
        ("1. how long is the warranty?\n2. Another one?", "How long is the warranty?"),
        ('A customer could ask: "How long is the warranty?"', "How long is the warranty?"),
        ("Question: How long is the warranty?\nAnswer: two years", "How long is the warranty?"),
        ("Sure. How long is the warranty? It depends.", "How long is the warranty?"),
        ("The warranty lasts two years.", None),
        ("", None),
        ("Why?", None),
    ],
)
def test_parse_question(reply, question):
    assert parse_question(reply) == question


def test_clean_reply_cuts_where_the_model_writes_the_next_turn():
    reply = "Answer: It lasts two years.\n\nQuestion: And returns?\nAnswer: 30 days."
    assert clean_reply(reply) == "It lasts two years."
    assert clean_reply('"Plain answer."') == "Plain answer."


def test_fact_sentences_prefer_figures_and_keep_passage_order():
    text = (
        "Welcome to our guide for new owners of the speaker.\n"
        "| Product | Price |\n"
        "- Returns are accepted within 30 days of delivery for a full refund.\n"
        "Short line.\n"
        "The Talon plays for 18 hours and charges in 3 hours over USB-C."
    )
    assert fact_sentences(text, 2) == [
        "Returns are accepted within 30 days of delivery for a full refund.",
        "The Talon plays for 18 hours and charges in 3 hours over USB-C.",
    ]


def test_length_and_repetition_checks():
    settings = SynthFilterConfig(min_answer_words=3, max_answer_words=10)
    assert text_problem("Two years.", settings, kind="answer") == "answer of 2 words"
    assert text_problem("word " * 11, settings, kind="answer") == "answer of 11 words"
    looping = "how to install the latest firmware " * 4
    assert repetition_ratio(looping) > 0.3
    assert text_problem(looping, SynthFilterConfig(), kind="answer") == "repetitive text"
    assert text_problem("It lasts two years from delivery.", settings, kind="answer") is None


def test_grounding_scores_support_and_zeroes_invented_figures():
    embedder = HashEmbedder()
    source = "The Talon plays for 18 hours on a charge and charges in 3 hours."
    scorer = GroundingScorer(embedder, threshold=0.5)
    answers = [
        "The Talon plays for 18 hours on a charge.",
        "The Talon plays for 24 hours on a charge.",
        "Our headquarters moved to a new city last spring.",
    ]
    vectors = embedder.embed([source] * 3)
    supported, invented, unrelated = scorer.score(answers, [source] * 3, vectors)
    assert supported["grounding"] > 0.8 and supported["invented_numbers"] == 0
    assert invented["grounding"] == 0 and invented["invented_numbers"] == 1
    assert unrelated["grounding"] < 0.3


def _sample(question, generator="qa", chunk="c1"):
    return Sample(
        [{"role": "user", "content": question}, {"role": "assistant", "content": "a"}],
        generator,
        chunk,
        "doc.md",
        "t",
    )


def test_near_duplicates_are_dropped_within_a_generator_only():
    log = FilterLog()
    samples = [
        _sample("How long is the warranty?"),
        _sample("how long is the warranty"),
        _sample("How long is the warranty?", generator="raft"),
        _sample("Can I return a soundbar?"),
    ]
    kept = drop_near_duplicates(samples, HashEmbedder(), 0.95, log)
    assert [s.question for s in kept] == [
        "How long is the warranty?",
        "How long is the warranty?",
        "Can I return a soundbar?",
    ]
    assert log.counts == {"near_duplicate": 1}


def test_decontamination_removes_samples_close_to_eval_questions():
    log = FilterLog()
    samples = [
        _sample("How many days do I have to return a speaker I do not like?"),
        _sample("What colour is the status light during pairing?"),
    ]
    kept = decontaminate(
        samples, ["How many days do I have to return a speaker?"], HashEmbedder(), 0.85, log
    )
    assert [s.question for s in kept] == ["What colour is the status light during pairing?"]
    assert log.counts == {"eval_overlap": 1}


def test_pii_masking():
    text = (
        "Mail jane.doe@example.com or call +44 1632 960 417; card 4111 1111 1111 1111 "
        "but order 1234 5678 stays, as does model KP-200."
    )
    masked = mask_pii(text)
    assert "[EMAIL]" in masked and "[PHONE]" in masked and "[CARD]" in masked
    assert "jane.doe" not in masked and "4111" not in masked
    assert "order 1234 5678" in masked and "KP-200" in masked


def test_sample_roundtrips_through_a_dataset_row():
    sample = _sample("Q?")
    sample.scores = {"grounding": 0.7}
    sample.meta = {"fact": "F."}
    assert Sample.from_row(sample.to_row()) == sample
    assert np.isclose(Sample.from_row(sample.to_row()).scores["grounding"], 0.7)
