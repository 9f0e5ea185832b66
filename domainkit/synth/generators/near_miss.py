"""Near misses: a real question with one name or model number swapped for one the corpus
never mentions ("How long is the warranty on the Falcon?" in a corpus without a Falcon).

The evidence is what the runtime would select for the swapped question, so it looks close
(the same topic, often the same sentence about the real product), and the target is the
recipe's refusal: the student learns that a close passage about something else does not
answer the question.
"""

from __future__ import annotations

from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.synth.context import SynthContext
from domainkit.synth.facts import facts_of, near_miss
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.questions import questions_for
from domainkit.synth.sample import Sample


def generate_near_misses(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    facts = [f for c in seeds for f in facts_of(c, ctx.synth.questions_per_chunk)]
    rng = ctx.rng("near_miss")
    samples = []
    for q in questions_for(ctx, facts, "near_miss", paraphrases=0):
        swapped = near_miss(q.question, ctx.vocabulary, rng)
        if swapped is None:
            ctx.log.reject(
                "no_swap",
                "near_miss",
                q.fact.chunk.id,
                "the question names nothing to swap",
                question=q.question,
            )
            continue
        evidence = ctx.evidence_for(swapped, ctx.is_validation(q.fact.chunk.id))
        if (turn := ctx.refusal_turn(swapped, evidence)) is None:
            continue
        user, reply = turn
        samples.append(
            Sample(
                messages=chat(ctx.system_prompt, ("user", user), ("assistant", reply)),
                generator="near_miss",
                chunk_id=q.fact.chunk.id,
                source=q.fact.chunk.source,
                teacher=ctx.teacher.id,
                meta={
                    "question": swapped,
                    "original_question": q.question,
                    "question_origin": q.origin,
                    "unknown_terms": ctx.vocabulary.unknown_specific_terms(swapped),
                    "passages": [c.id for c in evidence.passages],
                    "answer_origin": "refusal",
                },
            )
        )
    return samples[:target]


GENERATORS.register("near_miss")(
    GeneratorSpec(
        run=generate_near_misses,
        samples_per_seed=lambda s: s.questions_per_chunk * 0.5,
        calls_per_seed=lambda s: s.questions_per_chunk,
    )
)
