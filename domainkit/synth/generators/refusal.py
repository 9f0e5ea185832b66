"""Refusals: questions the documents do not answer, about their names or outside the domain.

A question is kept only if a third or more of its content terms (generic question words
aside) occur nowhere in the documents: it asks about something they never mention. It is
asked with the evidence the runtime would select for it, and answered with the recipe's
refusal.
"""

from __future__ import annotations

from functools import lru_cache

from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.retrieval.bm25 import content_terms
from domainkit.retrieval.terms import specific_terms
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


# Details users ask about that documents often leave out; a question pairs one with a name
# the corpus uses, and is kept only when the detail's words occur nowhere in the documents.
_MISSING_DETAILS = (
    "the weight",
    "the exact dimensions",
    "the colour options",
    "the price in US dollars",
    "the energy efficiency rating",
    "the country of manufacture",
    "the recycled plastic content",
    "the carbon footprint",
    "the maximum operating altitude",
    "the chief executive",
    "the founding year",
    "the parking arrangements",
    "the opening hours on public holidays",
    "the loyalty points scheme",
    "the student discount",
    "the gift card options",
    "the wheelchair hire",
    "the vegetarian menu",
    "the Bluetooth codec support",
    "the frequency response",
)
_DETAIL_FORMS = (
    "What about {detail} for {name}?",
    "Can you tell me {detail} for {name}?",
    "I need to know {detail} for {name}.",
)


def generate_refusals(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    """Half the questions ask a detail the documents never give about a name they use (no
    teacher call); the other half are everyday questions outside the domain, by the teacher."""
    offtopic = [(i, c) for i, c in enumerate(seeds) if i % 2]
    replies = ctx.teacher.generate(
        [_offtopic_prompt(ctx, c) for _, c in offtopic], ctx.sampling("user")
    )
    written = {i: reply for (i, _), reply in zip(offtopic, replies, strict=True)}
    samples = []
    for i, chunk in enumerate(seeds):
        if i in written:
            question = parse_question(written[i])
            origin = "teacher"
        else:
            question = _detail_question(ctx, chunk, i)
            origin = "template"
        if question is None:
            ctx.log.reject("parse", "refusal", chunk.id, "no question", reply=written.get(i, ""))
            continue
        if problem := _problem(ctx, question):
            ctx.log.reject(problem[0], "refusal", chunk.id, problem[1], question=question)
            continue
        evidence = ctx.evidence_for(question, ctx.is_validation(chunk.id))
        if (turn := ctx.refusal_turn(question, evidence)) is None:
            continue
        user, reply = turn
        samples.append(
            Sample(
                messages=chat(ctx.system_prompt, ("user", user), ("assistant", reply)),
                generator="refusal",
                chunk_id=chunk.id,
                source=chunk.source,
                teacher=ctx.teacher.id,
                meta={
                    "question": question,
                    "question_origin": origin,
                    "passages": [c.id for c in evidence.passages],
                    "answer_origin": "refusal",
                },
            )
        )
    return samples[:target]


def _problem(ctx: SynthContext, question: str) -> tuple[str, str] | None:
    if why := text_problem(question, ctx.synth.filters, kind="question"):
        return ("length", why)
    terms = set(content_terms([question])[0]) - _generic_terms()
    novel = terms - ctx.corpus_terms
    if not novel or len(novel) < len(terms) / 3:
        return ("answerable", "most terms of the question occur in the documents")
    return None


def _detail_question(ctx: SynthContext, chunk: Chunk, i: int) -> str | None:
    """A detail the corpus never mentions, asked about a name the chunk uses."""
    rng = ctx.rng(f"detail:{chunk.id}")
    # Names from the headings: a capitalised word in the text may just open a sentence.
    names = [t for t in specific_terms(f"The {chunk.breadcrumb}") if t[0].isupper()]
    if not names:
        return None
    details = [d for d in _MISSING_DETAILS if _unknown(ctx, d)]
    if not details:
        return None
    form = _DETAIL_FORMS[i % len(_DETAIL_FORMS)]
    return form.format(detail=rng.choice(details), name=rng.choice(names))


def _unknown(ctx: SynthContext, detail: str) -> bool:
    terms = set(content_terms([detail])[0]) - _generic_terms()
    return bool(terms) and not terms & ctx.corpus_terms


def _offtopic_prompt(ctx: SynthContext, chunk: Chunk) -> list[dict[str, str]]:
    """An everyday question outside the domain (small teachers manage these well)."""
    rng = ctx.rng(f"offtopic:{chunk.id}")
    user = ctx.prompts.render(
        "offtopic_user", topic=rng.choice(OFFTOPIC_TOPICS), starter=rng.choice(OFFTOPIC_STARTERS)
    )
    return chat(ctx.prompts.render("offtopic_system"), ("user", user))


GENERATORS.register("refusal")(
    GeneratorSpec(
        run=generate_refusals, samples_per_seed=lambda s: 1.0, calls_per_seed=lambda s: 0.5
    )
)
