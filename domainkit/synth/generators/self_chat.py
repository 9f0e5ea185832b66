"""Baize-style self-chat: the teacher plays the user and the assistant in separate calls.

The simulated user sees the recipe's user persona, the chunk's topic, the last answer it got
and the fact it wants to find out next; never the assistant's instructions or the chunk. The
assistant sees the recipe's system prompt and the chunk; never the user's hint (Baize v2
generates each side separately). A dialog is kept up to its last grounded exchange."""

from __future__ import annotations

from dataclasses import dataclass, field

from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.synth.context import SynthContext
from domainkit.synth.filters import shares_terms, text_problem
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.parsing import clean_reply, fact_sentences, parse_question
from domainkit.synth.sample import Sample


@dataclass
class Dialog:
    chunk: Chunk
    facts: list[str]
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant)
    scores: list[dict[str, float]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    open: bool = True


def generate_self_chat(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    dialogs = [
        Dialog(c, facts)
        for c in seeds
        if (facts := fact_sentences(c.text, ctx.synth.self_chat_turns))
    ]
    for turn in range(ctx.synth.self_chat_turns):
        active = [d for d in dialogs if d.open and turn < len(d.facts)]
        if not active:
            break
        questions = _user_turns(ctx, active, turn)
        asked = [(d, q) for d, q in zip(active, questions, strict=True) if q is not None]
        _assistant_turns(ctx, asked, turn)
    return [_sample(ctx, d) for d in dialogs if d.turns][:target]


def _user_turns(ctx: SynthContext, dialogs: list[Dialog], turn: int) -> list[str | None]:
    conversations = []
    for d in dialogs:
        system = ctx.prompts.render(
            "user_turn_system",
            user_persona=ctx.persona["user_persona"],
            assistant_name=ctx.persona["assistant_name"],
            topic=d.chunk.breadcrumb or d.chunk.title,
        )
        previous = f"You were just told: {d.turns[-1][1]}\n\n" if d.turns else ""
        user = ctx.prompts.render("user_turn_user", previous=previous, fact=d.facts[turn])
        conversations.append(ctx.prompts.with_examples("question", system, user))
    replies = ctx.teacher.generate(conversations, ctx.sampling("user", turn))
    questions = []
    for dialog, reply in zip(dialogs, replies, strict=True):
        question = parse_question(reply)
        if question is None:
            problem = ("parse", "no question in the reply")
        elif why := text_problem(question, ctx.synth.filters, kind="question"):
            problem = ("length", why)
        elif not shares_terms(question, dialog.facts[turn]):
            problem = ("relevance", "question shares no term with the fact asked about")
        else:
            problem = None
        if problem:
            ctx.log.reject(
                problem[0],
                "self_chat",
                dialog.chunk.id,
                f"user turn {turn + 1}: {problem[1]}",
                reply=reply,
            )
            dialog.open = False
            question = None
        questions.append(question)
    return questions


def _assistant_turns(ctx: SynthContext, asked: list[tuple[Dialog, str]], turn: int) -> None:
    conversations = []
    for dialog, question in asked:
        system = ctx.prompts.render(
            "assistant_turn_system", system_prompt=ctx.system_prompt, passage=dialog.chunk.text
        )
        history = [t for u, a in dialog.turns for t in (("user", u), ("assistant", a))]
        conversations.append(chat(system, *history, ("user", question)))
    replies = [clean_reply(r) for r in ctx.teacher.generate(conversations, ctx.sampling("answer"))]
    scores = ctx.ground(replies, [d.chunk for d, _ in asked])
    for (dialog, question), reply, score in zip(asked, replies, scores, strict=True):
        problem = text_problem(reply, ctx.synth.filters, kind="answer")
        if problem is None and ctx.grounded(score):
            dialog.turns.append((question, reply))
            dialog.scores.append(score)
            dialog.origins.append("teacher")
            continue
        detail = problem or f"grounding {score['grounding']:.2f}"
        ctx.log.reject(
            "length" if problem else "grounding",
            "self_chat",
            dialog.chunk.id,
            f"assistant turn {turn + 1}: {detail}",
            question=question,
            answer=reply,
        )
        if ctx.synth.extractive_fallback:
            fact = dialog.facts[turn]
            dialog.turns.append((question, fact))
            dialog.scores.append(ctx.ground([fact], [dialog.chunk])[0])
            dialog.origins.append("extract")
            ctx.log.replaced_by_extract += 1
        else:
            dialog.open = False


def _sample(ctx: SynthContext, dialog: Dialog) -> Sample:
    turns = [t for u, a in dialog.turns for t in (("user", u), ("assistant", a))]
    return Sample(
        messages=chat(ctx.system_prompt, *turns),
        generator="self_chat",
        chunk_id=dialog.chunk.id,
        source=dialog.chunk.source,
        teacher=ctx.teacher.id,
        scores={"grounding": min(s["grounding"] for s in dialog.scores)},
        meta={"answer_origins": dialog.origins, "turns": len(dialog.turns)},
    )


GENERATORS.register("self_chat")(
    GeneratorSpec(
        run=generate_self_chat,
        samples_per_seed=lambda s: 1.0,
        calls_per_seed=lambda s: 2.0 * s.self_chat_turns,
    )
)
