"""Baize-style self-chat in the runtime's evidence format, turn by turn.

The teacher plays the user (the recipe's user persona, the passage's topic, the last
answer it got and the fact it wants next; never the passage itself); a turn it fails to
write is made from the fact by template. Each answer is the fact's line quoted from the
evidence the runtime would select for that turn, so it is correct by construction. The
sample is the conversation as the runtime sees it: earlier turns as the user saw them
(question, then the answer built from the quote) and the last turn with its evidence
block; only the last reply is trained on (``meta.train_on = "last"``), since the earlier
ones have no evidence in the prompt and would teach answering without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domainkit.answer.compose import compose
from domainkit.answer.retrieve import search_query
from domainkit.ingest import Chunk
from domainkit.prompting import chat
from domainkit.synth.context import SynthContext
from domainkit.synth.facts import Fact, facts_of, template_question
from domainkit.synth.filters import shares_terms, text_problem
from domainkit.synth.generators import GENERATORS, GeneratorSpec
from domainkit.synth.parsing import parse_question
from domainkit.synth.sample import Sample


@dataclass
class Dialog:
    chunk: Chunk
    facts: list[Fact]
    turns: list[tuple[str, str, str]] = field(default_factory=list)  # question, shown, origin
    last: tuple[str, str] | None = None  # (user turn with evidence, quote) of the final turn


def generate_self_chat(ctx: SynthContext, seeds: list[Chunk], target: int) -> list[Sample]:
    dialogs = [
        Dialog(c, facts) for c in seeds if len(facts := facts_of(c, ctx.synth.self_chat_turns)) >= 2
    ]
    for turn in range(ctx.synth.self_chat_turns):
        active = [d for d in dialogs if turn < len(d.facts)]
        if not active:
            break
        for dialog, (question, origin) in zip(active, _user_turns(ctx, active, turn), strict=True):
            _answer(ctx, dialog, question, origin)
    return [_sample(ctx, d) for d in dialogs if len(d.turns) >= 2][:target]


def _user_turns(ctx: SynthContext, dialogs: list[Dialog], turn: int) -> list[tuple[str, str]]:
    conversations = []
    for d in dialogs:
        system = ctx.prompts.render(
            "user_turn_system",
            user_persona=ctx.persona["user_persona"],
            assistant_name=ctx.persona["assistant_name"],
            topic=d.chunk.breadcrumb or d.chunk.title,
        )
        previous = f"You were just told: {d.turns[-1][1]}\n\n" if d.turns else ""
        user = ctx.prompts.render("user_turn_user", previous=previous, fact=d.facts[turn].text)
        conversations.append(ctx.prompts.with_examples("question", system, user))
    replies = ctx.teacher.generate(conversations, ctx.sampling("user", turn))
    out = []
    for dialog, reply in zip(dialogs, replies, strict=True):
        fact = dialog.facts[turn]
        question = parse_question(reply)
        problem = (
            "no question in the reply"
            if question is None
            else (
                text_problem(question, ctx.synth.filters, kind="question")
                or (None if shares_terms(question, fact.text) else "shares no term with the fact")
            )
        )
        if problem is None and question is not None:
            out.append((question, "teacher"))
            continue
        ctx.log.reject(
            "parse" if question is None else "relevance",
            "self_chat",
            dialog.chunk.id,
            f"user turn {turn + 1}: {problem}",
            reply=reply,
        )
        out.append((template_question(fact, ctx.vocabulary), "template"))
    return out


def _answer(ctx: SynthContext, dialog: Dialog, question: str, origin: str) -> None:
    fact = dialog.facts[len(dialog.turns)]
    side = ctx.is_validation(dialog.chunk.id)
    earlier = [{"role": "user", "content": q} for q, _, _ in dialog.turns[-1:]]
    query = search_query(question, earlier)  # searched as the runtime searches a follow-up
    evidence = ctx.evidence_for(query, side, gold=fact, question=question)
    turn = ctx.quote_turn(question, evidence, fact)
    if turn is None:
        dialog.facts = dialog.facts[: len(dialog.turns)]  # the dialog ends here
        return
    user, reply, line = turn
    shown = compose(evidence, line, ctx.config.runtime.answer_words)
    dialog.turns.append((question, shown, origin))
    dialog.last = (user, reply)


def _sample(ctx: SynthContext, dialog: Dialog) -> Sample:
    history = [t for q, shown, _ in dialog.turns[:-1] for t in (("user", q), ("assistant", shown))]
    assert dialog.last is not None, "a sample is made of a dialog with a turn"
    user, reply = dialog.last
    return Sample(
        messages=chat(ctx.system_prompt, *history, ("user", user), ("assistant", reply)),
        generator="self_chat",
        chunk_id=dialog.chunk.id,
        source=dialog.chunk.source,
        teacher=ctx.teacher.id,
        meta={
            "question": dialog.turns[-1][0],
            "question_origins": [o for _, _, o in dialog.turns],
            "turns": len(dialog.turns),
            "train_on": "last",
            "answer_origin": "quote",
        },
    )


GENERATORS.register("self_chat")(
    GeneratorSpec(
        run=generate_self_chat,
        samples_per_seed=lambda s: 1.0,
        calls_per_seed=lambda s: float(s.self_chat_turns),
    )
)
