"""An OpenAI-compatible HTTP server for an ``Assistant``, with a web chat page.

``POST /v1/chat/completions`` (streamed as server-sent events or not) and ``GET /v1/models``
work with the official ``openai`` client; each response carries an extra ``domainkit``
field with the route taken, the sources cited and the confidence. ``GET /healthz``,
``GET /metrics`` (Prometheus text) and the page at ``/`` complete it.

Errors use OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``, with
400 (malformed), 401 (bad key), 413 (too large), 422 (invalid fields) and 503 (busy, with
``Retry-After``); unexpected failures are logged and answered with a 500 that carries no
traceback.

Admission: at most ``ServerLimits.max_active`` requests are being answered at once
(planned, queued or generating); beyond that a request gets 503 at once, never an unbounded
wait. A waiting request holds no thread: it awaits its generation's future. A client that
disconnects, streaming or not, has its request dropped from the queue or stopped within one
decoding step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from domainkit.answer.answers import Answer, ConversationError
from domainkit.answer.assistant import Assistant
from domainkit.backends import BackendError
from domainkit.backends.scheduler import BusyError
from domainkit.feedback.desk import ReviewDesk
from domainkit.feedback.log import REASONS, ConversationLog, new_id
from domainkit.runtime import openai_api as api
from domainkit.runtime.auth import authorize
from domainkit.runtime.feedback_api import Recorder, add_feedback_route
from domainkit.runtime.metrics import ServerMetrics
from domainkit.runtime.openai_api import APIError, ClientRateLimit, ServerLimits, StopScanner
from domainkit.runtime.review_page import add_review_routes

log = logging.getLogger(__name__)


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


# -- the app ---------------------------------------------------------------------------------


def create_app(
    assistant: Assistant,
    *,
    model_name: str,
    api_keys: set[str] | None = None,
    limits: ServerLimits | None = None,
    allowed_hosts: list[str] | None = None,
    conversations: ConversationLog | None = None,
    build: str = "-",
    review: ReviewDesk | None = None,
    admin_keys: set[str] | None = None,
):
    """The FastAPI app.

    ``allowed_hosts`` (Host header values, as Starlette's ``TrustedHostMiddleware`` takes
    them) guards a server on loopback against DNS rebinding: a web page whose domain was
    re-pointed at 127.0.0.1 sends its own name as Host. None accepts any Host.

    With ``conversations`` every answer is recorded under its completion id (``build``
    names the build that answered) and ``POST /v1/feedback`` rates it. With ``review`` and
    ``admin_keys`` the review page is served at ``/review``, behind those keys only.
    """
    limits = limits or ServerLimits()
    keys = sorted(api_keys or ())
    metrics = ServerMetrics(CollectorRegistry(), assistant)
    app = FastAPI(
        title=f"domainkit: {model_name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None if keys else "/openapi.json",  # the schema is not public with keys
    )
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    recorder = Recorder(conversations, build)
    chat = _ChatEndpoint(assistant, model_name, keys, limits, metrics, recorder)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await chat(request)

    add_feedback_route(app, conversations, keys, limits)
    if review is not None and admin_keys:
        rate = ClientRateLimit(limits.feedback_per_minute)
        add_review_routes(app, review, sorted(admin_keys), limit=rate.check)
    add_error_handlers(app)
    page = _chat_page(
        model_name, bool(keys), assistant.settings.client_policies, conversations is not None
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        return chat.health()

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorize(request, keys)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request, keys)
        return api.models_body(model_name)

    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's error body; nothing internal in a 500."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return api.error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return api.error_response(APIError(e.status_code, str(e.detail), "invalid_request_error"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return api.error_response(APIError(500, "internal server error", "server_error"))


def local_hosts(host: str) -> list[str] | None:
    """The Host values a server bound to loopback accepts (a web page re-pointed at
    127.0.0.1 by DNS rebinding sends its own name); None for any other interface."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "::1", "[::1]"]
    return None


def _chat_page(model_name: str, keys: bool, policies: Sequence[str], feedback: bool) -> str:
    """The web chat page for this model (names escaped; the key field shown when needed,
    the thumbs when answers are logged)."""
    page = resources.files("domainkit.runtime").joinpath("static/index.html").read_text("utf-8")
    options = "".join(f"<option>{html.escape(p)}</option>" for p in policies)
    reasons = json.dumps(REASONS)
    return (
        page.replace("{{MODEL_JSON}}", json.dumps(model_name))
        .replace("{{MODEL}}", html.escape(model_name))
        .replace("{{KEYS}}", "true" if keys else "false")
        .replace("{{FEEDBACK}}", "true" if feedback else "false")
        .replace("{{REASONS_JSON}}", reasons)
        .replace("{{POLICY_OPTIONS}}", options)
    )


def _busy(assistant: Assistant, message: str) -> APIError:
    # A rough wait: the batches ahead of this request, a second or two each.
    batches = 1 + assistant.scheduler.waiting // max(1, assistant.scheduler.max_batch)
    return APIError(503, message, "server_busy", code="busy", retry_after=min(60, batches))


async def _answer_of(request: Request, pending) -> Answer:
    """Wait for a pending answer without holding a thread; give it up if the client
    goes away."""
    if pending.future is not None:
        waiting = asyncio.wrap_future(pending.future)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.25)
            if done:
                break
            if await request.is_disconnected():
                pending.cancel()
                raise _ClientGone
    return pending.result()


class _ChatEndpoint:
    """``POST /v1/chat/completions``: admission (at most ``limits.max_active`` requests in
    progress, 503 beyond), the answer, streamed (SSE) or whole, and its metrics."""

    def __init__(self, assistant: Assistant, model_name: str, keys, limits, metrics, recorder):
        self.assistant, self.model_name, self.keys = assistant, model_name, keys
        self.limits, self.metrics, self.recorder = limits, metrics, recorder
        self.active = 0  # requests being answered; the event loop is the only writer

    def health(self) -> dict:
        """``/healthz``: readiness (room for another request) and what is in progress."""
        scheduler = self.assistant.scheduler
        return {
            "status": "ok",
            "ready": self.active < self.limits.max_active,
            "model": self.model_name,
            "tuned": self.assistant.tuned,
            "policy": self.assistant.settings.policy,
            "active": self.active,
            "max_active": self.limits.max_active,
            "waiting": scheduler.waiting,
            "generating": scheduler.running,
        }

    async def __call__(self, request: Request):
        if self.active >= self.limits.max_active:
            self.metrics.failed(503)
            return api.error_response(
                _busy(
                    self.assistant,
                    f"the server is busy ({self.limits.max_active} requests in progress)",
                )
            )
        self.active += 1
        streaming = False
        try:
            response = await self._chat(request)
            streaming = isinstance(response, StreamingResponse)
            return response
        finally:
            if not streaming:  # a stream releases its place when it ends
                self.active -= 1

    async def _chat(self, request: Request):
        started = time.perf_counter()
        ident = new_id()
        try:
            authorize(request, self.keys)
            chat = await api.read_chat(request, self.limits)
            messages = [{"role": m.role, "content": m.text} for m in chat.messages]
            if chat.policy and chat.policy not in self.assistant.settings.client_policies:
                allowed = ", ".join(self.assistant.settings.client_policies)
                raise APIError(
                    422,
                    f"policy {chat.policy!r} is not available to clients (allowed: {allowed})",
                    "invalid_request_error",
                    param="policy",
                )
            submit = functools.partial(
                self.assistant.submit,
                messages,
                policy=chat.policy,
                max_tokens=chat.max_completion_tokens or chat.max_tokens,
                temperature=chat.temperature,
                seed=chat.seed,
            )
            first_turn = not any(m["role"] == "assistant" for m in messages)
            disclaimer = self.assistant.config.disclaimer if first_turn else None
            policy = chat.policy or self.assistant.settings.policy
            record = functools.partial(self.recorder.record, ident, messages, policy=policy)
            if chat.stream:
                usage = chat.stream_options is not None and chat.stream_options.include_usage
                response = await self._stream(
                    request, submit, disclaimer, chat.stop_sequences, usage, ident, record
                )
            else:
                # Planning (retrieval, evidence) is short CPU work in a thread; the wait for
                # generation holds none.
                pending = await asyncio.to_thread(submit)
                answer = await _answer_of(request, pending)
                self.metrics.answered(answer, started)
                scanner = StopScanner(chat.stop_sequences)
                text = scanner.feed(answer.text) + scanner.flush()
                if scanner.stopped:
                    answer = replace(answer, text=text, finish_reason="stop")
                await record(answer)
                response = api.completion_body(answer, self.model_name, disclaimer, ident)
        except _ClientGone:
            self.metrics.failed(499)
            return Response(status_code=499)
        except APIError as e:
            self.metrics.failed(e.status)
            return api.error_response(e)
        except BusyError as e:
            self.metrics.failed(503)
            return api.error_response(_busy(self.assistant, str(e)))
        except ConversationError as e:
            self.metrics.failed(400)
            return api.error_response(APIError(400, str(e), "invalid_request_error"))
        except BackendError as e:
            self.metrics.failed(502)
            return api.error_response(APIError(502, str(e), "backend_error"))
        return response

    async def _stream(
        self, request: Request, submit, disclaimer, stops, include_usage, ident, record
    ):
        pipe = _TextPipe(asyncio.get_running_loop())
        # Planning and queueing happen before the response starts, so "busy" and bad
        # conversations still get their status codes.
        pending = await asyncio.to_thread(submit, on_text=pipe.put)
        if pending.future is not None:
            asyncio.wrap_future(pending.future).add_done_callback(pipe.close)
        else:
            pipe.close()
        return StreamingResponse(
            self._events(
                pending, pipe, disclaimer, StopScanner(stops), include_usage, ident, record
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self, pending, pipe, disclaimer, scanner: StopScanner, include_usage, ident, record
    ):
        """The SSE events of one streamed answer: its text up to a client's stop sequence,
        the final chunk with the ``domainkit`` fields (once the exchange is in the log, so
        feedback on it finds it), usage when asked, then ``[DONE]``."""
        sse = api.ChunkStream(self.model_name, ident)
        shown: list[str] = []

        def content(text: str):
            """The text up to a stop sequence; once one is seen the generation stops."""
            if scanner.stopped:
                return
            piece = scanner.feed(text)
            if scanner.stopped:
                pending.cancel()  # the row stops at its next decoding step
            if piece:
                shown.append(piece)
                yield sse.delta({"content": piece})

        finished = False
        try:
            yield sse.delta({"role": "assistant", "content": ""})
            while (text := await pipe.queue.get()) is not None:
                for event in content(text):
                    yield event
            try:
                answer = pending.result()
            except Exception as e:  # already streaming: report in-band, as OpenAI does
                log.error("generation failed while streaming: %s", e)
                self.metrics.failed(500)
                finished = True
                yield sse.error(e)
                return
            for text in pipe.rest():  # text queued after the result was ready
                for event in content(text):
                    yield event
            if rest := scanner.flush():
                shown.append(rest)
                yield sse.delta({"content": rest})
            self.metrics.answered(answer, pipe.started, pipe.first_token)
            finish = "stop" if scanner.stopped else answer.finish_reason
            await record(replace(answer, text="".join(shown)) if scanner.stopped else answer)
            finished = True
            yield sse.delta({}, finish, domainkit=api.extra_fields(answer, disclaimer))
            if include_usage:
                yield sse.usage(answer)
            yield sse.DONE
        finally:
            if not finished:  # the client went away mid-answer
                pending.cancel()
                self.metrics.failed(499)
            self.active -= 1


class _TextPipe:
    """Streamed text from the generating thread (or, for a checked answer, the event loop
    itself) to the response; ``None`` marks the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.loop_thread = loop, threading.get_ident()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token: float | None = None  # seconds to the first text

    def put(self, text: str) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter() - self.started
        if threading.get_ident() == self.loop_thread:
            self.queue.put_nowait(text)
        else:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, text)

    def close(self, _future=None) -> None:
        self.queue.put_nowait(None)

    def rest(self) -> list[str]:
        """What is still queued."""
        pieces = []
        while not self.queue.empty():
            if (text := self.queue.get_nowait()) is not None:
                pieces.append(text)
        return pieces


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Run ``app`` with uvicorn in a background thread; yields its base URL. Port 0 picks a
    free port. For tests, benchmarks and embedding the server in another program."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="domainkit-server", daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(10)


__all__ = ["ServerLimits", "create_app", "serve_in_thread"]
