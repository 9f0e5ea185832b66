"""What the assistant gives back: an ``Answer`` (text, route, cited sources, the evidence,
the gate's reading), the ``PendingAnswer`` a caller waits on, and the error a conversation
that cannot be answered raises."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from domainkit.backends.base import GenRequest, GenResult
from domainkit.errors import DomainkitError


class ConversationError(DomainkitError):
    """The conversation cannot be answered as given (HTTP 400/422)."""


@dataclass
class Source:
    """A passage an answer was given from; ``number`` is its citation, ``[number]``."""

    number: int
    document: str
    title: str
    heading: str
    chunk_id: str
    score: float  # relevance of the passage's best selected sentence (or cosine, naive)
    page: int | None = None
    text: str = ""

    @classmethod
    def of(cls, number: int, chunk, score: float) -> Source:
        """The citation ``number`` of a passage (``ingest.Chunk``) with its score."""
        return cls(
            number=number,
            document=chunk.source,
            title=chunk.title,
            heading=" > ".join(chunk.headings),
            chunk_id=chunk.id,
            score=round(float(score), 4),
            page=chunk.page,
            text=chunk.text,
        )


@dataclass
class EvidenceLine:
    """A sentence of the evidence block, with where it is in its document and its line id
    (stable across rebuilds of the unchanged document: what a reviewer's verdict names)."""

    number: int
    text: str
    document: str
    start: int
    end: int
    score: float
    id: str = ""


@dataclass
class Answer:
    """One answer.

    Attributes:
        text: What the user reads.
        route: ``answer`` (the model's verified quote), ``evidence`` (the quote failed the
            check: the best evidence sentence instead), ``refusal``, ``closed`` (no
            retrieval) or ``rag`` (unchecked answer from whole passages, ``naive``).
        sources: The passages of the evidence, by citation number.
        quote: The model's reply when it quoted (before verification).
        evidence: The evidence block's sentences.
        line: The id of the line the answer opens with (None for a refusal).
        lines: The ids of all the lines its text is made of, in order.
        gate: The gate's features and probability of answerable, under ``auto``.
    """

    text: str
    route: str
    sources: list[Source] = field(default_factory=list)
    quote: str | None = None
    evidence: list[EvidenceLine] = field(default_factory=list)
    line: str | None = None
    lines: list[str] = field(default_factory=list)
    gate: dict | None = None
    confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    seconds: float = 0.0
    trimmed_turns: int = 0  # earlier turns dropped to fit the context budget
    # What the answer was made from (the plan and the model's raw result), so eval can
    # apply a newly calibrated gate or reader weight without generating again.
    reading: tuple[Any, GenResult | None] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = asdict(replace(self, reading=None))
        del data["reading"]
        return data


class PendingAnswer:
    """An answer being generated; ``result()`` waits for it, ``cancel()`` gives it up.

    ``future`` is the generation's own future (None when no model is needed): a server
    awaits it without holding a thread, then calls ``result()``, which no longer waits.
    """

    def __init__(
        self,
        finish: Callable[[GenResult | None], Answer],
        future: Future | None,
        request: GenRequest | None = None,
    ):
        self._finish, self.future, self._request = finish, future, request
        self._answer: Answer | None = None

    def result(self, timeout: float | None = None) -> Answer:
        if self._answer is None:
            result = self.future.result(timeout) if self.future is not None else None
            self._answer = self._finish(result)
        return self._answer

    def cancel(self) -> None:
        """The caller has gone: drop the request from the queue, or stop its generation at
        the next decoding step."""
        if self._request is not None:
            self._request.cancelled.set()
        if self.future is not None:
            self.future.cancel()
