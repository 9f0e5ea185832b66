"""The review page and its API: ``domainkit review`` serves them on loopback,
``domainkit serve`` under ``/review`` when admin keys are configured. They answer with the
chat API's error bodies (``openai_api``) and sit behind the same key check."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domainkit.feedback.desk import ReviewDesk
from domainkit.feedback.review import MAX_LINES, ReviewError, Verdict
from domainkit.runtime.auth import authorize
from domainkit.runtime.openai_api import APIError, invalid, read_json, too_large

MAX_VERDICT_BYTES = 16_384
MAX_QUERY_CHARS = 500


class VerdictBody(BaseModel):
    """``POST /review/api/verdicts``."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(min_length=1, max_length=64)
    verdict: str
    line: str | None = Field(None, max_length=2000)
    text: str | None = Field(None, max_length=4000)
    # Further lines of an answer no single line holds, in order after ``line``.
    also: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=MAX_LINES - 1
    )


def add_review_routes(
    app: FastAPI,
    desk: ReviewDesk,
    keys: list[str],
    prefix: str = "/review",
    limit: Callable[[Request], None] | None = None,
) -> None:
    """The review page at ``prefix`` and its API under ``prefix/api``, behind ``keys``
    (none: open, for a server on loopback); ``limit`` refuses a flood (429)."""
    page = resources.files("domainkit.runtime").joinpath("static/review.html").read_text("utf-8")
    page = page.replace("{{KEYS}}", "true" if keys else "false").replace("{{PREFIX}}", prefix)

    def guard(request: Request) -> None:
        authorize(request, keys)
        if limit is not None:
            limit(request)

    @app.get(prefix, response_class=HTMLResponse, include_in_schema=False)
    async def review_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(f"{prefix}/api/pending")
    async def pending(request: Request, limit: int = 100) -> dict:
        guard(request)
        return {"exchanges": desk.pending(max(1, min(limit, 500)))}

    @app.get(f"{prefix}/api/search")
    async def search(request: Request, q: str = "") -> dict:
        guard(request)
        if not q.strip():
            raise APIError(422, "q: give words to search for", "invalid_request_error", "q")
        if len(q) > MAX_QUERY_CHARS:
            raise too_large(f"q is longer than {MAX_QUERY_CHARS} characters", "q")
        return {"lines": desk.search(q)}

    @app.get(f"{prefix}/api/stale")
    async def stale(request: Request) -> dict:
        guard(request)
        return {"reviews": desk.stale()}

    @app.post(f"{prefix}/api/verdicts")
    async def verdicts(request: Request) -> dict:
        guard(request)
        data = await read_json(request, MAX_VERDICT_BYTES)
        try:
            body = VerdictBody.model_validate(data)
        except ValidationError as e:
            raise invalid(e) from None
        if desk.log.get(body.exchange) is None:
            raise APIError(
                404, f"no exchange {body.exchange!r}", "invalid_request_error", "exchange"
            )
        try:
            entry = desk.mark(
                Verdict(body.exchange, body.verdict, body.line, body.text, tuple(body.also))
            )
        except ReviewError as e:
            raise APIError(422, str(e), "invalid_request_error", "verdict") from None
        return {"question": entry}
