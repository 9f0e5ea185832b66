"""The prompt formats the student is trained on and answers with at run time.

Training samples (synth) and the runtime build their messages with these functions, so the
tuned model sees at run time exactly the format it learned (the RAFT recipe).
"""

from __future__ import annotations

from collections.abc import Sequence

from domainkit.ingest import Chunk

Message = dict[str, str]


def format_passages(passages: Sequence[Chunk]) -> str:
    """Numbered passages with their document and heading path: ``[1] Title > Heading``."""
    blocks = []
    for number, chunk in enumerate(passages, start=1):
        page = f" (page {chunk.page})" if chunk.page else ""
        blocks.append(f"[{number}] {chunk.breadcrumb or chunk.source}{page}\n{chunk.text.strip()}")
    return "\n\n".join(blocks)


def context_question(question: str, passages: Sequence[Chunk]) -> str:
    """The user turn of a retrieval-augmented exchange."""
    return (
        f"Passages:\n{format_passages(passages)}\n\n"
        f"Question: {question.strip()}\n\n"
        "Answer using only the passages and cite the passage you used, like [1]. "
        "If the passages do not answer the question, say so."
    )


def citation(number: int) -> str:
    return f"[{number}]"


def chat(system: str | None, *turns: tuple[str, str]) -> list[Message]:
    """Messages from an optional system prompt and (role, content) turns."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": role, "content": content} for role, content in turns]
