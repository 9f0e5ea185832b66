"""Parsing of teacher replies and each synth filter on hand-made cases."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from domainkit.config.schema import SynthFilterConfig
from domainkit.ingest import Chunk
from domainkit.retrieval.terms import CorpusVocabulary
from domainkit.synth.facts import facts_of, near_miss, template_question
from domainkit.synth.filters import (
    FilterLog,
    decontaminate,
    drop_near_duplicates,
    text_problem,
)
from domainkit.synth.parsing import clean_reply, parse_question, repetition_ratio
from domainkit.synth.sample import Sample
from domainkit.utils.pii import mask_pii

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


def test_facts_prefer_figures_and_names_and_keep_passage_order():
    text = (
        "Welcome to our guide for new owners of the speaker.\n"
        "| Product | Price |\n"
        "You can return it if:\n"
        "- Returns are accepted within 30 days of delivery for a full refund.\n"
        "Short line.\n"
        "The Talon plays for 18 hours and charges in 3 hours over USB-C."
    )
    chunk = Chunk("c", text, "guide.md", "Guide", ("Returns",), 0, len(text))
    assert [f.text for f in facts_of(chunk, 2)] == [
        "Returns are accepted within 30 days of delivery for a full refund.",
        "The Talon plays for 18 hours and charges in 3 hours over USB-C.",
    ]


def test_template_questions_and_near_misses():
    text = "The Talon plays for 18 hours on a charge."
    chunk = Chunk("c", text, "battery.md", "Battery", ("Talon battery",), 0, len(text))
    vocabulary = CorpusVocabulary([chunk.embed_text, "The Perch KP-200 has no battery."])
    [fact] = facts_of(chunk, 1)
    question = template_question(fact, vocabulary)
    assert question.startswith("How long ") and question.endswith("?") and "Talon" in question
    assert "18" not in question, "the answer's figure is not in the question"
    rng = random.Random(0)
    swapped = near_miss("How long does the Talon play?", vocabulary, rng)
    assert swapped and "Talon" not in swapped and vocabulary.unknown_specific_terms(swapped)
    code = near_miss("Does the KP-200 have a battery?", vocabulary, rng)
    assert code and "KP-200" not in code and re.search(r"KP-\d{3}", code)
    assert near_miss("Can I return it within 45 days?", vocabulary, rng) is None


def test_length_and_repetition_checks():
    settings = SynthFilterConfig(max_question_words=8)
    assert text_problem("Why?", settings, kind="question") == "question of 1 words"
    assert text_problem("word " * 9, settings, kind="question") == "question of 9 words"
    looping = "how to install the latest firmware " * 4
    assert repetition_ratio(looping) > 0.3
    assert text_problem(looping, SynthFilterConfig(), kind="question") == "repetitive text"
    assert text_problem("How long is the warranty?", settings, kind="question") is None


def _sample(question, generator="raft", chunk="c1"):
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
        _sample("How long is the warranty?", generator="near_miss"),
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


def test_the_split_keeps_documents_whole_and_always_holds_some_out():
    from types import SimpleNamespace

    from domainkit.config.schema import DomainConfig
    from domainkit.synth.context import SynthContext

    chunks = [
        Chunk(f"{doc}-{i}", "text", f"doc{doc}.md", "T", (), i, i + 4)
        for doc in range(8)
        for i in range(5)
    ]
    retriever = SimpleNamespace(index=SimpleNamespace(chunks=chunks))
    for seed in range(20):  # whatever the hashes, some documents are held out
        config = DomainConfig(name="d", synth={"seed": seed, "validation_fraction": 0.2})
        ctx = SynthContext(config, None, retriever, None)
        held = [c for c in chunks if ctx.is_validation(c.id)]
        assert 5 <= len(held) <= 15
        for chunk in chunks:
            same = [ctx.is_validation(c.id) for c in chunks if c.source == chunk.source]
            assert len(set(same)) == 1, "a document is on one side only"
