"""Wording the answer a user reads, from the evidence alone.

The answer is the documents' own text: the main line with its lead-in, then the best other
lines by score, each passage's lines followed by its citation. Nothing in it needs
trusting, whichever route chose the main line (the selector, the model's checked quote, a
reviewer).
"""

from __future__ import annotations

from domainkit.answer.answers import Answer, EvidenceLine, Source
from domainkit.answer.evidence import Evidence, EvidenceSentence
from domainkit.prompting import citation, readable

# Sentences of other passages join an answer only when nearly as relevant as its main one:
# a second fact the question asks for, not a neighbouring topic.
OTHER_PASSAGE_SHARE = 0.7


def compose(evidence: Evidence, primary: EvidenceSentence, max_words: int) -> str:
    """The answer a user reads: ``primary`` with its lead-in, then, within ``max_words``,
    the best other lines by score: those of its passage, and those of the evidence's
    other passages that are nearly as relevant (a question often needs two lines that
    sit apart). Each passage's sentences are in document order, followed by its
    citation ``[n]``, the primary's passage first. Only the documents' own words, so
    nothing needs trusting."""
    return word(evidence, choose(evidence, primary, max_words), primary)


def composed_lines(
    evidence: Evidence, primary: EvidenceSentence, max_words: int
) -> tuple[str, list[str]]:
    """``compose``'s text and the ids of the lines it is made of, in their order."""
    chosen = choose(evidence, primary, max_words)
    return word(evidence, chosen, primary), [s.id for s in _ordered(evidence, chosen, primary)]


def choose(evidence: Evidence, primary: EvidenceSentence, max_words: int) -> list[EvidenceSentence]:
    """The lines an answer opening with ``primary`` is made of (see ``compose``)."""

    def key(sentence: EvidenceSentence) -> tuple[str, int]:
        return sentence.chunk.source, sentence.start

    chosen: list[EvidenceSentence] = []
    words = 0

    def add(sentence: EvidenceSentence, leads: bool = True) -> bool:
        nonlocal words
        group = [sentence]
        lead = evidence.lead_of(sentence) if leads else None
        if lead is not None and key(lead) not in {key(s) for s in chosen}:
            group.insert(0, lead)
        size = sum(len(s.text.split()) for s in group)
        if chosen and words + size > max_words:
            return False
        chosen.extend(group)
        words += size
        return True

    add(primary)
    own = [s for s in evidence.ranked + evidence.pool if s.chunk.id == primary.chunk.id]
    floor = OTHER_PASSAGE_SHARE * primary.score
    others = [  # sentences of the other cited passages, nearly as relevant as the primary
        s for s in evidence.ranked if s.chunk.id != primary.chunk.id and s.score >= floor
    ]
    # Then the best of the rest by score, wherever they stand (the main line's neighbours
    # and the other passages' lines nearly as relevant), so that a second passage's line
    # scored just under the main one is not crowded out (docs/decisions.md, "answer lines
    # join by score").
    for sentence in sorted(own + others, key=lambda s: -s.score):
        if sentence.lead_in or key(sentence) in {key(s) for s in chosen}:
            continue
        add(sentence, leads=sentence.chunk.id != primary.chunk.id)
    return chosen


def word(evidence: Evidence, chosen: list[EvidenceSentence], primary: EvidenceSentence) -> str:
    """``chosen`` lines as the answer reads: grouped by passage, the primary's first, each
    passage's lines followed by its citation ``[n]``."""
    pieces = []
    for number, lines in _grouped(evidence, chosen, primary):
        parts = [readable(s.text) for s in lines]
        text = " ".join(p if p.endswith((".", "!", "?", ":", ";")) else f"{p}." for p in parts)
        pieces.append(f"{text} {citation(number)}")
    return " ".join(pieces)


def _grouped(
    evidence: Evidence, chosen: list[EvidenceSentence], primary: EvidenceSentence
) -> list[tuple[int, list[EvidenceSentence]]]:
    """(citation number, lines) per passage, the primary's passage first. The main line
    (after its lead-in) opens the answer, not the first line of its list; the rest of each
    passage follows in document order."""
    numbers = {primary.chunk.id: primary.number}
    groups: dict[str, list[EvidenceSentence]] = {}
    for sentence in chosen:
        groups.setdefault(sentence.chunk.id, []).append(sentence)
        if sentence.number:  # lines outside the evidence block carry none
            numbers.setdefault(sentence.chunk.id, sentence.number)
    lead = evidence.lead_of(primary)
    opening = [(s.chunk.source, s.start) for s in (lead, primary) if s is not None]

    def order(sentence: EvidenceSentence) -> tuple[int, int]:
        k = (sentence.chunk.source, sentence.start)
        return (opening.index(k), 0) if k in opening else (len(opening), sentence.start)

    ranked = sorted(groups, key=lambda c: (c != primary.chunk.id, numbers.get(c, 0)))
    return [(numbers.get(c, 0), sorted(groups[c], key=order)) for c in ranked]


def _ordered(
    evidence: Evidence, chosen: list[EvidenceSentence], primary: EvidenceSentence
) -> list[EvidenceSentence]:
    return [s for _, lines in _grouped(evidence, chosen, primary) for s in lines]


def evidence_answer(evidence: Evidence, answer_words: int) -> Answer:
    """The answer without the model: the best evidence sentence, composed and cited."""
    best = evidence.best()
    if best is None:
        raise ValueError("no evidence to answer from")
    text, lines = composed_lines(evidence, best, answer_words)
    return Answer(
        text=text,
        lines=lines,
        route="evidence",
        sources=sources_of(evidence),
        evidence=[
            EvidenceLine(s.number, s.text, s.chunk.source, s.start, s.end, s.score, s.id)
            for s in evidence.sentences
        ],
        line=best.id,
    )


def sources_of(evidence: Evidence) -> list[Source]:
    """The evidence's passages by citation number, each scored by its best sentence."""
    best: dict[str, float] = {}
    for s in evidence.sentences:
        best[s.chunk.id] = max(best.get(s.chunk.id, 0.0), s.score)
    return [
        Source.of(n, chunk, best.get(chunk.id, 0.0))
        for n, chunk in enumerate(evidence.passages, start=1)
    ]
