"""The runtime: policy routes, history trimming, batching queue, the OpenAI-compatible
server (with the official client), its errors and limits, and the web page in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from domainkit.config import load_domain
from domainkit.retrieval import build_index
from domainkit.runtime import Assistant
from domainkit.runtime.generation import GenResult, Scheduler
from domainkit.runtime.server import ServerLimits, create_app, serve_in_thread

from .conftest import SUPPORT_DOCS, HashEmbedder, write_domain
from .tiny_lm import save_tiny_chat_model

WARRANTY_Q = "How long is the warranty on a Perch speaker?"


@pytest.fixture(scope="module")
def runtime_domain(tmp_path_factory):
    """The small support domain, indexed with the hash embedder, with a tiny random student."""
    root = tmp_path_factory.mktemp("runtime")
    model = save_tiny_chat_model(root / "tiny", max_positions=4096)
    domain = write_domain(
        root / "support",
        SUPPORT_DOCS,
        train={"student_model": str(model)},
        retrieval={"embedder": "hash-test", "top_k": 2},
        runtime={"temperature": 0.0, "max_new_tokens": 12},
    )
    loaded = load_domain(domain)
    build_index(loaded, HashEmbedder(), progress=False)
    return loaded


@pytest.fixture(scope="module")
def assistant(runtime_domain):
    return Assistant.from_domain(runtime_domain)


def _with(assistant, **settings):
    """The same model and index under other runtime settings."""
    return Assistant(
        assistant.config,
        assistant.settings.model_copy(update=settings),
        assistant.scheduler,
        assistant.retriever,
        assistant.tuned,
    )


def _ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


# -- policy routes ------------------------------------------------------------------------------


def test_relevant_passages_give_a_streamed_cited_answer(assistant):
    pieces: list[str] = []
    answer = _with(assistant, relevance_threshold=0.2).answer(
        _ask(WARRANTY_Q), on_text=pieces.append
    )
    assert answer.route == "rag"
    assert answer.sources[0].document == "warranty.md"
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert all(s.score >= 0.2 and s.chunk_id and s.text for s in answer.sources)
    assert len(pieces) > 1 and "".join(pieces).strip() == answer.text
    assert answer.completion_tokens > 0 and 0 < answer.confidence <= 1


def test_nothing_relevant_and_low_confidence_gives_the_refusal(assistant):
    strict = _with(assistant, relevance_threshold=0.99, confidence_threshold=0.9)
    pieces: list[str] = []
    answer = strict.answer(_ask(WARRANTY_Q), on_text=pieces.append)
    assert answer.route == "refusal"
    assert answer.text == assistant.config.refusal == "".join(pieces)
    assert answer.sources == [] and answer.confidence < 0.9


def test_confident_closed_book_answer_when_nothing_is_relevant(assistant):
    answer = _with(assistant, relevance_threshold=0.99, confidence_threshold=0.0).answer(
        _ask(WARRANTY_Q)
    )
    assert answer.route == "closed" and answer.sources == []
    assert answer.text != assistant.config.refusal


def test_rag_and_closed_policies(assistant):
    strict = _with(assistant, relevance_threshold=0.99)
    rag = strict.answer(_ask("zebra opera quantum"), policy="rag")
    assert rag.route == "rag" and len(rag.sources) == 2, "rag uses the top passages regardless"
    closed = strict.answer(_ask(WARRANTY_Q), policy="closed", temperature=0.0)
    assert closed.route == "closed" and closed.sources == []


def test_history_is_trimmed_oldest_first_and_the_passages_are_kept(assistant):
    sent: list[list[dict]] = []
    generator = assistant.scheduler.generator
    original = generator.generate

    def spy(requests):
        sent.extend(r.messages for r in requests)
        return original(requests)

    history = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me about the speaker " * 8},
            {"role": "assistant", "content": f"Reply {i}: " + "it plays music well " * 8},
        ]
    messages = history + _ask(WARRANTY_Q)
    roomy = _with(assistant, relevance_threshold=0.2)
    hits = [h for h in roomy.retriever.search(WARRANTY_Q) if h.dense_score >= 0.2]
    newest_two = roomy._prompt(WARRANTY_Q, history[-4:], hits, 12)[0]
    budget = generator.count_tokens(newest_two) + 12  # room for exactly the 2 newest turns
    tight = _with(assistant, relevance_threshold=0.2, context_tokens=budget)
    generator.generate = spy
    try:
        answer = tight.answer(messages, max_tokens=12)
    finally:
        generator.generate = original
    assert answer.route == "rag" and len(answer.sources) == len(hits)
    assert answer.trimmed_turns == 8
    prompt = sent[-1]
    assert prompt == newest_two
    assert prompt[-1]["content"].startswith("Passages:") and WARRANTY_Q in prompt[-1]["content"]
    assert "Question 5" in prompt[-3]["content"], "the newest turns are kept"
    assert not any("Question 0" in m["content"] for m in prompt), "the oldest turn went first"
    assert generator.count_tokens(prompt) + 12 <= budget


def test_a_question_that_cannot_fit_is_an_error(assistant):
    from domainkit.runtime.assistant import ConversationError

    with pytest.raises(ConversationError, match="context budget"):
        _with(assistant, context_tokens=256).answer(_ask("speaker " * 400), policy="closed")


def test_concurrent_requests_are_batched_with_their_own_limits(assistant):
    closed = _with(assistant, relevance_threshold=0.99, confidence_threshold=0.0)
    batches: list[int] = []
    generator = assistant.scheduler.generator
    original = generator.generate

    def spy(requests):
        batches.append(len(requests))
        return original(requests)

    generator.generate = spy
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda n: closed.answer(_ask(f"warranty {n}?"), max_tokens=n), range(1, 9))
            )
    finally:
        generator.generate = original
    assert all(a.completion_tokens <= n for a, n in zip(answers, range(1, 9), strict=True))
    assert max(batches) > 1, "waiting requests were generated together"


# -- a fake backend for the server's error paths ----------------------------------------------


class FakeGenerator:
    """Answers "Two years [1]." in three pieces; ``gate`` holds generation, ``fail`` breaks it."""

    context_limit = 4096

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) + 4 for m in messages)

    def generate(self, requests):
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("secret internal detail")
        for r in requests:
            for piece in ("Two ", "years ", "[1]."):
                if r.on_text:
                    r.on_text(piece)
        return [GenResult("Two years [1].", 10, 3, "stop", -0.1) for _ in requests]


@pytest.fixture
def fake(support_domain):
    config = load_domain(support_domain).config
    generator = FakeGenerator()
    scheduler = Scheduler(generator, max_batch=1, max_queue=1)
    assistant = Assistant(config, config.runtime, scheduler, retriever=None, tuned=False)
    return assistant, generator


def _client(assistant, **kwargs):
    from fastapi.testclient import TestClient

    app = create_app(assistant, model_name="test-domain", **kwargs)
    return TestClient(app, raise_server_exceptions=False)


def _post(client, body, **kwargs):
    return client.post("/v1/chat/completions", json=body, **kwargs)


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert "Traceback" not in response.text
    return error


def test_errors_use_openai_format_and_status_codes(fake):
    assistant, _ = fake
    client = _client(assistant, limits=ServerLimits(max_body_bytes=4000, max_messages=3))
    ok = {"messages": _ask("hi")}
    assert _post(client, ok).status_code == 200

    bad_json = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(bad_json, 400)
    _error(_post(client, {"messages": [{"role": "assistant", "content": "x"}]}), 422)
    _error(_post(client, {"messages": []}), 422)
    assert _error(_post(client, ok | {"temperature": 7}), 422)["param"] == "temperature"
    assert _error(_post(client, ok | {"max_tokens": 5000}), 422)["param"] == "max_tokens"
    _error(_post(client, {"messages": [{"role": "wizard", "content": "x"}]}), 422)
    _error(_post(client, {"messages": _ask("x" * 5000)}), 413)
    _error(_post(client, {"messages": _ask("a") * 4}), 413)
    _error(client.get("/v1/nothing-here"), 404)


def test_api_keys(fake, tmp_path, monkeypatch):
    from domainkit.runtime.server import load_api_keys

    (tmp_path / "keys").write_text("# staff\nkey-one\n\nkey-two  # bot\n")
    monkeypatch.setenv("DOMAINKIT_API_KEYS", "env-key")
    keys = load_api_keys(tmp_path / "keys")
    assert keys == {"key-one", "key-two", "env-key"}
    client = _client(fake[0], api_keys=keys)
    body = {"messages": _ask("hi")}
    assert _error(_post(client, body), 401)["code"] == "invalid_api_key"
    _error(_post(client, body, headers={"Authorization": "Bearer wrong"}), 401)
    _error(client.get("/v1/models"), 401)
    assert _post(client, body, headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert client.get("/healthz").status_code == 200, "health checks need no key"
    assert "NEEDS_KEY = true" in client.get("/").text


def test_busy_server_answers_503_and_recovers(fake):
    assistant, generator = fake
    client = _client(assistant)
    generator.gate.clear()
    body = {"messages": _ask("hi")}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(_post, client, body)  # taken by the worker, held at the gate
        deadline = time.time() + 10
        while assistant.scheduler.waiting or not running.running():
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        waiting = pool.submit(_post, client, body)  # fills the queue of one
        while not assistant.scheduler.waiting:
            assert time.time() < deadline
            time.sleep(0.01)
        assert _error(_post(client, body), 503)["code"] == "busy"
        generator.gate.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert _post(client, body).status_code == 200


def test_backend_failure_is_a_500_without_details(fake):
    assistant, generator = fake
    generator.fail = True
    response = _post(_client(assistant), {"messages": _ask("hi")})
    error = _error(response, 500)
    assert "secret" not in response.text and error["type"] == "server_error"


def test_metrics_and_health(fake):
    client = _client(fake[0])
    _post(client, {"messages": _ask("hi")})
    _post(client, {"messages": []})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "test-domain"
    text = client.get("/metrics").text
    assert 'domainkit_requests_total{status="200"} 1.0' in text
    assert 'domainkit_requests_total{status="422"} 1.0' in text
    assert 'domainkit_tokens_total{kind="completion"} 3.0' in text
    assert "domainkit_request_seconds_count 1.0" in text


# -- the real server, the official client and a browser ---------------------------------------


@pytest.fixture(scope="module")
def server_url(assistant):
    app = create_app(_with(assistant, relevance_threshold=0.2), model_name="kestrel-test")
    with serve_in_thread(app) as url:
        yield url


def _openai(url):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_official_client_non_streaming_and_models(server_url):
    client = _openai(server_url)
    assert [m.id for m in client.models.list().data] == ["kestrel-test"]
    response = client.chat.completions.create(
        model="kestrel-test", messages=_ask(WARRANTY_Q), max_tokens=8
    )
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= 8
    extra = response.model_extra["domainkit"]
    assert extra["route"] == "rag" and extra["sources"][0]["document"] == "warranty.md"


def test_official_client_streaming(server_url):
    stream = _openai(server_url).chat.completions.create(
        model="kestrel-test", messages=_ask(WARRANTY_Q), max_tokens=10, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    extra = last.model_extra["domainkit"]
    assert extra["route"] == "rag" and extra["sources"]
    assert last.usage.completion_tokens > 0 and text


def test_sixteen_concurrent_clients_are_all_answered(server_url):
    client = _openai(server_url)

    def one(i):
        if i % 2:
            stream = client.chat.completions.create(
                model="kestrel-test",
                messages=_ask(f"warranty claim {i}"),
                max_tokens=6,
                stream=True,
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        r = client.chat.completions.create(
            model="kestrel-test", messages=_ask(f"battery life {i}"), max_tokens=6
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    assert len(answers) == 16 and all(isinstance(a, str) for a in answers)
    metrics = httpx.get(f"{server_url}/metrics").text
    assert 'domainkit_requests_total{status="200"}' in metrics


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("CI"), reason="Debian chromium not installed"
)
def test_web_page_streams_an_answer_with_sources(server_url):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CI installs chromium (make test-setup); it is missing"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(server_url)
            assert page.title().startswith("kestrel-test")
            # Count text updates of the answer bubble: streaming means several.
            page.evaluate(
                """() => { window.updates = 0; new MutationObserver(() => window.updates++)
                  .observe(document.getElementById('log'),
                           {subtree: true, characterData: true, childList: true}); }"""
            )
            page.fill("#input", WARRANTY_Q)
            page.keyboard.press("Enter")
            page.wait_for_selector(".assistant .route", timeout=60_000)
            assert page.inner_text(".user") == WARRANTY_Q
            assert page.inner_text(".route") == "from the documents"
            sources = page.locator(".sources li")
            assert sources.count() >= 1 and "warranty.md" in sources.first.inner_text()
            assert page.evaluate("window.updates") > 3
            answer = page.evaluate(
                "() => document.querySelector('.assistant').firstChild.textContent"
            )
            assert answer.strip()
        finally:
            browser.close()


def test_cli_ask_json(runtime_domain):
    from typer.testing import CliRunner

    from domainkit.cli import app

    result = CliRunner().invoke(
        app, ["ask", str(runtime_domain.root), WARRANTY_Q, "--policy", "rag", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["route"] == "rag" and answer["sources"][0]["document"] == "warranty.md"


def test_openai_backend_against_a_domainkit_server(runtime_domain, server_url):
    """The `openai` generation backend, pointed at a running OpenAI-compatible server (here
    another domainkit server on loopback, as vLLM would be in production)."""
    settings = runtime_domain.config.runtime.model_copy(
        update={
            "backend": "openai",
            "base_url": f"{server_url}/v1",
            "model": "kestrel-test",
            "relevance_threshold": 0.2,
        }
    )
    remote = Assistant.from_domain(runtime_domain, settings=settings)
    pieces: list[str] = []
    answer = remote.answer(_ask(WARRANTY_Q), max_tokens=6, on_text=pieces.append)
    assert answer.route == "rag" and answer.sources[0].document == "warranty.md"
    assert "".join(pieces).strip() == answer.text and answer.completion_tokens > 0
    # The endpoint gives no log-probabilities, so closed-book answers are never trusted.
    closed = _with(remote, relevance_threshold=0.99, confidence_threshold=0.0).answer(
        _ask(WARRANTY_Q), max_tokens=6
    )
    assert closed.confidence is None and closed.route == "refusal"


def test_cli_chat_keeps_the_conversation_and_shows_sources(runtime_domain):
    from typer.testing import CliRunner

    from domainkit.cli import app

    result = CliRunner().invoke(
        app,
        ["chat", str(runtime_domain.root), "--policy", "rag", "--show-context"],
        input=f"{WARRANTY_Q}\nAnd the battery?\n/reset\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant>") == 2
    assert "warranty.md" in result.output and "battery.txt" in result.output
    assert "Every Perch speaker has a two-year limited warranty." in result.output
    assert "(new conversation)" in result.output


def test_a_row_stops_where_the_model_starts_imitating_the_prompt():
    import torch

    from domainkit.runtime.generation import GenRequest, _RowStreamer

    from .tiny_lm import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    pieces: list[str] = []
    request = GenRequest([], max_new_tokens=100, on_text=pieces.append)
    streamer = _RowStreamer(tokenizer, [request], eos_ids=set())
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt
    for token in tokenizer.encode("Two years.\nQuestion: and returns?\nAnswer"):
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(pieces) == "Two years." and streamer.finished == [True]
    assert all("\n" not in p for p in pieces), "the marker's start was held back, not streamed"
