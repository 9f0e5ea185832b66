"""Prometheus metrics of the HTTP server."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from domainkit.answer.answers import Answer

if TYPE_CHECKING:
    from domainkit.answer.assistant import Assistant


class ServerMetrics:
    """The Prometheus metrics ``GET /metrics`` serves: requests by status, answers by route,
    latency, time to first text, tokens, and the queue."""

    def __init__(self, registry, assistant: Assistant):
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = registry
        self.requests = Counter(
            "domainkit_requests", "Chat requests by HTTP status", ["status"], registry=registry
        )
        self.routes = Counter(
            "domainkit_answers",
            "Answers by route (answer, evidence, refusal, closed, rag)",
            ["route"],
            registry=registry,
        )
        self.latency = Histogram(
            "domainkit_request_seconds", "Time to the complete answer", registry=registry
        )
        self.first_token = Histogram(
            "domainkit_first_token_seconds", "Time to the first streamed text", registry=registry
        )
        self.tokens = Counter("domainkit_tokens", "Tokens processed", ["kind"], registry=registry)
        waiting = Gauge("domainkit_queue_waiting", "Requests waiting", registry=registry)
        waiting.set_function(lambda: assistant.scheduler.waiting)

    def answered(self, answer: Answer, started: float, first_token: float | None = None) -> None:
        self.requests.labels("200").inc()
        self.routes.labels(answer.route).inc()
        self.latency.observe(time.perf_counter() - started)
        if first_token is not None:
            self.first_token.observe(first_token)
        self.tokens.labels("prompt").inc(answer.prompt_tokens)
        self.tokens.labels("completion").inc(answer.completion_tokens)

    def failed(self, status: int) -> None:
        self.requests.labels(str(status)).inc()
