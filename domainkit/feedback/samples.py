"""Reviewed questions as training samples in the runtime's format.

Each reviewed question whose verdict names a line becomes the exchange the runtime has with
the model: the evidence it selects for the question (the reviewed line's passage always
among the retrieved ones, the line always in the block), and a reply quoting the reviewed
line; a "not in the documents" verdict becomes the same evidence-first turn with the
recipe's refusal. The format is synth's RAFT samples', so the two can train together
(``domainkit export`` writes them as ``dataset/reviewed.jsonl``). An answer in the reviewer's
own words names no line and gives no sample.
"""

from __future__ import annotations

from domainkit.answer.evidence import EvidenceSelector
from domainkit.answer.memory import Reviewed
from domainkit.config.loading import Domain
from domainkit.ingest.lines import LineRef
from domainkit.prompting import chat, evidence_question, quote_reply
from domainkit.synth.sample import Sample

GENERATOR = "reviewed"


def reviewed_samples(domain: Domain, retriever, entries: list[Reviewed]) -> list[Sample]:
    """One sample per reviewed question that still holds against the current documents."""
    selector = EvidenceSelector(retriever.embedder, retriever.vocabulary, domain.config.evidence)
    system = domain.config.render_system_prompt()
    chunks = list(retriever.index.chunks)
    samples = []
    for entry in entries:
        sample = _sample(domain, retriever, selector, chunks, entry, system)
        if sample is not None:
            samples.append(sample)
    return samples


def _sample(domain: Domain, retriever, selector, chunks, entry: Reviewed, system: str):
    n = domain.config.evidence.passages
    passages = [h.chunk for h in retriever.search(entry.question, k=n)]
    if entry.verdict != "line":
        evidence = selector.select(entry.question, passages)
        if not evidence.sentences:
            return None  # the runtime refuses those without asking the model
        reply, gold = domain.config.refusal, None
    else:
        ref = LineRef.parse(entry.line or "")
        found = ref.find(chunks)
        if found is None:
            return None
        gold = found[0]
        if gold not in passages:
            passages = [*passages[: n - 1], gold]
        required = ((gold, ref.start - gold.start, ref.end - gold.start),)
        evidence = selector.select(entry.question, passages, required=required)
        line = evidence.at(gold.id, ref.start)
        if line is None:
            return None
        reply = quote_reply(line.text)
    user = evidence_question(entry.question, evidence.block())
    return Sample(
        messages=chat(system, ("user", user), ("assistant", reply)),
        generator=GENERATOR,
        chunk_id=gold.id if gold else None,
        source=gold.source if gold else None,
        teacher="reviewer",
        meta={
            "question": entry.question,
            "verdict": entry.verdict,
            "line": entry.line,
            "passages": [c.id for c in evidence.passages],
            "answer_origin": "quote" if gold else "refusal",
        },
    )
