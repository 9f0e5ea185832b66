"""Grounded Q&A: several differently worded questions per fact, each with a grounded answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from domainkit.config.schema import SynthConfig
from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.synth.context import SynthContext
from domainkit.synth.filters import shares_terms, text_problem
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.parsing import clean_reply, fact_sentences, parse_question
from domainkit.synth.sample import Sample


@dataclass
class QAPair:
    """A question about one fact of a chunk and its checked answer."""

    chunk: Chunk
    fact: str
    question: str
    answer: str = ""
    origin: str = "teacher"  # or "extract": the source sentence replaced an unsupported answer
    scores: dict[str, float] = field(default_factory=dict)
    paraphrases: list[str] = field(default_factory=list)


def grounded_pairs(
    ctx: SynthContext, chunks: list[Chunk], generator: str, paraphrases: int = 0
) -> list[QAPair]:
    """Facts -> questions -> grounded answers (-> paraphrased questions)."""
    pairs = _questions(ctx, chunks, generator)
    pairs = _answers(ctx, pairs, generator)
    if paraphrases:
        _paraphrase(ctx, pairs, generator, paraphrases)
    return pairs


def _questions(ctx: SynthContext, chunks: list[Chunk], generator: str) -> list[QAPair]:
    facts = [(c, f) for c in chunks for f in fact_sentences(c.text, ctx.synth.questions_per_chunk)]
    system = ctx.prompts.render("question_system", user=ctx.persona["user_persona"])
    conversations = [
        ctx.prompts.with_examples("question", system, ctx.prompts.render("question_user", fact=f))
        for _, f in facts
    ]
    replies = ctx.teacher.generate(conversations, ctx.sampling("question"))
    copies = ctx.prompts.example_replies("question")
    pairs = []
    for (chunk, fact), reply in zip(facts, replies, strict=True):
        question = parse_question(reply)
        problem = None
        if question is None or question in copies:
            problem = ("parse", "no question in the reply")
        elif why := text_problem(question, ctx.synth.filters, kind="question"):
            problem = ("length", why)
        elif not shares_terms(question, fact):
            problem = ("relevance", "question shares no term with its fact")
        elif not ctx.finds_source(question, chunk):
            problem = ("roundtrip", "question does not retrieve its source chunk")
        if problem:
            ctx.log.reject(problem[0], generator, chunk.id, problem[1], fact=fact, reply=reply)
            continue
        pairs.append(QAPair(chunk, fact, question))
    return pairs


def _answers(ctx: SynthContext, pairs: list[QAPair], generator: str) -> list[QAPair]:
    system = ctx.prompts.render("answer_system", system_prompt=ctx.system_prompt)
    conversations = [
        chat(
            system,
            ("user", ctx.prompts.render("answer_user", passage=p.chunk.text, question=p.question)),
        )
        for p in pairs
    ]
    replies = [clean_reply(r) for r in ctx.teacher.generate(conversations, ctx.sampling("answer"))]
    scores = ctx.ground(replies, [p.chunk for p in pairs])
    if ctx.synth.filters.judge:
        verdicts = _judge(ctx, pairs, replies)
    kept = []
    for i, (pair, reply, score) in enumerate(zip(pairs, replies, scores, strict=True)):
        problem = text_problem(reply, ctx.synth.filters, kind="answer")
        if problem:
            reason = ("parse" if not reply else "length", problem)
        elif not ctx.grounded(score):
            reason = ("grounding", f"grounding {score['grounding']:.2f}")
        elif ctx.synth.filters.judge and not verdicts[i]:
            reason = ("judge", "the teacher judged the answer unsupported")
        else:
            reason = None
        pair.answer, pair.scores = reply, score
        if reason:
            ctx.log.reject(
                reason[0],
                generator,
                pair.chunk.id,
                reason[1],
                question=pair.question,
                answer=reply,
                fact=pair.fact,
            )
            if not ctx.synth.extractive_fallback:
                continue
            # The source's own sentence is a correct, if plain, answer to a question made from it.
            pair.answer, pair.origin = pair.fact, "extract"
            pair.scores = ctx.ground([pair.fact], [pair.chunk])[0]
            ctx.log.replaced_by_extract += 1
        kept.append(pair)
    return kept


def _judge(ctx: SynthContext, pairs: list[QAPair], answers: list[str]) -> list[bool]:
    system = ctx.prompts.render("judge_system")
    conversations = [
        chat(system, ("user", ctx.prompts.render("judge_user", passage=p.chunk.text, answer=a)))
        for p, a in zip(pairs, answers, strict=True)
    ]
    replies = ctx.teacher.generate(conversations, ctx.sampling("judge"))
    return [r.strip().lower().startswith("yes") for r in replies]


def _paraphrase(ctx: SynthContext, pairs: list[QAPair], generator: str, count: int) -> None:
    system = ctx.prompts.render("paraphrase_system")
    copies = ctx.prompts.example_replies("paraphrase")
    for variant in range(count):
        conversations = [ctx.prompts.with_examples("paraphrase", system, p.question) for p in pairs]
        replies = ctx.teacher.generate(conversations, ctx.sampling("paraphrase", variant))
        for pair, reply in zip(pairs, replies, strict=True):
            question = parse_question(reply)
            seen = {pair.question.lower(), *(q.lower() for q in pair.paraphrases)}
            if question is None or question in copies:
                ctx.log.reject(
                    "parse",
                    generator,
                    pair.chunk.id,
                    "no question in the paraphrase",
                    question=pair.question,
                    reply=reply,
                )
            elif question.lower() in seen:
                ctx.log.reject(
                    "near_duplicate",
                    generator,
                    pair.chunk.id,
                    "paraphrase repeats the question",
                    question=question,
                )
            elif not shares_terms(question, pair.question + " " + pair.fact) or (
                not ctx.finds_source(question, pair.chunk)
            ):
                ctx.log.reject(
                    "relevance",
                    generator,
                    pair.chunk.id,
                    "paraphrase drifted from the question",
                    question=pair.question,
                    reply=question,
                )
            else:
                pair.paraphrases.append(question)


def generate_qa(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    pairs = grounded_pairs(ctx, seeds, "qa", paraphrases=ctx.synth.paraphrases)
    samples = []
    for pair in pairs:
        for question in [pair.question, *pair.paraphrases]:
            samples.append(
                Sample(
                    messages=chat(
                        ctx.system_prompt, ("user", question), ("assistant", pair.answer)
                    ),
                    generator="qa",
                    chunk_id=pair.chunk.id,
                    source=pair.chunk.source,
                    teacher=ctx.teacher.id,
                    scores=pair.scores,
                    meta={
                        "fact": pair.fact,
                        "answer_origin": pair.origin,
                        "paraphrase": question != pair.question,
                    },
                )
            )
    return samples[:target]


def qa_calls_per_seed(settings: SynthConfig) -> float:
    """Teacher calls per seed chunk: question, answer, paraphrases (and judge) per fact."""
    return settings.questions_per_chunk * (2 + settings.paraphrases + settings.filters.judge)


GENERATORS.register("qa")(
    GeneratorSpec(
        run=generate_qa,
        samples_per_seed=lambda s: s.questions_per_chunk * (1 + s.paraphrases),
        calls_per_seed=qa_calls_per_seed,
    )
)
