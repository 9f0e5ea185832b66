"""Checking the student's quote against the evidence.

A small model copies well but not perfectly: it may drop a word, or write a figure or a
name the evidence does not hold. The quote is accepted only when it matches one evidence
sentence closely *and* every figure and name it states is that sentence's own. The answer
is then built from the evidence itself (``Evidence.answer_from``: the quoted sentence, its
lead-in and the best other sentences of its passage), so what the user reads is always the
documents' own text with its citation. When the quote fails, the answer is the evidence's
best sentence, verbatim, and the route says so.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from domainkit.answer.evidence import Evidence, EvidenceSentence
from domainkit.prompting import Quote, readable
from domainkit.retrieval.terms import normalize_word, specific_terms, surface_words

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
MIN_SIMILARITY = 0.85


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", readable(text).lower()).split())


_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000"}


def _figures(text: str) -> set[str]:
    """The figures a text states, in digits ("two years" and "2 years" agree)."""
    words = {_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS}
    return {n.replace(",", "") for n in _NUMBER.findall(text)} | words


def _names(text: str) -> set[str]:
    return {normalize_word(t) for t in specific_terms(text) if not _NUMBER.fullmatch(t)}


def match_quote(quote: Quote | None, evidence: Evidence) -> EvidenceSentence | None:
    """The evidence sentence the quote reproduces, or None when it reproduces none.

    A quote matches a sentence when their normalized texts are equal, one contains most of
    the other, or they are at least ``MIN_SIMILARITY`` alike; and its figures and names all
    occur in that sentence. The sentence of the cited passage wins ties.
    """
    if quote is None or len(_norm(quote.text)) < 8:
        return None
    said = _norm(quote.text)
    best, best_score = None, 0.0
    for sentence in evidence.sentences:
        text = _norm(sentence.text)
        if said == text:
            score = 1.0
        elif said in text or text in said:
            score = min(len(said), len(text)) / max(len(said), len(text))
            score = 0.9 if score >= 0.6 else score
        else:
            score = SequenceMatcher(None, said, text, autojunk=False).ratio()
        score += 0.01 * (sentence.number == quote.number)
        if score > best_score:
            best, best_score = sentence, score
    if best is None or best_score < MIN_SIMILARITY:
        return None
    if not _figures(quote.text) <= _figures(best.text) | _lead_figures(best, evidence):
        return None
    if not _names(quote.text) <= {normalize_word(w) for w in surface_words(best.text)}:
        return None
    return best


def _lead_figures(sentence: EvidenceSentence, evidence: Evidence) -> set[str]:
    lead = evidence.lead_of(sentence)
    return _figures(lead.text) if lead else set()
