"""Answer metrics: token F1, key-fact recall, refusal detection, faithfulness to passages,
and yes / no / maybe labels (PubMedQA-style references).

All are lexical and deterministic, so they run anywhere without a judge model; an LLM
judge is added by the runner when a teacher endpoint is configured.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = {"a", "an", "the"}
_STOP = _ARTICLES | set(
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
# Phrases that decline whatever they are said of.
REFUSAL_PHRASES = (
    "not in the documents",
    "not in the passages",
    "not mentioned",
    "no information",
    "don't have information",
    "do not have information",
    "couldn't find",
    "could not find",
    "cannot find",
    "can't find",
    "not able to answer",
    "unable to answer",
    "i don't know",
    "i do not know",
)
# "Does not cover", "doesn't say": a refusal when said of the documents ("the documents I
# have do not cover that"). The documents say it of their own subjects too ("damage the
# warranty does not cover"), and an answer quoting that is an answer.
_SOURCES = (
    r"(?:documents?|documentation|passages?|sources?|context|evidence|texts?|materials?|"
    r"information|manuals?|guides?|articles?|knowledge base)"
)
_SOURCES_DECLINE = re.compile(
    rf"\b{_SOURCES}\b(?:\s+[\w']+){{0,3}}?\s+(?:do|does|did|can|could)(?:n't|\s+not)\s+"
    r"(?:cover|say|mention|answer|contain|include|address|specify|state|provide|tell|discuss)"
    r"|(?:\bnot|n't) (?:covered|mentioned|given|stated) (?:in|by) (?:the |our |my )?"
    rf"(?:[\w-]+\s+){{0,2}}?{_SOURCES}\b"
)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def tokens(text: str) -> list[str]:
    """Lower-cased words without punctuation or articles (SQuAD normalisation)."""
    text = text.lower().translate(str.maketrans({c: " " for c in string.punctuation}))
    return [t for t in text.split() if t not in _ARTICLES]


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


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


def is_refusal(text: str, refusal_wording: str = "") -> bool:
    """Whether ``text`` declines to answer: the recipe's wording, or an opening sentence that
    declines ("I couldn't find that", "the documents do not cover it")."""
    lowered = text.lower().replace("’", "'").strip()
    if not lowered:
        return True
    if refusal_wording and token_f1(text, refusal_wording) >= 0.6:
        return True
    # A reply that declines says so first; a later sentence is the documents' own words.
    opening = _FIRST_SENTENCE.split(lowered, maxsplit=1)[0]
    return any(phrase in opening for phrase in REFUSAL_PHRASES) or bool(
        _SOURCES_DECLINE.search(opening)
    )


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
