"""Selecting the evidence: the sentences of the retrieved passages that bear on a question.

A small reader given four whole passages (~1,100 tokens) copies the wrong span most of the
time; given the few sentences that bear on the question it does far better (RECOMP, Xu et
al. 2024: the best sentence of the top documents beat the documents themselves, 60.2 vs
39.4 EM). So the retrieved passages are cut into sentences and list lines
(``retrieval.units``), each scored by dense similarity to the question (embedded with its
heading, which gives a bare sentence its topic) and by IDF-weighted overlap with the
question's terms. The best are
kept within a word budget, each with the lead-in it depends on (a list item's "You can
return it if:", a sentence opening with "It" or "This"), deduplicated across overlapping
passages. Every sentence keeps its passage, so it can be cited, and its exact character
span in the document.

Synth builds training samples with this same selector, so the student learns to read
exactly the evidence blocks the runtime will give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from domainkit.answer.answer_types import FIGURE, asks_for_figure, degree_words
from domainkit.config.schema import EvidenceConfig
from domainkit.ingest import Chunk
from domainkit.ingest.lines import line_id
from domainkit.retrieval.bm25 import content_terms
from domainkit.retrieval.terms import CorpusVocabulary, weighted_coverage
from domainkit.retrieval.units import Unit, text_units


@dataclass(frozen=True)
class EvidenceSentence:
    """One selected sentence.

    Attributes:
        text: The sentence, verbatim.
        chunk: The passage it comes from.
        start: Character offset in the document (``chunk.start`` + offset in the passage).
        end: End offset in the document (exclusive).
        score: Relevance to the question (dense and lexical combined).
        dense: Cosine similarity of question and sentence (with its heading).
        coverage: IDF-weighted share of the question's terms the sentence contains.
        number: Citation number of its passage in the evidence block.
        lead: Document span (start, end) of the lead-in it depends on, if any.
    """

    text: str
    chunk: Chunk
    start: int
    end: int
    score: float
    dense: float
    coverage: float
    number: int = 0
    lead: tuple[int, int] | None = None
    lead_in: bool = False

    @property
    def id(self) -> str:
        """The line's id, stable across rebuilds of its unchanged document (``ingest.lines``)."""
        return line_id(self.chunk, self.start, self.end)


@dataclass
class Evidence:
    """The evidence for one question: selected sentences grouped by passage.

    Attributes:
        question: The question.
        passages: The passages that contribute sentences, in citation order ([1] first).
        sentences: The selected sentences, by citation number, then document order.
        ranked: The selected sentences, best first.
        pool: The other scored sentences of the retrieved passages, best first: an answer
            may add those of its own passage.
    """

    question: str
    passages: list[Chunk] = field(default_factory=list)
    sentences: list[EvidenceSentence] = field(default_factory=list)
    ranked: list[EvidenceSentence] = field(default_factory=list)
    pool: list[EvidenceSentence] = field(default_factory=list)

    @property
    def best_dense(self) -> float:
        return max((s.dense for s in self.sentences), default=0.0)

    @property
    def best_coverage(self) -> float:
        return max((s.coverage for s in self.sentences), default=0.0)

    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def by_passage(self) -> list[tuple[int, Chunk, list[EvidenceSentence]]]:
        return [
            (n, chunk, [s for s in self.sentences if s.number == n])
            for n, chunk in enumerate(self.passages, start=1)
        ]

    def at(self, chunk_id: str, start: int) -> EvidenceSentence | None:
        """The selected sentence of passage ``chunk_id`` that starts at document offset
        ``start``, if the evidence holds it."""
        return next(
            (s for s in self.sentences if s.chunk.id == chunk_id and s.start == start), None
        )

    def lead_of(self, sentence: EvidenceSentence) -> EvidenceSentence | None:
        """The lead-in line ``sentence`` depends on, when it is in the evidence."""
        if sentence.lead is None:
            return None
        return next(
            (
                s
                for s in self.sentences
                if s.chunk.id == sentence.chunk.id and (s.start, s.end) == sentence.lead
            ),
            None,
        )

    def best(self) -> EvidenceSentence | None:
        """The highest-scoring sentence that is not a lead-in ("The options are:", a table's
        header row): a lead-in introduces facts without stating them. A sentence that a
        later "This ..." refers back to states a fact of its own and may be the answer."""
        for sentence in self.ranked:
            if not sentence.lead_in:
                return sentence
        return self.ranked[0] if self.ranked else None

    def block(self) -> str:
        """The evidence as the model reads it (``prompting.format_evidence``)."""
        from domainkit.prompting import format_evidence

        return format_evidence(
            [(n, c, [s.text for s in lines]) for n, c, lines in self.by_passage()]
        )

    def without(self, sentence: EvidenceSentence) -> Evidence:
        """The same evidence minus one sentence (and its passage, when it was the only one)."""
        kept = [s for s in self.ranked if s is not sentence]
        passages = [c for c in self.passages if any(s.chunk.id == c.id for s in kept)]
        number = {c.id: n for n, c in enumerate(passages, start=1)}
        ranked = [replace(s, number=number[s.chunk.id]) for s in kept]
        grouped = sorted(ranked, key=lambda s: (s.number, s.start))
        return Evidence(self.question, passages, grouped, ranked, self.pool)


class EvidenceSelector:
    """Selects the sentences of retrieved passages that bear on a question.

    Args:
        embedder: The index's embedder (sentence vectors are cached by text).
        vocabulary: Corpus term statistics for the lexical score.
        settings: Budgets and weights (``evidence`` in the recipe).
    """

    def __init__(self, embedder, vocabulary: CorpusVocabulary, settings: EvidenceConfig):
        self.embedder, self.vocabulary, self.settings = embedder, vocabulary, settings
        self._vectors: dict[str, np.ndarray] = {}

    def select(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        query_vector: np.ndarray | None = None,
        required: Sequence[tuple[Chunk, int, int]] = (),
    ) -> Evidence:
        """The best sentences of ``passages`` (in retrieval order) for ``question``.

        Args:
            question: The user's question.
            passages: Retrieved passages, best first.
            query_vector: The question's embedding, when already computed.
            required: (passage, start, end) spans in passage offsets that must be in the
                evidence, whatever their score (synth's gold sentence).
        """
        candidates = self._candidates(passages)
        if not candidates:
            return Evidence(question)
        if query_vector is None:
            query_vector = self.embedder.embed([question])[0]
        scored = self._score(question, query_vector, candidates)
        chosen = self._choose(scored, candidates, required)
        evidence = self._arrange(question, chosen)
        in_block = {(s.chunk.id, s.start) for s in evidence.sentences}
        evidence.pool = [
            self._sentence(c, score)
            for c, score in sorted(zip(candidates, scored, strict=True), key=lambda x: -x[1][0])
            if (c[1].id, c[1].start + c[2][c[3]].start) not in in_block
        ]
        return evidence

    # -- steps -----------------------------------------------------------------------------

    def _candidates(self, passages: Sequence[Chunk]) -> list[tuple[int, Chunk, list[Unit], int]]:
        """(passage rank, passage, its units, unit index) for every unit, deduplicated by
        text (overlapping passages repeat sentences; the higher-ranked copy is kept)."""
        seen: set[str] = set()
        out = []
        for rank, chunk in enumerate(passages[: self.settings.passages]):
            units = text_units(chunk.text)
            for i, unit in enumerate(units):
                key = _key(chunk.text[unit.start : unit.end])
                if key in seen:
                    continue
                seen.add(key)
                out.append((rank, chunk, units, i))
        return out

    def _score(self, question: str, query_vector, candidates) -> list[tuple[float, float, float]]:
        texts = [_context(chunk, units[i]) for _, chunk, units, i in candidates]
        vectors = self._embed(texts)
        dense = vectors @ query_vector
        q_terms = content_terms([question])[0]
        if degree := degree_words(question):
            left_out = set(content_terms([" ".join(degree)])[0])
            q_terms = [t for t in q_terms if t not in left_out] or q_terms
        u_terms = content_terms(
            [chunk.text[units[i].start : units[i].end] for _, chunk, units, i in candidates]
        )
        h_terms = content_terms([_heading(chunk, units[i]) for _, chunk, units, i in candidates])
        weight = self.settings.dense_weight
        figure_bonus = self.settings.figure_weight if asks_for_figure(question) else 0.0
        scores = []
        for (rank, chunk, units, i), d, terms, heading in zip(
            candidates, dense, u_terms, h_terms, strict=True
        ):
            text = chunk.text[units[i].start : units[i].end]
            coverage = weighted_coverage(q_terms, terms, self.vocabulary)
            with_heading = weighted_coverage(q_terms, list(terms) + list(heading), self.vocabulary)
            lexical = 0.7 * coverage + 0.3 * with_heading
            prior = self.settings.rank_weight / (1 + rank)
            if figure_bonus and FIGURE.search(text):
                prior += figure_bonus
            scores.append((weight * float(d) + (1 - weight) * lexical + prior, float(d), coverage))
        return scores

    def _choose(self, scored, candidates, required) -> list[EvidenceSentence]:
        settings = self.settings
        order = sorted(range(len(candidates)), key=lambda j: -scored[j][0])
        position = {(c[1].id, c[3]): j for j, c in enumerate(candidates)}
        wanted = {_key(chunk.text[start:end]) for chunk, start, end in required}
        forced = [
            j
            for j, (_, c, units, i) in enumerate(candidates)
            if _key(c.text[units[i].start : units[i].end]) in wanted
            or any(
                c.id == chunk.id and units[i].start < end and start < units[i].end
                for chunk, start, end in required
            )
        ]
        chosen: list[int] = []
        words = 0
        for j in forced + order:
            group = self._with_lead(j, candidates, position)
            new = [g for g in group if g not in chosen]
            cost = sum(_words(candidates[g]) for g in new)
            over = (
                len(chosen) + len(new) > settings.max_sentences or words + cost > settings.max_words
            )
            if not new or (over and chosen and j not in forced):
                continue
            chosen += new
            words += cost
        return [self._sentence(candidates[g], scored[g]) for g in chosen]

    def _with_lead(self, j: int, candidates, position) -> list[int]:
        _, chunk, units, i = candidates[j]
        lead = units[i].lead
        if lead is None or not self.settings.lead_ins:
            return [j]
        k = position.get((chunk.id, lead))
        return [j] if k is None else [k, j]

    def _sentence(self, candidate, score) -> EvidenceSentence:
        _, chunk, units, i = candidate
        unit = units[i]
        lead = units[unit.lead] if unit.lead is not None else None
        return EvidenceSentence(
            text=chunk.text[unit.start : unit.end],
            chunk=chunk,
            start=chunk.start + unit.start,
            end=chunk.start + unit.end,
            score=round(score[0], 4),
            dense=round(score[1], 4),
            coverage=round(score[2], 4),
            lead=(chunk.start + lead.start, chunk.start + lead.end) if lead else None,
            lead_in=unit.lead_in,
        )

    def _arrange(self, question: str, chosen: list[EvidenceSentence]) -> Evidence:
        """Number passages by their best sentence; within one, keep document order."""
        passages: list[Chunk] = []
        best: dict[str, float] = {}
        for s in chosen:
            best[s.chunk.id] = max(best.get(s.chunk.id, -1e9), s.score)
        for s in sorted(chosen, key=lambda s: -best[s.chunk.id]):
            if s.chunk not in passages:
                passages.append(s.chunk)
        number = {c.id: n for n, c in enumerate(passages, start=1)}
        numbered = [_numbered(s, number[s.chunk.id]) for s in chosen]
        grouped = sorted(numbered, key=lambda s: (s.number, s.start))
        return Evidence(question, passages, grouped, sorted(numbered, key=lambda s: -s.score))

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            if len(self._vectors) > 200_000:
                self._vectors.clear()
            for text, vector in zip(missing, self.embedder.embed(missing), strict=True):
                self._vectors[text] = vector
        return np.stack([self._vectors[t] for t in texts])


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _heading(chunk: Chunk, unit: Unit) -> str:
    """The nearest title above a unit: a title line in its passage, else the passage's
    own heading, else its document's title."""
    if unit.heading is not None:
        return " ".join(chunk.text[unit.heading[0] : unit.heading[1]].split())
    return chunk.headings[-1] if chunk.headings else chunk.title


def _context(chunk: Chunk, unit: Unit) -> str:
    """What a sentence is embedded as: its nearest heading gives it a topic."""
    heading = _heading(chunk, unit)
    sentence = chunk.text[unit.start : unit.end]
    return f"{heading}: {sentence}" if heading else sentence


def _words(candidate) -> int:
    _, chunk, units, i = candidate
    return len(chunk.text[units[i].start : units[i].end].split())


def _numbered(sentence: EvidenceSentence, number: int) -> EvidenceSentence:
    return replace(sentence, number=number)
