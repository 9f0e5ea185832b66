"""Whether a reply declines to answer.

Both the runtime (a generated reply that refuses is the model's own decision) and eval (a
refusal is scored as one) ask this, so it sits below both.
"""

from __future__ import annotations

import re
import string
from collections import Counter

ARTICLES = {"a", "an", "the"}
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
_PUNCTUATION_TO_SPACE = str.maketrans(string.punctuation, " " * len(string.punctuation))
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def tokens(text: str) -> list[str]:
    """Lower-cased words without punctuation or articles (SQuAD normalisation)."""
    text = text.lower().translate(_PUNCTUATION_TO_SPACE)
    return [t for t in text.split() if t not in ARTICLES]


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


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
