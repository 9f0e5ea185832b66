"""The prompt formats the student is trained on and answers with at run time.

Training samples (synth) and the runtime build their messages with these functions, so the
tuned model sees at run time exactly the format it learned.

The main format is evidence first: the user turn holds a short evidence block (the
sentences of the retrieved passages that bear on the question, grouped under their
passage's number and heading) and the question; the assistant replies with the line it
relies on, quoted verbatim (``Quote: ...``), or with the recipe's refusal. A quote can be
checked against the evidence, so the runtime never shows a sentence the documents do not
contain, and its citation follows from the line it quotes. ``context_question`` is the
plain "answer from these passages" prompt of a quick-start RAG pipeline, kept for
comparison in ``eval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from domainkit.ingest import Chunk

Message = dict[str, str]

QUOTE_PREFIX = "Quote"
_MARKUP = re.compile(r"\*\*|__|`")
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_QUOTE = re.compile(r"^\s*Quote\s*(?:\[(\d{1,3})\])?\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)
INSTRUCTION = (
    "Quote the evidence line that answers the question. "
    "If no line answers it, say that the documents do not cover it."
)
# The prompt format's own block markers: a model that writes one has finished its answer and
# started imitating the prompt (small models do), so its reply ends there.
STOP_MARKERS = ("\nQuestion:", "\nPassages:")


def readable(text: str) -> str:
    """A sentence as the model reads and the user sees it: one line, no Markdown emphasis
    or list bullet."""
    return " ".join(_LIST_MARK.sub("", _MARKUP.sub("", text)).split()).strip("| ")


def passage_label(chunk: Chunk) -> str:
    page = f" (page {chunk.page})" if chunk.page else ""
    return f"{chunk.breadcrumb or chunk.source}{page}"


def format_evidence(groups: Sequence[tuple[int, Chunk, Sequence[str]]]) -> str:
    """``[n] Title > Heading`` then that passage's selected lines, one per line."""
    blocks = []
    for number, chunk, lines in groups:
        body = "\n".join(readable(line) for line in lines)
        blocks.append(f"[{number}] {passage_label(chunk)}\n{body}")
    return "\n\n".join(blocks)


def evidence_question(question: str, evidence_block: str) -> str:
    """The user turn of an evidence-first exchange."""
    return f"Evidence:\n{evidence_block}\n\nQuestion: {question.strip()}\n\n{INSTRUCTION}"


def quote_reply(line: str) -> str:
    """The assistant turn that quotes an evidence line."""
    return f"{QUOTE_PREFIX}: {readable(line)}"


@dataclass(frozen=True)
class Quote:
    number: int | None  # the passage number, when the reply gives one
    text: str


def parse_quote(reply: str) -> Quote | None:
    """The quoted line of a reply (and its passage number, if given), or None when the
    reply quotes nothing."""
    match = _QUOTE.match(reply)
    if not match or not match.group(2).strip():
        return None
    text = match.group(2).strip().splitlines()[0].strip().strip('"“”')
    return Quote(int(match.group(1)) if match.group(1) else None, text)


def format_passages(passages: Sequence[Chunk]) -> str:
    """Numbered whole passages with their document and heading path: ``[1] Title > Heading``."""
    blocks = []
    for number, chunk in enumerate(passages, start=1):
        blocks.append(f"[{number}] {passage_label(chunk)}\n{chunk.text.strip()}")
    return "\n\n".join(blocks)


def context_question(question: str, passages: Sequence[Chunk]) -> str:
    """A quick-start RAG prompt: whole passages, then "answer from the context"."""
    return (
        f"Context:\n{format_passages(passages)}\n\n"
        f"Question: {question.strip()}\n\n"
        "Answer the question using only the context above."
    )


def citation(number: int) -> str:
    return f"[{number}]"


def chat(system: str | None, *turns: tuple[str, str]) -> list[Message]:
    """Messages from an optional system prompt and (role, content) turns."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": role, "content": content} for role, content in turns]
