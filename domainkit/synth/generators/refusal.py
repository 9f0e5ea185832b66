"""Refusals: questions the documents do not answer, on a chunk's topic or outside the domain.

A question is kept only if at least half of its content terms (generic question words aside)
occur nowhere in the documents: it asks about something they never mention. It is answered
with the recipe's refusal wording.
"""

from __future__ import annotations

from functools import lru_cache

from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.retrieval.bm25 import content_terms
from domainkit.synth.context import SynthContext
from domainkit.synth.filters import text_problem
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.parsing import parse_question
from domainkit.synth.prompts import OFFTOPIC_STARTERS, OFFTOPIC_TOPICS
from domainkit.synth.sample import Sample

# Words any question may use; being absent from the documents says nothing about them.
_GENERIC_WORDS = (
    "specific particular possible possibly option options choose choice different exactly "
    "available availability certain kind kinds type types way ways thing things anything "
    "something everything someone anyone able allowed allow need needs want wants like "
    "usually normally typically ever also else really much many several various other "
    "information details detail example please tell know explain mean means how what when "
    "where why who which whose long often does did can could would should will may might must"
)


@lru_cache(maxsize=1)
def _generic_terms() -> frozenset[str]:
    return frozenset(content_terms([_GENERIC_WORDS])[0])


def generate_refusals(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    conversations = [_prompt(ctx, chunk, i) for i, chunk in enumerate(seeds)]
    replies = ctx.teacher.generate(conversations, ctx.sampling("user"))
    copies = ctx.prompts.example_replies("refusal")
    samples = []
    for chunk, reply in zip(seeds, replies, strict=True):
        question = parse_question(reply)
        if question is None or question in copies:
            ctx.log.reject("parse", "refusal", chunk.id, "no question in the reply", reply=reply)
            continue
        if problem := text_problem(question, ctx.synth.filters, kind="question"):
            ctx.log.reject("length", "refusal", chunk.id, problem, question=question)
            continue
        terms = set(content_terms([question])[0]) - _generic_terms()
        novel = sorted(terms - ctx.corpus_terms)
        if not novel or len(novel) < len(terms) / 2:
            ctx.log.reject(
                "answerable",
                "refusal",
                chunk.id,
                "most terms of the question occur in the documents",
                question=question,
            )
            continue
        samples.append(
            Sample(
                messages=chat(
                    ctx.system_prompt, ("user", question), ("assistant", ctx.config.refusal)
                ),
                generator="refusal",
                chunk_id=chunk.id,
                source=chunk.source,
                teacher=ctx.teacher.id,
                meta={"terms_not_in_documents": novel},
            )
        )
    return samples[:target]


def _prompt(ctx: SynthContext, chunk: Chunk, i: int) -> list[dict[str, str]]:
    """Alternately a question on the chunk's topic that it leaves open, and an everyday
    question outside the domain (small teachers manage the second far more often)."""
    if i % 2 == 0:
        user = ctx.prompts.render(
            "refusal_user", topic=chunk.breadcrumb or chunk.title, passage=chunk.text
        )
        return ctx.prompts.with_examples("refusal", ctx.prompts.render("refusal_system"), user)
    rng = ctx.rng(f"offtopic:{chunk.id}")
    user = ctx.prompts.render(
        "offtopic_user", topic=rng.choice(OFFTOPIC_TOPICS), starter=rng.choice(OFFTOPIC_STARTERS)
    )
    return chat(ctx.prompts.render("offtopic_system"), ("user", user))


GENERATORS.register("refusal")(
    GeneratorSpec(
        run=generate_refusals, samples_per_seed=lambda s: 1.0, calls_per_seed=lambda s: 1.0
    )
)
