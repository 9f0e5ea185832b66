"""Answers to repeats: a question that means the same as a reviewed one gets its verdict.

A reviewer has marked some users' questions (``domainkit review``): this line answers it,
or the documents do not. A new question is a repeat of one of them when its embedding is
at least ``threshold`` similar (calibrated at build time on questions that must not match:
about other facts of the same passage, or reviewed with other verdicts) *and* it names the
same things: the same names, model numbers and figures, and none the corpus never mentions
(a refusal's repeat may name more, if the corpus never mentions them: "ATM" for "cash
machine" cannot make a refused question answerable). Below ``SURE`` similarity (or the
calibrated cut, if higher), two more checks: reviewed lines answer a repeat only when the
repeat's own search finds one of their passages, and a reviewed refusal refuses one only when
the repeat's evidence is no better than the reviewed question's was, or its closest line is
one the reviewer was shown. "How long is the
Talon's warranty?" then repeats "For how many years is my Talon covered?", while "How long
is the Perch's warranty?", as similar to the eye, is not one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from domainkit.retrieval.terms import (
    CorpusVocabulary,
    normalize_word,
    specific_terms,
    surface_words,
)

# Without paraphrase pairs to calibrate on, a repeat must be about this similar; as similar,
# it is one whatever its own retrieval finds.
DEFAULT_THRESHOLD = 0.86
SURE = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Reviewed:
    """One reviewed question and its verdict.

    Attributes:
        question: As the user asked it (personal data masked).
        verdict: ``line`` (this line answers it) or ``not_in_docs`` (refuse).
        line: The id of the line the answer opens with, for ``line``.
        lines: The ids of all the answer's lines, in order (the opening one among them).
        chunks: The passages that hold them in the current index (``Chunk.to_dict``).
        dense: The reviewed question's best evidence similarity in the current index.
        seen: For a refusal, the ids of its evidence lines in the current index: what the
            reviewer who said the documents do not answer it was shown.
    """

    question: str
    verdict: str
    line: str | None = None
    lines: list[str] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)
    dense: float | None = None
    seen: list[str] = field(default_factory=list)


@dataclass
class Recall:
    """A repeat found: the reviewed question it repeats and how similar it is."""

    reviewed: Reviewed
    similarity: float


class ReviewedAnswers:
    """The reviewed questions of a build, searchable by meaning.

    Args:
        entries: The reviewed questions still valid against the current documents.
        vectors: Their embeddings (rows L2-normalized, as the embedder gives them).
        threshold: Least cosine similarity of a repeat.
    """

    def __init__(self, entries: Sequence[Reviewed], vectors: np.ndarray, threshold: float):
        self.entries, self.vectors, self.threshold = list(entries), vectors, threshold

    def __len__(self) -> int:
        return len(self.entries)

    def recall(
        self,
        question: str,
        vector: np.ndarray,
        vocabulary: CorpusVocabulary,
        retrieved: set[str] | None = None,
        dense: float | None = None,
        closest: str | None = None,
    ) -> Recall | None:
        """The reviewed question ``question`` repeats, if any (see the module docstring).

        Args:
            retrieved: The chunk ids the question's own search found.
            dense: The question's best evidence similarity.
            closest: The id of the question's most similar evidence line.
        """
        if not self.entries:
            return None
        similarities = self.vectors @ vector
        order = np.argsort(-similarities)
        unknown = vocabulary.unknown_specific_terms(question)
        for i in order[:5]:
            similarity = float(similarities[i])
            if similarity < self.threshold:
                break
            entry = self.entries[int(i)]
            # A line answers only about what the corpus knows; a refusal may stand for a
            # question about something it never mentions, which cannot make it answerable.
            if not same_things(
                entry.question, question, () if entry.verdict == "line" else unknown
            ):
                continue
            sure = similarity >= max(self.threshold, SURE)
            if entry.verdict == "line" and not unknown and (sure or _found(entry, retrieved)):
                return Recall(entry, similarity)
            seen = closest is not None and closest in entry.seen
            if entry.verdict != "line" and (sure or seen or _no_better(dense, entry.dense)):
                return Recall(entry, similarity)
        return None

    def save(self, path: Path) -> None:
        from domainkit.utils.atomic import atomic_write_json

        atomic_write_json(
            path,
            {
                "threshold": self.threshold,
                "entries": [asdict(e) for e in self.entries],
                "vectors": [[round(float(x), 6) for x in row] for row in self.vectors],
            },
        )

    @classmethod
    def load(cls, path: Path) -> ReviewedAnswers | None:
        """The build's reviewed answers, or None when it has none."""
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [Reviewed(**e) for e in data["entries"]]
        if not entries:
            return None
        vectors = np.asarray(data["vectors"], dtype=np.float32)
        return cls(entries, vectors, float(data["threshold"]))


def named_terms(question: str) -> frozenset[str]:
    """The names, model numbers and figures a question names (normalized); the log's
    masks of personal data (``[EMAIL]``) name nothing."""
    return frozenset(normalize_word(t) for t in specific_terms(_MASK.sub(" ", question)))


_MASK = re.compile(r"\[(?:EMAIL|PHONE|CARD|IBAN)\]")


# A repeat of a refused question may find evidence this much more similar and still be one.
DENSE_MARGIN = 0.05


def _found(entry: Reviewed, retrieved: set[str] | None) -> bool:
    """Whether the repeat's own search found a passage of the reviewed answer's lines."""
    if retrieved is None or entry.line is None:
        return retrieved is None
    return any(c["id"] in retrieved for c in entry.chunks)


def _no_better(dense: float | None, reviewed: float | None) -> bool:
    return dense is None or reviewed is None or dense <= reviewed + DENSE_MARGIN


def same_things(a: str, b: str, unknown: Iterable[str] = ()) -> bool:
    """Whether two questions name the same things: each one's names, model numbers and
    figures occur among the other's words, whatever their case ("perch" names the Perch).
    ``unknown`` are names of ``b`` that need not occur in ``a`` (the corpus never uses them)."""
    words_a, words_b = _words(a), _words(b)
    names_a = {_singular(t) for t in named_terms(a)}
    skipped = {_singular(normalize_word(t)) for t in unknown}
    names_b = {_singular(t) for t in named_terms(b)} - skipped
    return names_a <= words_b and names_b <= words_a


def _words(question: str) -> set[str]:
    return {_singular(normalize_word(w)) for w in surface_words(_MASK.sub(" ", question))}


def _singular(word: str) -> str:
    """``talons`` and ``sundays`` name what ``Talon`` and ``Sunday`` do; figures and model
    numbers (any digit) must match as written."""
    plural = len(word) > 3 and word.isalpha() and word.endswith("s") and not word.endswith("ss")
    return word[:-1] if plural else word
