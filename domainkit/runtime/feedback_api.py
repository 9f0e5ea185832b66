"""The conversation log on the HTTP side: each answered exchange recorded under its chat
completion id, and ``POST /v1/feedback`` taking a thumbs up or down on it.

Feedback is the chat API's sibling: the same keys, body limits and error bodies, plus a
per-client rate (429) and a cap on writes in progress (503) so a flood cannot grow the
log or tie up the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domainkit.answer.answers import Answer
from domainkit.feedback.log import (
    MAX_COMMENT_CHARS,
    REASONS,
    ConversationLog,
    TooMuchFeedback,
    UnknownExchange,
    exchange_of,
)
from domainkit.prompting import Message
from domainkit.runtime.auth import authorize
from domainkit.runtime.openai_api import (
    APIError,
    ClientRateLimit,
    ServerLimits,
    invalid,
    read_json,
    too_large,
)

log = logging.getLogger(__name__)

# Feedback writes in progress at once; more get 503 (a write is a few milliseconds).
MAX_FEEDBACK_WRITES = 16


class Recorder:
    """Writes each answered exchange to the log (off the event loop); a failed write is
    logged and the answer still goes out."""

    def __init__(self, conversations: ConversationLog | None, build: str, source: str = "serve"):
        self.log, self.build, self.source = conversations, build, source

    async def record(
        self, ident: str, messages: Sequence[Message], answer: Answer, policy: str
    ) -> None:
        if self.log is None:
            return
        exchange = exchange_of(
            ident, messages, answer, source=self.source, build=self.build, policy=policy
        )
        try:
            await asyncio.to_thread(self.log.record, exchange)
        except Exception:  # noqa: BLE001 - the log must never cost the user the answer
            log.exception("could not record exchange %s in the conversation log", ident)


class FeedbackBody(BaseModel):
    """``POST /v1/feedback``: a rating of one answer, named by its completion id."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64, description="The chat completion's id.")
    rating: str = Field(description="up or down.")
    reason: str | None = Field(
        None, description=f"Why down: one of {', '.join(REASONS)} (optional)."
    )
    comment: str | None = Field(None, description="A few words, optional.")


def add_feedback_route(
    app: FastAPI,
    conversations: ConversationLog | None,
    keys: list[str],
    limits: ServerLimits,
) -> None:
    """``POST /v1/feedback`` on ``app``."""
    rate = ClientRateLimit(limits.feedback_per_minute)
    writing = 0

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        nonlocal writing
        authorize(request, keys)
        rate.check(request)
        body = _checked(await read_json(request, limits.max_feedback_bytes))
        if conversations is None:
            raise APIError(
                404, "the conversation log is off (runtime.log)", "invalid_request_error", "id"
            )
        if writing >= MAX_FEEDBACK_WRITES:
            raise APIError(
                503, "the server is busy; retry shortly", "server_busy", code="busy", retry_after=1
            )
        writing += 1
        try:
            count = await asyncio.to_thread(
                conversations.feedback, body.id, body.rating, body.reason, body.comment
            )
        except UnknownExchange:
            raise APIError(
                404, f"no answer has the id {body.id!r}", "invalid_request_error", "id"
            ) from None
        except TooMuchFeedback as e:
            raise APIError(429, str(e), "rate_limit_error", "id", code="rate_limited") from None
        finally:
            writing -= 1
        return {"object": "feedback", "id": body.id, "rating": body.rating, "count": count}


def _checked(data: dict) -> FeedbackBody:
    """The body as ``FeedbackBody``, or the error saying what is wrong with it."""
    comment = data.get("comment")
    if isinstance(comment, str) and len(comment) > MAX_COMMENT_CHARS:
        raise too_large(f"comment is longer than {MAX_COMMENT_CHARS} characters", "comment")
    try:
        body = FeedbackBody.model_validate(data)
    except ValidationError as e:
        raise invalid(e) from None
    if body.rating not in ("up", "down"):
        raise APIError(422, "rating: expected up or down", "invalid_request_error", "rating")
    if body.reason is not None and body.reason not in REASONS:
        allowed = ", ".join(REASONS)
        raise APIError(422, f"reason: expected one of {allowed}", "invalid_request_error", "reason")
    return body
