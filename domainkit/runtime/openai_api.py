"""The OpenAI chat-completions wire format: the request schema and its limits, error
bodies, and the response bodies with domainkit's extra field.

Kept apart from the server (``runtime.server``) so that the format can be read, tested and
reused (a proxy, another web framework) without the app around it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domainkit.answer.answers import Answer, ConversationError
from domainkit.backends.base import BackendError
from domainkit.feedback.log import new_id


@dataclass
class ServerLimits:
    """What one request may ask for."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 64
    max_message_chars: int = 16_000
    max_tokens: int = 1024
    max_active: int = 32  # requests being answered at once; more get 503 at once
    max_feedback_bytes: int = 16_384
    feedback_per_minute: int = 60  # per client (API key, else address); more get 429


# -- request schema ---------------------------------------------------------------------------


class _Part(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Part]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


MAX_STOPS = 4  # as OpenAI's API
MAX_STOP_CHARS = 256


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that apply; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=1, description="only one choice per request")
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)
    stop: str | list[str] | None = None
    stream_options: StreamOptions | None = None
    policy: str | None = None  # one of the recipe's runtime.client_policies

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, stop: str | list[str] | None) -> list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop
        if stops is None:
            return None
        if len(stops) > MAX_STOPS or not all(0 < len(x) <= MAX_STOP_CHARS for x in stops):
            raise ValueError(
                f"at most {MAX_STOPS} stop sequences of 1 to {MAX_STOP_CHARS} characters"
            )
        return stops or None

    @property
    def stop_sequences(self) -> list[str]:
        """The client's stop sequences as a list (``stop`` may be one string)."""
        stop = self.stop
        return [stop] if isinstance(stop, str) else list(stop or [])

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str, param=None, code=None, retry_after=None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )
        self.retry_after = retry_after


def error_response(e: APIError) -> JSONResponse:
    body = {"message": e.message, "type": e.type, "param": e.param, "code": e.code}
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
    return JSONResponse({"error": body}, status_code=e.status, headers=headers)


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request's JSON object body, at most ``max_bytes``, or the ``APIError`` saying
    why not (415 not JSON, 413 too large, 400 malformed)."""
    # A web page can POST text/plain or a form to localhost without asking; JSON needs a
    # CORS preflight this server never grants.
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise APIError(415, "send the body as application/json", "invalid_request_error")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(f"request body over {max_bytes} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise too_large(f"request body over {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad JSON, a 5,000-digit number, deep nesting
        raise APIError(
            400, f"the body is not valid JSON: {str(e)[:200]}", "invalid_request_error"
        ) from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", "invalid_request_error")
    return data


async def read_chat(request: Request, limits: ServerLimits) -> ChatRequest:
    """The request's body as a checked ``ChatRequest``, or the ``APIError`` saying why not."""
    data = await read_json(request, limits.max_body_bytes)
    try:
        chat = ChatRequest.model_validate(data)
    except ValidationError as e:
        raise invalid(e) from None
    if len(chat.messages) > limits.max_messages:
        raise too_large(f"more than {limits.max_messages} messages", "messages")
    for i, message in enumerate(chat.messages):
        if len(message.text) > limits.max_message_chars:
            raise too_large(
                f"message {i} is longer than {limits.max_message_chars} characters",
                f"messages.{i}.content",
            )
    wanted = chat.max_completion_tokens or chat.max_tokens
    if wanted is not None and wanted > limits.max_tokens:
        raise APIError(
            422,
            f"max_tokens may be at most {limits.max_tokens}",
            "invalid_request_error",
            param="max_tokens",
        )
    return chat


def invalid(error: ValidationError) -> APIError:
    """A 422 naming the first field a body got wrong."""
    first = error.errors()[0]
    param = ".".join(str(x) for x in first["loc"])
    return APIError(422, f"{param}: {first['msg']}", "invalid_request_error", param=param)


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, "invalid_request_error", param=param, code="too_large")


class ChunkStream:
    """The server-sent events of one streamed completion, as OpenAI sends them."""

    DONE = "data: [DONE]\n\n"

    def __init__(self, model_name: str, ident: str | None = None):
        self.ident, self.created = ident or new_id(), int(time.time())
        self.model_name = model_name

    def delta(self, delta: dict, finish: str | None = None, **extra) -> str:
        """A chunk of the one choice: new text (or the role), and how it finished."""
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    def usage(self, answer: Answer) -> str:
        """OpenAI's last chunk when the client asks for usage: no choices, the usage."""
        return self._event([], usage=usage(answer))

    @staticmethod
    def error(error: Exception) -> str:
        """A failure after the response has started, reported in-band as OpenAI does."""
        body = {"error": {"message": public_message(error), "type": "server_error"}}
        return f"data: {json.dumps(body)}\n\n"

    def _event(self, choices: list, **extra) -> str:
        body = {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"


class StopScanner:
    """Cuts streamed text at the first of a client's stop sequences. Text that could be
    the start of a stop sequence is held back until the next piece shows it is not."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held back) that is safe to show now."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            shown, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return shown
        cut = max(0, len(self.pending) - self.hold)
        shown, self.pending = self.pending[:cut], self.pending[cut:]
        return shown

    def flush(self) -> str:
        """What was held back, once no more text comes."""
        rest, self.pending = self.pending, ""
        return rest


def usage(answer: Answer) -> dict:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def public_message(error: Exception) -> str:
    """What a client may read of a failure: a backend's own message, else nothing internal."""
    if isinstance(error, (BackendError, ConversationError)):
        return str(error)
    return "generation failed"


def extra_fields(answer: Answer, disclaimer: str | None = None) -> dict:
    return {
        "disclaimer": disclaimer,  # the recipe's, on a conversation's first answer
        "route": answer.route,
        "sources": [s.__dict__ for s in answer.sources],
        "quote": answer.quote,
        "evidence": [e.__dict__ for e in answer.evidence],
        "line": answer.line,
        "gate": answer.gate,
        "confidence": answer.confidence,
        "trimmed_turns": answer.trimmed_turns,
        "seconds": round(answer.seconds, 3),
    }


def models_body(model_name: str) -> dict:
    """``GET /v1/models``: the one model this server answers as."""
    return {
        "object": "list",
        "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "domainkit"}],
    }


def completion_body(
    answer: Answer, model_name: str, disclaimer: str | None = None, ident: str | None = None
) -> dict:
    return {
        "id": ident or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": usage(answer),
        "domainkit": extra_fields(answer, disclaimer),
    }


class ClientRateLimit:
    """At most ``per_minute`` requests a minute from one client (its API key, else its
    address), as a token bucket; beyond that ``check`` raises 429 with ``Retry-After``."""

    MAX_CLIENTS = 10_000  # buckets kept; the oldest go first

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time)

    def check(self, request: Request) -> None:
        client = request.headers.get("authorization") or (
            request.client.host if request.client else "-"
        )
        now = time.monotonic()
        tokens, then = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            wait = max(1, int((1 - tokens) / self.rate) + 1)
            raise APIError(
                429,
                "too many requests from this client; slow down",
                "rate_limit_error",
                code="rate_limited",
                retry_after=wait,
            )
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > self.MAX_CLIENTS:
            self._buckets.pop(next(iter(self._buckets)))
