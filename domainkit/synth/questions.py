"""Questions about facts: the teacher's where they pass the checks, templates otherwise.

Every question must share a term with its fact and retrieve the fact's passage (the
round trip), whoever wrote it; a question that fails is logged with the reason. Each
teacher question can be reworded ``synth.paraphrases`` times (varied wordings of one fact
teach the reader to match meaning, not surface words).
"""

from __future__ import annotations

from dataclasses import dataclass

from domainkit.synth.context import SynthContext
from domainkit.synth.facts import Fact, template_question
from domainkit.synth.filters import shares_terms, text_problem
from domainkit.synth.parsing import parse_question


@dataclass(frozen=True)
class FactQuestion:
    """A checked question about one fact; ``origin`` is teacher, paraphrase or template."""

    fact: Fact
    question: str
    origin: str


def questions_for(
    ctx: SynthContext, facts: list[Fact], generator: str, paraphrases: int | None = None
) -> list[FactQuestion]:
    """One question per fact (the teacher's, else a template's), plus ``paraphrases``
    rewordings of each teacher question (default ``synth.paraphrases``)."""
    replies = ctx.teacher.generate(
        [_question_prompt(ctx, f) for f in facts], ctx.sampling("question")
    )
    copies = ctx.prompts.example_replies("question")
    parsed = [parse_question(reply) for reply in replies]
    ctx.warm(parsed + [template_question(f, ctx.vocabulary) for f in facts])
    out: list[FactQuestion] = []
    for fact, reply, question in zip(facts, replies, parsed, strict=True):
        problem = _problem(ctx, question, fact) if question not in copies else "copied an example"
        if problem is None and question is not None:
            out.append(FactQuestion(fact, question, "teacher"))
            continue
        problem = problem or "no question"
        ctx.log.reject(
            _filter_of(problem), generator, fact.chunk.id, problem, fact=fact.text, reply=reply
        )
        template = template_question(fact, ctx.vocabulary)
        if _problem(ctx, template, fact) is None:
            out.append(FactQuestion(fact, template, "template"))
    count = ctx.synth.paraphrases if paraphrases is None else paraphrases
    return out + _paraphrases(ctx, [q for q in out if q.origin == "teacher"], generator, count)


def _question_prompt(ctx: SynthContext, fact: Fact) -> list[dict[str, str]]:
    system = ctx.prompts.render("question_system", user=ctx.persona["user_persona"])
    user = ctx.prompts.render("question_user", fact=fact.text)
    return ctx.prompts.with_examples("question", system, user)


def _problem(ctx: SynthContext, question: str | None, fact: Fact) -> str | None:
    if question is None:
        return "no question in the reply"
    if why := text_problem(question, ctx.synth.filters, kind="question"):
        return why
    if not shares_terms(question, fact.text + " " + " ".join(fact.chunk.headings)):
        return "question shares no term with its fact"
    if not ctx.finds_source(question, fact.chunk):
        return "question does not retrieve its source passage"
    return None


def _filter_of(problem: str) -> str:
    if problem.startswith(("no question", "copied")):
        return "parse"
    if "retrieve" in problem:
        return "roundtrip"
    if "shares no term" in problem:
        return "relevance"
    return "length"


def _paraphrases(
    ctx: SynthContext, questions: list[FactQuestion], generator: str, count: int
) -> list[FactQuestion]:
    system = ctx.prompts.render("paraphrase_system")
    copies = ctx.prompts.example_replies("paraphrase")
    out: list[FactQuestion] = []
    for variant in range(count):
        conversations = [
            ctx.prompts.with_examples("paraphrase", system, q.question) for q in questions
        ]
        replies = ctx.teacher.generate(conversations, ctx.sampling("paraphrase", variant))
        parsed = [parse_question(reply) for reply in replies]
        ctx.warm(parsed)
        for original, reply, question in zip(questions, replies, parsed, strict=True):
            seen = {
                original.question.lower(),
                *(q.question.lower() for q in out if q.fact == original.fact),
            }
            problem = (
                "copied an example"
                if question in copies
                else _problem(ctx, question, original.fact)
            )
            if question is None or (problem is None and question.lower() in seen):
                problem = "paraphrase repeats the question"
            if problem or question is None:
                problem = problem or "no question"
                ctx.log.reject(
                    "near_duplicate" if "repeats" in problem else _filter_of(problem),
                    generator,
                    original.fact.chunk.id,
                    f"paraphrase: {problem}",
                    question=original.question,
                    reply=reply,
                )
                continue
            out.append(FactQuestion(original.fact, question, "paraphrase"))
    return out
