"""Helpers shared by the runtime tests: fake backends, request helpers and a question."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time

from domainkit.answer.gate import Gate
from domainkit.backends import GenResult
from domainkit.backends.scheduler import Scheduler
from domainkit.config import load_domain
from domainkit.runtime import Assistant
from domainkit.runtime.server import ServerLimits, create_app

WARRANTY_Q = "How long is the warranty on a Perch speaker?"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def with_settings(assistant, gate=None, **settings):
    """The same model and index under other runtime settings (and gate)."""
    return assistant.with_parts(gate=gate, settings=assistant.settings.model_copy(update=settings))


@contextlib.contextmanager
def model_calls(assistant):
    """The requests the assistant's backend is asked for while the block runs: the size of
    each ``generate`` call, and 1 for each request scored or joining the continuous batch."""
    calls: list[int] = []
    generator = assistant.scheduler.generator
    wrapped = {}
    for name in ("generate", "score_choices", "row"):
        original = getattr(generator, name, None)
        if original is None:
            continue
        wrapped[name] = original

        def counting(first, *rest, _original=original, _name=name):
            calls.append(len(first) if _name == "generate" else 1)
            return _original(first, *rest)

        setattr(generator, name, counting)
    try:
        yield calls
    finally:
        for name, original in wrapped.items():
            setattr(generator, name, original)


# A gate that answers unless the question names something the documents never mention.
NAMES_ONLY = Gate(
    weights={"dense": 0.0, "coverage": 0.0, "unknown": -10.0, "novel": 0.0, "model_refusal": 0.0},
    bias=5.0,
)


class FakeGenerator:
    """Replies ``reply`` in three pieces; ``gate`` holds generation, ``fail`` breaks it.
    It cannot score choices, like an OpenAI-compatible endpoint."""

    context_limit = 4096

    def __init__(self, reply: str = "Two years [1]."):
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.reply = reply

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) + 4 for m in messages)

    def count_text(self, text):
        return len(text.split())

    def generate(self, requests):
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("secret internal detail")
        words = self.reply.split(" ")
        pieces = [" ".join(words[:1]) + " ", " ".join(words[1:-1]) + " ", words[-1]]
        for r in requests:
            for piece in pieces:
                if r.on_text:
                    r.on_text(piece)
        return [GenResult(self.reply, 10, 3, "stop", -0.1) for _ in requests]


def client_for(assistant, **kwargs):
    from fastapi.testclient import TestClient

    app = create_app(assistant, model_name="test-domain", **kwargs)
    return TestClient(app, raise_server_exceptions=False)


def post_chat(client, body, **kwargs):
    return client.post("/v1/chat/completions", json=body, **kwargs)


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert "Traceback" not in response.text
    return error


def openai_client(url):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


class SlowGenerator:
    """Streams ``steps`` words, one every ``delay`` seconds, stopping early when its request is
    cancelled (as the local backend does between decoding steps); records every row's steps."""

    context_limit = 4096

    def __init__(self, steps: int = 6, delay: float = 0.02):
        self.steps, self.delay = steps, delay
        self.ran: list[tuple[str, int]] = []  # (question, steps generated)
        self.lock = threading.Lock()

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) + 4 for m in messages)

    def generate(self, requests):
        done = [0] * len(requests)
        for _ in range(self.steps):
            if all(r.cancelled.is_set() for r in requests):
                break  # the local backend's stopping check ends the batch the same way
            time.sleep(self.delay)
            for i, r in enumerate(requests):
                if r.cancelled.is_set():
                    continue
                done[i] += 1
                if r.on_text:
                    r.on_text("word ")
        with self.lock:
            self.ran += [
                (r.messages[-1]["content"], n) for r, n in zip(requests, done, strict=True)
            ]
        return [GenResult("word " * n, 10, n, "stop", -0.1) for n in done]


def slow_server(domain, generator, max_queue=4, max_active=8, disclaimer=None, max_batch=4):
    config = load_domain(domain).config.model_copy(update={"disclaimer": disclaimer})
    scheduler = Scheduler(generator, max_batch=max_batch, max_queue=max_queue)
    assistant = Assistant(config, scheduler)
    app = create_app(assistant, model_name="slow", limits=ServerLimits(max_active=max_active))
    return assistant, app
