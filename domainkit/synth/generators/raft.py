"""RAFT samples in the runtime's evidence format: quote the gold line, or refuse.

For each question about a fact, the evidence block is what the runtime's selector picks
for that question from the retrieved passages (hard negatives included), with the fact's
line always present; the target quotes that line with its passage number, so it is
correct by construction. In ``raft_gold_absent`` of the questions the fact's passage is
left out of the retrieval, and the target is the recipe's refusal (RAFT, arXiv
2403.10131): the student learns to use the right line and to notice when none is there.
A gold-absent sample is skipped when another passage states the same fact, since refusing
would then be wrong.
"""

from __future__ import annotations

from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.retrieval.terms import restates
from domainkit.synth.context import SynthContext
from domainkit.synth.facts import facts_of
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.questions import FactQuestion, questions_for
from domainkit.synth.sample import Sample


def generate_raft(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    facts = [f for c in seeds for f in facts_of(c, ctx.synth.questions_per_chunk)]
    questions = questions_for(ctx, facts, "raft")
    rng = ctx.rng("raft")
    share = ctx.synth.raft_gold_absent
    wanted = round(len(questions) * share / (1 - share)) if share < 1 else len(questions)
    absent = set(rng.sample(range(len(questions)), min(len(questions), wanted)))
    samples = []
    for i, question in enumerate(questions):
        # One question gives both kinds: the same words, with and without their passage,
        # teach that the evidence decides, not the question.
        pair = [_present(ctx, question) if share < 1 else None]
        if i in absent:
            pair.append(_absent(ctx, question))
        samples += [s for s in pair if s is not None]
    rng.shuffle(samples)
    return samples[:target]


def _present(ctx: SynthContext, q: FactQuestion) -> Sample | None:
    side = ctx.is_validation(q.fact.chunk.id)
    evidence = ctx.evidence_for(q.question, side, gold=q.fact)
    turn = ctx.quote_turn(q.question, evidence, q.fact)
    if turn is None:
        ctx.log.reject(
            "evidence",
            "raft",
            q.fact.chunk.id,
            "gold line not in the evidence",
            question=q.question,
        )
        return None
    user, reply, line = turn
    return _sample(ctx, q, user, reply, evidence, gold_present=True, gold_number=line.number)


def _absent(ctx: SynthContext, q: FactQuestion) -> Sample | None:
    side = ctx.is_validation(q.fact.chunk.id)
    evidence = ctx.evidence_for(q.question, side, exclude=frozenset({q.fact.chunk.id}))
    for sentence in evidence.sentences:
        if restates(q.fact.text, sentence.text, ctx.vocabulary):
            ctx.log.reject(
                "restated",
                "raft",
                q.fact.chunk.id,
                "another passage states the fact: not a gold-absent sample",
                question=q.question,
                restated_by=sentence.text,
            )
            return None
    turn = ctx.refusal_turn(q.question, evidence)
    if turn is None:
        return None
    return _sample(ctx, q, *turn, evidence, gold_present=False, gold_number=None)


def _sample(ctx, q: FactQuestion, user, reply, evidence, *, gold_present, gold_number) -> Sample:
    return Sample(
        messages=chat(ctx.system_prompt, ("user", user), ("assistant", reply)),
        generator="raft",
        chunk_id=q.fact.chunk.id,
        source=q.fact.chunk.source,
        teacher=ctx.teacher.id,
        meta={
            "question": q.question,
            "fact": q.fact.text,
            "question_origin": q.origin,
            "passages": [c.id for c in evidence.passages],
            "gold_present": gold_present,
            "gold_number": gold_number,
            "answer_origin": "quote" if gold_present else "refusal",
        },
    )


GENERATORS.register("raft")(
    GeneratorSpec(
        run=generate_raft,
        samples_per_seed=lambda s: (
            s.questions_per_chunk * (1 + s.paraphrases) * (1 + s.raft_gold_absent)
        ),
        calls_per_seed=lambda s: s.questions_per_chunk * (1 + s.paraphrases),
    )
)
