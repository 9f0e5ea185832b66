"""Answer metrics: token F1, key-fact recall, refusal detection, faithfulness to passages,
and yes / no / maybe labels (PubMedQA-style references).

All are lexical and deterministic, so they run anywhere without a judge model; an LLM
judge is added by the runner when a teacher endpoint is configured.
"""

from __future__ import annotations

import re

from domainkit.answer.refusal import ARTICLES, REFUSAL_PHRASES, is_refusal, token_f1, tokens

__all__ = ["REFUSAL_PHRASES", "is_refusal", "token_f1", "tokens"]

_STOP = ARTICLES | set(
    [
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "you",
        "your",
        "yours",
        "we",
        "our",
        "us",
        "they",
        "their",
        "them",
        "he",
        "she",
        "his",
        "her",
        "i",
        "me",
        "my",
        "do",
        "does",
        "did",
        "done",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "not",
        "no",
        "yes",
        "have",
        "has",
        "had",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "about",
        "into",
        "over",
        "under",
        "than",
        "too",
        "very",
        "just",
        "also",
        "only",
        "any",
        "all",
        "each",
        "some",
        "such",
        "own",
        "same",
        "other",
        "more",
        "most",
        "up",
        "down",
        "out",
        "off",
        "again",
        "please",
        "thank",
        "thanks",
    ]
)
LABELS = ("yes", "no", "maybe")


def _stem(word: str) -> str:
    return word[:6] if not any(c.isdigit() for c in word) else word


def key_facts(reference: str) -> set[str]:
    """The reference's content words and numbers, crudely stemmed: what an answer must say."""
    return {_stem(t) for t in tokens(reference) if t not in _STOP and (len(t) > 2 or t.isdigit())}


def key_fact_recall(prediction: str, reference: str) -> float:
    """Share of the reference's key facts the prediction contains."""
    facts = key_facts(reference)
    if not facts:
        return token_f1(prediction, reference)
    said = {_stem(t) for t in tokens(prediction)}
    return len(facts & said) / len(facts)


def label_of(text: str) -> str | None:
    """The first yes / no / maybe in ``text``, for yes-no-maybe references."""
    for word in tokens(text):
        if word in LABELS:
            return word
    return None


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, articles or extra spaces."""
    return " ".join(tokens(text))


def is_correct(
    prediction: str, reference: str, refusal_wording: str = "", spans: list[str] | None = None
) -> bool:
    """An answer is correct when it does not refuse and contains one of the accepted
    ``spans`` (SQuAD-normalized), when there are any; otherwise when it says the
    reference's label (yes / no / maybe references) or at least half its key facts."""
    if is_refusal(prediction, refusal_wording):
        return False
    if spans:
        said = f" {normalize_answer(prediction)} "
        return any(f" {normalize_answer(span)} " in said for span in spans if span.strip())
    if reference.strip().lower() in LABELS:
        return label_of(prediction) == reference.strip().lower()
    return key_fact_recall(prediction, reference) >= 0.5


def support(answer: str, passages: list[str]) -> float:
    """Faithfulness: share of the answer's content words found in the passages it was
    given (1.0 for an answer with no content words)."""
    words = {_stem(t) for t in tokens(answer) if t not in _STOP and not re.fullmatch(r"\d", t)}
    if not words:
        return 1.0
    seen = {_stem(t) for p in passages for t in tokens(p)}
    return len(words & seen) / len(words)
