"""Corpus statistics for lexical evidence scoring and the answerability gate.

BM25 ranks whole passages; evidence selection and the gate need per-term facts instead:
how rare a question's term is in the corpus (its IDF, to weigh lexical overlap), and
whether a name, model number or figure the question names occurs in the documents at all
(a question about the "Falcon" speaker cannot be answered from documents that never
mention one).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property

from domainkit.retrieval.bm25 import content_terms

_WORD = re.compile(r"[A-Za-z0-9][\w'’.+-]*[A-Za-z0-9]|[A-Za-z0-9]")
_HAS_DIGIT = re.compile(r"\d")
# A quantity, price, year or time of day ("37", "2,150", "£4.99", "7am", "23rd", "1990s"):
# a figure, not a model number or code ("KP-200", "E401", "2.8.3").
_FIGURE = re.compile(r"[£$€]?\d+(?:,\d{3})*(?:[.:]\d+)?(?:%|am|pm|st|nd|rd|th|s)?", re.I)
_CONTRACTION = re.compile(r"(?:i|you|we|they|he|she|it|that|there)'(?:m|s|ve|ll|d|re)")
# Words that open or fill questions in capitals without naming anything.
_NOT_NAMES = frozenset(
    "i a an the what when where which who whom whose why how is are was were do does did "
    "can could should would will shall may might must if my our your their it its is this "
    "that these those there please hi hello hey ok okay yes no and or but so also then".split()
)


def surface_words(text: str) -> list[str]:
    """Words as written (letters, digits, inner hyphens, dots and apostrophes)."""
    return [w.rstrip(".") for w in _WORD.findall(text)]


def normalize_word(word: str) -> str:
    return word.lower().replace("’", "'").removesuffix("'s")


def specific_terms(question: str) -> list[str]:
    """The question's names, model numbers and figures, as written.

    A name is a capitalised word that does not open a sentence (or an all-capitals word,
    anywhere); a model number or figure is any word with a digit. These are the terms a
    near-miss question swaps: answering about them requires the documents to mention them.
    """
    found = []
    opens = True  # the next word opens a sentence
    for match in _WORD.finditer(question):
        word = match.group().rstrip(".")
        lowered = normalize_word(word)
        after = question[match.end() : match.end() + 2]
        starts, opens = opens, bool(re.match(r"\.?[.!?:]", after)) or match.group().endswith(".")
        if lowered in _NOT_NAMES or _CONTRACTION.fullmatch(lowered):
            continue
        is_code = bool(_HAS_DIGIT.search(word))
        is_acronym = len(word) >= 2 and word.isupper()
        is_name = word[0].isupper() and not starts
        if is_code or is_acronym or is_name:
            found.append(word)
    return found


class CorpusVocabulary:
    """Document frequencies of the corpus's stemmed content terms, and its surface words.

    Args:
        texts: The passages (with their headings) of the corpus.
    """

    def __init__(self, texts: Sequence[str]):
        self.size = len(texts)
        self.df: Counter[str] = Counter()
        for terms in content_terms(list(texts)):
            self.df.update(set(terms))
        self._texts = texts

    @cached_property
    def words(self) -> frozenset[str]:
        """Every surface word of the corpus, lower-cased, plus its parts split at hyphens."""
        words: set[str] = set()
        for text in self._texts:
            for word in surface_words(text):
                lowered = normalize_word(word)
                words.add(lowered)
                words.update(p for p in re.split(r"[-/.]", lowered) if p)
        return frozenset(words)

    def idf(self, term: str) -> float:
        """Smoothed inverse document frequency; unseen terms get the highest weight."""
        return math.log(1 + (self.size + 1) / (self.df.get(term, 0) + 0.5))

    def knows(self, word: str) -> bool:
        """Whether the corpus uses this word (case-insensitive; a plural counts as known
        when its singular is, a hyphenated word when all its parts are)."""
        lowered = normalize_word(word)
        if lowered in self.words or _singular(lowered) in self.words:
            return True
        parts = [p for p in re.split(r"[-/.]", lowered) if p]
        return len(parts) > 1 and all(p in self.words for p in parts)

    def novel_share(self, question: str) -> float:
        """Share of the question's content terms (stemmed) that the corpus never uses."""
        terms = set(content_terms([question])[0])
        return sum(self.df.get(t, 0) == 0 for t in terms) / len(terms) if terms else 0.0

    def unknown_specific_terms(self, question: str) -> list[str]:
        """The question's names and codes the corpus never uses.

        Figures do not count: "I got 37 overall" or "arrive at 7am" describe the asker's
        case, and a figure the documents do not give ("is the warranty 5 years?") still
        has an answer, the one they do give. Near misses never swap figures either
        (``synth.facts.near_miss``)."""
        return [
            t for t in specific_terms(question) if not _FIGURE.fullmatch(t) and not self.knows(t)
        ]


def _singular(word: str) -> str:
    """ "sundays" -> "sunday", "classes" -> "class"; other words unchanged."""
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def weighted_coverage(
    question_terms: Iterable[str], text_terms: Iterable[str], vocabulary: CorpusVocabulary
) -> float:
    """IDF-weighted share of the question's terms that occur in a text (0-1)."""
    wanted = set(question_terms)
    if not wanted:
        return 0.0
    present = set(text_terms)
    total = sum(vocabulary.idf(t) for t in wanted)
    return sum(vocabulary.idf(t) for t in wanted & present) / total


# A text whose best sentence holds this much of a fact's (IDF-weighted) terms restates it.
RESTATES = 0.6


def restates(fact: str, text: str, vocabulary: CorpusVocabulary) -> bool:
    """Whether one sentence of ``text`` states (most of) ``fact`` too."""
    from domainkit.retrieval.units import text_units

    fact_terms = content_terms([fact])[0]
    sentences = [text[u.start : u.end] for u in text_units(text)]
    return (
        any(
            weighted_coverage(fact_terms, terms, vocabulary) >= RESTATES
            for terms in content_terms(sentences)
        )
        if sentences
        else False
    )
