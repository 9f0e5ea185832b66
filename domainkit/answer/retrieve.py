"""Retrieving for one turn of a conversation: its question, and the passages to read.

``Retrieval`` is what the answer path needs of a retriever: search, and the embedder and
corpus vocabulary that evidence selection and the gate share with it. The index's own
``retrieval.Retriever`` is one; eval hides passages behind another.
"""

from __future__ import annotations

from typing import Protocol

from domainkit.answer.answers import ConversationError
from domainkit.config.schema import RetrievalConfig
from domainkit.prompting import Message
from domainkit.retrieval import Embedder, Hit
from domainkit.retrieval.terms import CorpusVocabulary

# A follow-up this short usually leans on the previous question for what it is about.
FOLLOW_UP_WORDS = 6


class Retrieval(Protocol):
    """Search over a domain's passages."""

    settings: RetrievalConfig
    embedder: Embedder

    @property
    def vocabulary(self) -> CorpusVocabulary: ...

    def search(self, query: str, k: int | None = None, mode=None) -> list[Hit]: ...


def split_conversation(messages: list[Message]) -> tuple[str, list[Message]]:
    """The latest user question and the earlier user/assistant turns (system messages are
    replaced by the domain's own system prompt, which the model was trained with)."""
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise ConversationError("the conversation must end with a user message")
    question = turns[-1]["content"].strip()
    if not question:
        raise ConversationError("the last user message is empty")
    return question, turns[:-1]


def follows(question: str, history: list[Message]) -> str | None:
    """The previous question, when ``question`` is a short follow-up that leans on it."""
    earlier = [m["content"] for m in history if m["role"] == "user"]
    return earlier[-1] if earlier and len(question.split()) <= FOLLOW_UP_WORDS else None


def search_query(question: str, history: list[Message]) -> str:
    """What to search for: the question, and for a short follow-up the previous question
    too, which usually names what it refers to."""
    earlier = follows(question, history)
    return f"{earlier} {question}" if earlier else question
