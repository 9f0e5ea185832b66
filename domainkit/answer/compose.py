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
    numbers = {primary.chunk.id: primary.number}
    numbers.update({s.chunk.id: s.number for s in others})
    groups: dict[str, list[EvidenceSentence]] = {}
    for sentence in chosen:
        groups.setdefault(sentence.chunk.id, []).append(sentence)
    # The main line (after its lead-in) opens the answer, not the first line of its list;
    # the rest of each passage follows in document order.
    lead = evidence.lead_of(primary)
    opening = [key(s) for s in (lead, primary) if s is not None]

    def order(sentence: EvidenceSentence) -> tuple[int, int]:
        k = key(sentence)
        return (opening.index(k), 0) if k in opening else (len(opening), sentence.start)

    pieces = []
    for chunk_id in sorted(groups, key=lambda c: (c != primary.chunk.id, numbers[c])):
        parts = [readable(s.text) for s in sorted(groups[chunk_id], key=order)]
        text = " ".join(p if p.endswith((".", "!", "?", ":", ";")) else f"{p}." for p in parts)
        pieces.append(f"{text} {citation(numbers[chunk_id])}")
    return " ".join(pieces)


def evidence_answer(evidence: Evidence, answer_words: int) -> Answer:
    """The answer without the model: the best evidence sentence, composed and cited."""
    best = evidence.best()
    if best is None:
        raise ValueError("no evidence to answer from")
    return Answer(
        text=compose(evidence, best, answer_words),
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
