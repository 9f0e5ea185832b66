"""RAFT samples: a question with the gold passage among retrieved hard negatives.

In the configured share of samples the gold passage is left out and the answer says the
passages do not cover the question, so the student learns to use the right passage and to
notice when none is there (RAFT, arXiv 2403.10131). The prompt is ``prompting.context_question``,
exactly what the runtime sends.
"""

from __future__ import annotations

from domainkit.ingest import Chunk
from domainkit.prompting import chat, citation, context_question
from domainkit.synth.context import SynthContext
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.generators.qa import QAPair, grounded_pairs
from domainkit.synth.sample import Sample


def distractors(ctx: SynthContext, pair: QAPair, count: int) -> list[Chunk]:
    """Hard negatives: the retriever's best passages for the question, other than the gold one,
    from the gold chunk's own split so no validation chunk is shown in training."""
    side = ctx.is_validation(pair.chunk.id)
    hits = ctx.retriever.search(pair.question, k=count + 10)
    return [
        h.chunk
        for h in hits
        if h.chunk.id != pair.chunk.id and ctx.is_validation(h.chunk.id) == side
    ][:count]


def generate_raft(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    pairs = grounded_pairs(ctx, seeds, "raft")[:target]
    rng = ctx.rng("raft")
    n_absent = round(len(pairs) * ctx.synth.raft_gold_absent)
    absent = set(rng.sample(range(len(pairs)), n_absent))
    k = ctx.synth.raft_distractors
    samples = []
    for i, pair in enumerate(pairs):
        gold_absent = i in absent
        passages = distractors(ctx, pair, k + 1 if gold_absent else k)
        gold_position = None
        if gold_absent:
            answer = ctx.config.refusal
        else:
            gold_position = rng.randint(0, len(passages))
            passages.insert(gold_position, pair.chunk)
            answer = f"{pair.answer} {citation(gold_position + 1)}"
        samples.append(
            Sample(
                messages=chat(
                    ctx.system_prompt,
                    ("user", context_question(pair.question, passages)),
                    ("assistant", answer),
                ),
                generator="raft",
                chunk_id=pair.chunk.id,
                source=pair.chunk.source,
                teacher=ctx.teacher.id,
                scores=pair.scores,
                meta={
                    "question": pair.question,
                    "passages": [c.id for c in passages],
                    "gold_position": gold_position,
                    "answer_origin": "refusal" if gold_absent else pair.origin,
                },
            )
        )
    return samples


GENERATORS.register("raft")(
    GeneratorSpec(
        run=generate_raft,
        samples_per_seed=lambda s: s.questions_per_chunk,
        calls_per_seed=lambda s: s.questions_per_chunk * (2 + s.filters.judge),
    )
)
