"""The runtime: policy routes, history trimming, batching queue, the OpenAI-compatible
server (with the official client), its errors and limits, and the web page in Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from domainkit.answer.gate import Gate
from domainkit.backends import GenRequest, GenResult
from domainkit.backends.scheduler import Scheduler
from domainkit.config import load_domain
from domainkit.retrieval import build_index
from domainkit.runtime import Assistant
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
        runtime={
            "temperature": 0.0,
            "max_new_tokens": 12,
            "client_policies": ["auto", "rag", "closed"],
        },
    )
    loaded = load_domain(domain)
    build_index(loaded, HashEmbedder(), progress=False)
    # The model's choice of line counts (as calibration decides where it helps), so these
    # tests exercise the reading path; the prior gate stays.
    loaded.layout.calibration.parent.mkdir(parents=True, exist_ok=True)
    loaded.layout.calibration.write_text(json.dumps({"reader_weight": 0.5}))
    return loaded


@pytest.fixture(scope="module")
def assistant(runtime_domain):
    return Assistant.from_domain(runtime_domain)


def _with(assistant, gate=None, **settings):
    """The same model and index under other runtime settings (and gate)."""
    return assistant.with_parts(gate=gate, settings=assistant.settings.model_copy(update=settings))


def _ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


@contextlib.contextmanager
def _model_calls(assistant):
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


# -- policy routes ------------------------------------------------------------------------------


def test_the_answer_is_a_checked_quote_from_the_evidence_with_its_citation(assistant):
    pieces: list[str] = []
    answer = assistant.answer(_ask(WARRANTY_Q), policy="rag", on_text=pieces.append)
    assert answer.route == "answer"
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert answer.evidence and all(e.document and e.end > e.start for e in answer.evidence)
    quoted = answer.quote.removeprefix("Quote: ")
    assert any(quoted == " ".join(e.text.split()) for e in answer.evidence)
    import re

    for words, cited in re.findall(r"(.+?) \[(\d+)\](?: |$)", answer.text):
        passage = " ".join(answer.sources[int(cited) - 1].text.split())
        for sentence in words.split(". "):
            assert sentence.rstrip(".") in passage, "only the cited passage's own words"
    assert "".join(pieces) == answer.text, "a checked answer arrives in one piece"
    assert set(answer.gate) >= {"dense", "unknown", "model_refusal", "p_answerable"}


def test_usage_counts_the_tokens_of_the_answer_a_client_receives(assistant):
    """A scored reply generates no tokens, but the client receives the composed answer (or
    the refusal): usage counts its tokens, as the billing of any OpenAI client expects."""
    tokenizer = assistant.scheduler.generator.tokenizer
    for gate in (NAMES_ONLY, Gate(weights=NAMES_ONLY.weights, bias=-50.0)):
        answer = _with(assistant, gate=gate).answer(_ask(WARRANTY_Q), policy="auto")
        expected = len(tokenizer(answer.text, add_special_tokens=False)["input_ids"])
        assert answer.prompt_tokens > 0 and answer.completion_tokens == expected > 0
    assert answer.route == "refusal"


def test_the_gate_refuses_a_near_miss_with_an_unknown_name(assistant):
    gated = _with(assistant, gate=NAMES_ONLY)
    miss = gated.answer(_ask("How long is the warranty on a Falcon speaker?"))
    assert miss.route == "refusal" and miss.text == assistant.config.refusal
    assert miss.sources == [] and miss.gate["unknown"] == 1
    hit = gated.answer(_ask(WARRANTY_Q))
    assert hit.route in ("answer", "evidence") and hit.sources


def test_the_gate_refuses_an_answer_without_the_kind_of_value_asked_for(assistant):
    """The Talon's battery sentences are on topic, but none gives a weight: the answer would
    be a playing time, so the gate refuses, while the same gate answers the playing time."""
    gated = _with(
        assistant, gate=Gate(weights={**NAMES_ONLY.weights, "missing_type": -10.0}, bias=5.0)
    )
    miss = gated.answer(_ask("How heavy is the Talon portable speaker?"))
    assert miss.gate["missing_type"] == 1 and miss.route == "refusal"
    hit = gated.answer(_ask("How long does the Talon portable speaker play on a charge?"))
    assert hit.gate["missing_type"] == 0 and hit.route != "refusal"


def test_auto_runs_no_model_when_its_reading_cannot_change_the_answer(assistant):
    """Calibrated to the selector's line (reader weight 0) and a gate without the model's
    refusal, ``auto`` answers without the model, exactly as when it reads."""

    def made(gate):
        made = _with(assistant, gate=gate)
        made.reader_weight = 0.0
        return made

    reads = Gate(weights={**NAMES_ONLY.weights, "model_refusal": -1e-9}, bias=5.0)
    with _model_calls(assistant) as calls:
        for question in (WARRANTY_Q, "How long is the warranty on a Falcon speaker?"):
            read = made(reads).answer(_ask(question))
            assert calls, "a gate that weighs the model's refusal reads"
            calls.clear()
            unread = made(NAMES_ONLY)
            assert not unread.reads_matter()
            answer = unread.answer(_ask(question))
            assert calls == [], "no model call"
            assert (answer.text, answer.route, answer.sources) == (
                read.text,
                read.route,
                read.sources,
            )
            assert answer.gate["p_answerable"] == pytest.approx(read.gate["p_answerable"])
            if question == WARRANTY_Q:
                # The line is the selector's, not the model's: the user is told so, and no
                # model quote is shown for a model that was never asked.
                assert answer.route == "evidence" and answer.quote is None
                assert read.route == "evidence" and read.quote, "read: the model's own quote"
        assert answer.route == "refusal"
        assert made(NAMES_ONLY).recheck(answer, gated=True).text == answer.text
    # A backend that generates (an endpoint) is always read: its quote is the pick and its
    # refusal is final, whatever the reader weight.
    refusing = FakeGenerator(reply=assistant.config.refusal)
    endpoint = Assistant(
        assistant.config,
        Scheduler(refusing, max_batch=1, max_queue=4),
        settings=assistant.settings,
        retriever=assistant.retriever,
        tuned=True,
        gate=NAMES_ONLY,
        reader_weight=0.0,
    )
    assert endpoint.reads_matter()
    assert endpoint.answer(_ask(WARRANTY_Q)).route == "refusal"


def test_evidence_policy_uses_no_model_and_other_policies(assistant):
    with _model_calls(assistant) as calls:
        evidence = assistant.answer(_ask(WARRANTY_Q), policy="evidence")
        assert calls == [] and evidence.route == "evidence"
        assert "Every Perch speaker has a two-year limited warranty." in evidence.text
        naive = assistant.answer(_ask("zebra opera quantum"), policy="naive")
        assert naive.route == "rag" and len(naive.sources) == 2, "naive uses the top passages"
        closed = assistant.answer(_ask(WARRANTY_Q), policy="closed")
        assert closed.route == "closed" and closed.sources == []
    assert len(calls) == 2


def test_a_generated_quote_that_does_not_check_out_is_replaced_by_the_evidence(runtime_domain):
    """A backend that cannot score choices generates the reply; a fabricated figure in it
    never reaches the user: the evidence's best sentence does."""
    from domainkit.retrieval import open_retriever

    config = runtime_domain.config
    generator = FakeGenerator(reply="Quote: Every Perch speaker has a ten-year limited warranty.")
    scheduler = Scheduler(generator, max_batch=1, max_queue=4)
    assistant = Assistant(config, scheduler, retriever=open_retriever(runtime_domain), tuned=True)
    answer = assistant.answer(_ask(WARRANTY_Q), policy="rag")
    assert answer.route == "evidence" and "ten-year" not in answer.text
    assert answer.text.startswith("Every Perch speaker has a two-year limited warranty.")
    generator.reply = "Quote: Every Perch speaker has a two-year limited warranty"
    assert assistant.answer(_ask(WARRANTY_Q), policy="rag").route == "answer"


def test_history_is_trimmed_oldest_first_and_the_evidence_is_kept(assistant):
    sent: list[list[dict]] = []
    generator = assistant.scheduler.generator
    original = generator.score_choices

    def spy(request):
        sent.append(request.messages)
        return original(request)

    history = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me about the speaker " * 8},
            {"role": "assistant", "content": f"Reply {i}: " + "it plays music well " * 8},
        ]
    messages = history + _ask(WARRANTY_Q)
    evidence = assistant._evidence(WARRANTY_Q, history)
    newest_two = assistant._plan(WARRANTY_Q, history[-4:], evidence, 12).prompt
    budget = generator.count_tokens(newest_two) + 12  # room for exactly the 2 newest turns
    tight = _with(assistant, context_tokens=budget)
    generator.score_choices = spy
    try:
        answer = tight.answer(messages, max_tokens=12, policy="rag")
    finally:
        generator.score_choices = original
    assert answer.route == "answer" and answer.trimmed_turns == 8
    prompt = sent[-1]
    assert prompt == newest_two
    assert prompt[-1]["content"].startswith("Evidence:") and WARRANTY_Q in prompt[-1]["content"]
    assert "Question 5" in prompt[-3]["content"], "the newest turns are kept"
    assert not any("Question 0" in m["content"] for m in prompt), "the oldest turn went first"
    assert generator.count_tokens(prompt) + 12 <= budget


def test_a_long_history_is_trimmed_with_a_few_token_counts_not_one_per_turn(assistant):
    """Trimming once re-tokenized the whole prompt for every turn it dropped, holding the
    tokenizer the generator needs: 64 turns meant 64 counts of up to a megabyte."""
    generator = assistant.scheduler.generator
    history = []
    for i in range(32):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me about the speaker " * 8},
            {"role": "assistant", "content": f"Reply {i}: " + "it plays music well " * 8},
        ]
    evidence = assistant._evidence(WARRANTY_Q, history)
    newest = assistant._plan(WARRANTY_Q, history[-4:], evidence, 12).prompt
    tight = _with(assistant, context_tokens=generator.count_tokens(newest) + 12)
    counts = []
    original = generator.count_tokens
    generator.count_tokens = lambda messages: counts.append(1) or original(messages)
    try:
        plan = tight._plan(WARRANTY_Q, history, evidence, 12)
    finally:
        generator.count_tokens = original
    assert plan.prompt == newest and plan.trimmed == 60
    assert len(counts) <= 8, f"{len(counts)} token counts for 32 turns"


def test_a_question_that_cannot_fit_is_an_error(assistant):
    from domainkit.answer.answers import ConversationError

    with pytest.raises(ConversationError, match="context budget"):
        _with(assistant, context_tokens=256).answer(_ask("speaker " * 400), policy="closed")


def test_concurrent_requests_are_batched_with_their_own_limits(assistant):
    closed = _with(assistant, policy="closed")
    batch = assistant.scheduler.batch
    rows: list[int] = []
    step = batch.step
    batch.step = lambda: rows.append(len(batch.running)) or step()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda n: closed.answer(_ask(f"warranty {n}?"), max_tokens=n), range(1, 9))
            )
    finally:
        batch.step = step
    assert all(a.completion_tokens <= n for a, n in zip(answers, range(1, 9), strict=True))
    assert max(rows) > 1, "requests were decoded together"


# -- a fake backend for the server's error paths ----------------------------------------------


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


@pytest.fixture
def fake(support_domain):
    config = load_domain(support_domain).config
    generator = FakeGenerator()
    scheduler = Scheduler(generator, max_batch=1, max_queue=1)
    assistant = Assistant(config, scheduler)
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
    from domainkit.runtime.auth import load_api_keys

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
    app = create_app(assistant, model_name="kestrel-test")
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
    assert response.usage.prompt_tokens > 0
    extra = response.model_extra["domainkit"]
    assert extra["route"] in ("answer", "refusal") and extra["evidence"] and extra["gate"]
    if extra["route"] == "answer":
        assert extra["quote"].startswith("Quote: ") and extra["sources"]


def test_official_client_streaming(server_url):
    stream = _openai(server_url).chat.completions.create(
        model="kestrel-test",
        messages=_ask(WARRANTY_Q),
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason in ("stop", "length")
    extra = finish.model_extra["domainkit"]
    assert extra["route"] in ("answer", "refusal") and extra["evidence"]
    assert usage.choices == [] and usage.usage.prompt_tokens > 0 and text.strip()
    assert all(c.usage is None for c in chunks[:-1]), "usage comes once, in the last chunk"
    # A closed-book answer is not checked, so it streams as it is generated.
    closed = _openai(server_url).chat.completions.create(
        model="kestrel-test",
        messages=_ask(WARRANTY_Q),
        max_tokens=10,
        stream=True,
        extra_body={"policy": "closed"},
    )
    pieces = [
        c.choices[0].delta.content for c in closed if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1


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
            page.select_option("#policy", "rag")
            page.fill("#input", WARRANTY_Q)
            page.keyboard.press("Enter")
            page.wait_for_selector(".assistant .route", timeout=60_000)
            assert page.inner_text(".user") == WARRANTY_Q
            assert page.inner_text(".route") == "from the documents"
            sources = page.locator(".sources li")
            assert sources.count() >= 1 and "warranty.md" in sources.first.inner_text()
            assert "[1]" in page.locator(".evidence pre").text_content()
            assert page.evaluate("window.updates") >= 1
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
    assert answer["route"] == "answer" and answer["quote"].startswith("Quote: ")
    assert answer["evidence"] and answer["sources"]


def test_openai_backend_against_a_domainkit_server(runtime_domain, server_url):
    """The `openai` generation backend, pointed at a running OpenAI-compatible server (here
    another domainkit server on loopback, as vLLM would be in production). An endpoint
    cannot score the evidence lines, so the reply is generated and checked: this one is the
    remote server's own composed answer, not a quote, so the evidence answers."""
    settings = runtime_domain.config.runtime.model_copy(
        update={"backend": "openai", "base_url": f"{server_url}/v1", "model": "kestrel-test"}
    )
    remote = Assistant.from_domain(runtime_domain, settings=settings)
    answer = remote.answer(_ask(WARRANTY_Q), max_tokens=6, policy="rag")
    assert answer.route == "evidence" and answer.sources and answer.prompt_tokens > 0
    pieces: list[str] = []
    closed = remote.answer(_ask(WARRANTY_Q), max_tokens=6, policy="closed", on_text=pieces.append)
    assert closed.route == "closed" and "".join(pieces).strip() == closed.text


def test_clients_may_only_choose_the_recipes_client_policies(fake):
    client = _client(fake[0])
    ok = {"messages": _ask("hi")}
    assert _post(client, ok | {"policy": "auto"}).status_code == 200
    error = _error(_post(client, ok | {"policy": "rag"}), 422)
    assert error["param"] == "policy" and "auto" in error["message"]
    assert "<option>auto</option>" in client.get("/").text
    assert "<option>rag</option>" not in client.get("/").text


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
    from domainkit.backends import GenRequest
    from domainkit.backends.decoding import Row, RowText

    from .tiny_lm import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    pieces: list[str] = []
    request = GenRequest([], max_new_tokens=100, on_text=pieces.append)
    teacher = GenRequest([], max_new_tokens=100, stop=())  # a teacher writes "Question:" lines
    text = RowText(tokenizer, eos_ids=set())
    rows = [Row(request, [1, 2, 3], print), Row(teacher, [1, 2, 3], print)]
    for token in tokenizer.encode("Two years.\nQuestion: and returns?\nAnswer"):
        for row in rows:
            if not row.finished:
                text.take(row, token)
    for row in rows:
        text.end(row)
    assert "".join(pieces) == "Two years." and [r.finished for r in rows] == [True, False]
    assert all("\n" not in p for p in pieces), "the marker's start was held back, not streamed"
    assert rows[1].text == "Two years.\nQuestion: and returns?\nAnswer"
    assert rows[0].result().finish_reason == "stop"


def test_requests_a_web_page_could_forge_are_refused(fake):
    """With no keys (the default), a page in the user's browser must not be able to use a
    server on localhost: no text/plain or form POSTs, no foreign Host (DNS rebinding)."""
    client = _client(fake[0], allowed_hosts=["127.0.0.1", "localhost", "testserver"])
    body = json.dumps({"messages": _ask("What is the CEO salary?")})
    plain = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}
    )
    _error(plain, 415)
    form = client.post("/v1/chat/completions", data={"messages": "x"})
    _error(form, 415)
    rebound = client.post(
        "/v1/chat/completions",
        content=body,
        headers={"Host": "evil.example", "Content-Type": "application/json"},
    )
    assert rebound.status_code == 400
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def test_hostile_json_is_a_400_not_a_500(fake):
    client = _client(fake[0])
    for raw in ('{"max_tokens": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000):
        response = client.post(
            "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
        )
        _error(response, 400)


def test_with_keys_metrics_and_schema_are_not_public(fake):
    client = _client(fake[0], api_keys={"k1"})
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer k1"}).status_code == 200
    assert client.get("/openapi.json").status_code == 404
    assert _client(fake[0]).get("/openapi.json").status_code == 200


def test_confidence_is_the_mean_log_probability_of_the_kept_tokens(assistant):
    """Computed step by step from the chosen tokens (no batch x steps x vocabulary logits
    history), and equal to scoring the same tokens in one forward pass."""
    import torch

    from domainkit.backends import GenRequest

    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "How long is the warranty?"}]
    short = GenRequest(messages, max_new_tokens=3)
    longer = GenRequest([{"role": "user", "content": "Hello there, what is a Perch?"}], 9)
    result, other = generator.generate([short, longer])
    prompt = generator._ids(messages)
    model = generator.lm.model
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=result.completion_tokens,
            do_sample=False,
            pad_token_id=generator.tokenizer.pad_token_id,
        )
        new = out[0, len(prompt) :]
        logits = model(out[:, :-1]).logits[0, len(prompt) - 1 :].float().log_softmax(-1)
    expected = float(logits.gather(-1, new[:, None]).mean())
    assert result.completion_tokens == 3 and other.completion_tokens <= 9
    assert result.mean_logprob == pytest.approx(expected, abs=1e-3)


# -- admission, cancellation, disclaimer, per-request backend errors ---------------------------


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


def _slow_server(domain, generator, max_queue=4, max_active=8, disclaimer=None, max_batch=4):
    config = load_domain(domain).config.model_copy(update={"disclaimer": disclaimer})
    scheduler = Scheduler(generator, max_batch=max_batch, max_queue=max_queue)
    assistant = Assistant(config, scheduler)
    app = create_app(assistant, model_name="slow", limits=ServerLimits(max_active=max_active))
    return assistant, app


def test_two_hundred_concurrent_requests_get_200_or_503_and_none_hangs(support_domain):
    import asyncio

    generator = SlowGenerator(steps=3, delay=0.01)
    assistant, app = _slow_server(support_domain, generator, max_queue=4, max_active=8)
    with serve_in_thread(app) as url:

        async def burst():
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                body = {"messages": _ask("hi"), "max_tokens": 8}
                calls = [client.post("/v1/chat/completions", json=body) for _ in range(200)]
                return await asyncio.gather(*calls)

        started = time.perf_counter()
        responses = asyncio.run(burst())
        seconds = time.perf_counter() - started
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 4, statuses
        busy = next(r for r in responses if r.status_code == 503)
        assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "busy"
        assert seconds < 30
        health = httpx.get(f"{url}/healthz").json()
        assert health["ready"] and health["active"] == 0 and health["waiting"] == 0
        after = time.perf_counter()
        ok = httpx.post(f"{url}/v1/chat/completions", json={"messages": _ask("hi")}, timeout=10)
        assert ok.status_code == 200 and time.perf_counter() - after < 5


def test_streaming_clients_that_disconnect_free_their_places(support_domain):
    generator = SlowGenerator(steps=60, delay=0.05)  # 3 s per answer if nobody leaves
    assistant, app = _slow_server(
        support_domain, generator, max_queue=32, max_active=32, max_batch=20
    )
    with serve_in_thread(app) as url:

        def leave_early(i):
            body = {"messages": _ask(f"question {i}"), "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if '"content": "word ' in line:
                        return True  # the first word arrived; hang up

        started = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            assert all(pool.map(leave_early, range(20)))
        deadline = time.time() + 10
        while True:
            health = httpx.get(f"{url}/healthz").json()
            if health["active"] == 0 and health["waiting"] == 0 and health["generating"] == 0:
                break
            assert time.time() < deadline, health
            time.sleep(0.05)
        assert time.perf_counter() - started < 6, "the batch stopped once its clients left"
        assert len(generator.ran) == 20 and max(n for _, n in generator.ran) < 60
        after = time.perf_counter()
        generator.steps = 3
        body = {"messages": _ask("next")}
        ok = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
        assert ok.status_code == 200 and time.perf_counter() - after < 3


def test_streaming_clients_of_the_local_model_that_hang_up_free_the_batch(assistant):
    """The real decode loop behind the server: 8 streaming clients hang up at their first
    words; their rows leave the batch at the next step (not after 400 tokens), the server
    drains and answers the next request at once."""
    generator = assistant.scheduler.generator
    rows: list = []
    row = generator.row
    generator.row = lambda request, done: rows.append(row(request, done)) or rows[-1]
    app = create_app(_with(assistant, policy="closed"), model_name="kestrel-test")
    try:
        with serve_in_thread(app) as url:

            def hang_up(i):
                body = {"messages": _ask(f"Tell me about the Perch {i}."), "stream": True}
                body["max_tokens"] = 400
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
                    for line in r.iter_lines():
                        if '"content": "' in line and '"content": ""' not in line:
                            return True  # its first words arrived

            with ThreadPoolExecutor(8) as pool:
                assert all(pool.map(hang_up, range(8)))
            deadline = time.time() + 20
            while (health := httpx.get(f"{url}/healthz").json())["active"] or health["generating"]:
                assert time.time() < deadline, health
                time.sleep(0.05)
            assert len(rows) == 8 and max(len(r.tokens) for r in rows) < 400
            started = time.perf_counter()
            body = {"messages": _ask("Hi"), "max_tokens": 8}
            ok = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert ok.status_code == 200 and time.perf_counter() - started < 5
    finally:
        generator.row = row


def test_a_waiting_client_that_disconnects_is_dropped_from_the_queue(support_domain):
    generator = SlowGenerator(steps=40, delay=0.05)  # 2 s
    assistant, app = _slow_server(support_domain, generator, max_queue=4, max_batch=1)
    with serve_in_thread(app) as url:
        with ThreadPoolExecutor(2) as pool:
            body = {"messages": _ask("first")}
            first = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=30)
            time.sleep(0.3)
            body = {"messages": _ask("impatient")}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
            assert first.result().status_code == 200
        time.sleep(0.5)
        assert [q for q, _ in generator.ran] == ["first"], "the impatient request never ran"
        assert httpx.get(f"{url}/healthz").json()["active"] == 0


def test_the_disclaimer_comes_with_a_conversations_first_answer(support_domain):
    from fastapi.testclient import TestClient

    assistant, app = _slow_server(
        support_domain, SlowGenerator(steps=2, delay=0), disclaimer="Not advice."
    )
    client = TestClient(app)
    first = _post(client, {"messages": _ask("hi")}).json()
    assert first["domainkit"]["disclaimer"] == "Not advice."
    later = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "word word"},
        {"role": "user", "content": "and then?"},
    ]
    assert _post(client, {"messages": later}).json()["domainkit"]["disclaimer"] is None
    with client.stream(
        "POST", "/v1/chat/completions", json={"messages": _ask("hi"), "stream": True}
    ) as r:
        lines = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert lines[-1]["domainkit"]["disclaimer"] == "Not advice."
    assert 'note.className = "disclaimer"' in client.get("/").text


def test_openai_backend_errors_stay_with_their_own_request(monkeypatch):
    import openai

    from domainkit.backends import GenRequest
    from domainkit.backends.endpoint import EndpointBackend

    generator = EndpointBackend(model="m", base_url="http://127.0.0.1:9/v1")

    def one(request):
        if "too long" in request.messages[-1]["content"]:
            response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1:9"))
            raise openai.BadRequestError("context length exceeded", response=response, body=None)
        return GenResult("fine", 5, 1, "stop", None)

    monkeypatch.setattr(generator, "_one", one)
    scheduler = Scheduler(generator, max_batch=4)
    jobs = [
        scheduler.submit(GenRequest([{"role": "user", "content": text}], 8))
        for text in ("a", "this is too long", "b")
    ]
    assert jobs[0].result(10).text == "fine" and jobs[2].result(10).text == "fine"
    with pytest.raises(openai.BadRequestError):
        jobs[1].result(10)


def test_a_runtime_endpoint_that_fails_says_what_to_check_as_the_teacher_does(monkeypatch):
    """The runtime's and the teacher's endpoints share one client and one wording of
    failures: an unreachable server, a refused key."""
    import httpx
    import openai

    from domainkit.backends import BackendError, GenRequest
    from domainkit.backends.endpoint import EndpointBackend

    monkeypatch.setenv("MY_KEY", "k")
    generator = EndpointBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY")
    request = GenRequest([{"role": "user", "content": "hi"}], 8)
    unreachable = generator.generate([request])[0]
    assert isinstance(unreachable, BackendError)
    assert "cannot reach the runtime endpoint http://127.0.0.1:9/v1" in str(unreachable)
    assert "is the server running" in str(unreachable)

    def refused(**kwargs):
        response = httpx.Response(401, request=httpx.Request("POST", "http://127.0.0.1:9"))
        raise openai.AuthenticationError("bad key", response=response, body=None)

    monkeypatch.setattr(generator.client.chat.completions, "create", refused)
    [failure] = generator.generate([request])
    assert "rejected the API key; set $MY_KEY" in str(failure)


def test_a_cancelled_row_of_the_local_backend_stops_at_the_next_step(assistant):
    from domainkit.backends import GenRequest

    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "Tell me everything about the Perch."}]
    leaving = GenRequest(messages, max_new_tokens=40)
    leaving.on_text = lambda _: leaving.cancelled.set()  # hangs up after its first text
    staying = GenRequest(messages, max_new_tokens=40)
    gone, kept = generator.generate([leaving, staying])
    assert gone.completion_tokens <= 3 < kept.completion_tokens


def _decoded(generator, requests, chunk=8, steps_before=None):
    """Run ``requests`` through one continuous batch of ``generator``: each joins after
    the step count given in ``steps_before`` (all at once by default). Returns the results
    by request and, per step, (rows running, tokens each request has so far)."""
    batch = generator.decoder(max_rows=len(requests))
    batch.prefill_chunk = chunk
    steps_before = steps_before or [0] * len(requests)
    results: dict[int, object] = {}
    rows = [
        generator.row(r, lambda x, i=i: results.__setitem__(i, x)) for i, r in enumerate(requests)
    ]
    trace = []
    step = 0
    while len(results) < len(requests):
        for i, row in enumerate(rows):
            if steps_before[i] == step:
                batch.add(row)
        batch.step()
        step += 1
        trace.append((len(batch.running), [len(r.tokens) for r in rows]))
        assert step < 500, "the batch did not finish"
    assert len(batch) == 0
    return [results[i] for i in range(len(requests))], trace


def test_a_request_joins_a_running_batch_and_answers_as_it_would_alone(assistant):
    """Continuous batching: a request arriving while another is generating joins it between
    decoding steps (it does not wait for the first to finish); its prompt, longer than a
    prefill chunk, is prefilled a chunk per step while the first keeps streaming; each
    reply is the one it gets alone; a finished row leaves at once."""
    generator = assistant.scheduler.generator
    first = [{"role": "user", "content": "Tell me about the Perch."}]
    second = [{"role": "user", "content": "Tell me everything about the Kestrel " * 6}]
    prompt = len(generator.row(GenRequest(second, 1), print).prompt)
    chunk = prompt // 5 + 1  # the second's prompt takes 5 steps to prefill
    alone = [generator.generate([GenRequest(m, 40, stop=())])[0] for m in (first, second)]
    (one, two), trace = _decoded(
        generator,
        [GenRequest(first, 40, stop=()), GenRequest(second, 40, stop=())],
        chunk=chunk,
        steps_before=[0, 3],
    )
    assert (one.text, two.text) == (alone[0].text, alone[1].text)
    assert one.completion_tokens == alone[0].completion_tokens > 12
    assert abs(one.mean_logprob - alone[0].mean_logprob) < 1e-3
    second_started = next(s for s, (_, tokens) in enumerate(trace) if tokens[1] > 0)
    first_done = next(s for s, (_, tokens) in enumerate(trace) if tokens[0] == 40)
    assert second_started < first_done, "the second joined while the first was generating"
    assert second_started - 3 == 4, (
        "its prompt was prefilled a chunk per step (the 5th gives a token)"
    )
    streamed = trace[second_started][1][0] - trace[2][1][0]
    assert streamed == 5, "the first row got a token at every prefill step"
    assert max(n for n, _ in trace) == 2 and trace[-1][0] == 0


def test_a_sliding_window_cache_falls_back_to_static_batching(tmp_path):
    """A model whose cache is not plain ``DynamicLayer``s (Mistral's sliding window) cannot
    take a newcomer's rows into its running cache: the newcomer waits until the batch is
    empty, then answers as it would alone."""
    from domainkit.backends.local import LocalBackend

    from .tiny_lm import save_tiny_model_with, tiny_tokenizer

    save_tiny_model_with(tiny_tokenizer(), tmp_path, sliding_window=16)
    generator = LocalBackend.load(str(tmp_path), device="cpu")
    first = [{"role": "user", "content": "Tell me about the Perch."}]
    second = [{"role": "user", "content": "And the Talon?"}]
    alone = [generator.generate([GenRequest(m, 20, stop=())])[0].text for m in (first, second)]
    (one, two), trace = _decoded(
        generator, [GenRequest(first, 20, stop=()), GenRequest(second, 20, stop=())], 512, [0, 3]
    )
    assert (one.text, two.text) == tuple(alone)
    second_started = next(s for s, (_, tokens) in enumerate(trace) if tokens[1] > 0)
    first_done = next(s for s, (_, tokens) in enumerate(trace) if tokens[0] == 20)
    assert second_started > first_done, "the newcomer waited for the batch to empty"
    assert max(n for n, _ in trace) == 1


def test_requests_arriving_together_start_streaming_a_few_at_a_time(assistant):
    """With ``join_tokens`` (the server's setting), requests that arrive together join in
    groups of that many prompt tokens: the first streams while the others are prefilled,
    instead of every one waiting for the prefill of all. Each reply is unchanged."""
    generator = assistant.scheduler.generator
    messages = [[{"role": "user", "content": f"Tell me about the Perch {i}."}] for i in range(3)]
    prompt = len(generator.row(GenRequest(messages[0], 1), print).prompt)
    batch = generator.decoder(max_rows=3, join_tokens=prompt)
    results: dict[int, object] = {}
    rows = [
        generator.row(GenRequest(m, 12, stop=()), lambda x, i=i: results.__setitem__(i, x))
        for i, m in enumerate(messages)
    ]
    for row in rows:
        batch.add(row)
    batch.step()
    assert [len(r.tokens) > 0 for r in rows] == [True, False, False], "one group of one"
    while len(batch):
        batch.step()
    alone = [generator.generate([GenRequest(m, 12, stop=())])[0].text for m in messages]
    assert [results[i].text for i in range(3)] == alone


def test_a_row_that_finishes_leaves_the_batch_and_its_columns_are_freed(assistant):
    generator = assistant.scheduler.generator
    long_prompt = [{"role": "user", "content": "Tell me everything about the Kestrel " * 8}]
    short_prompt = [{"role": "user", "content": "Hi"}]
    batch = generator.decoder(max_rows=2)
    done: list = []
    batch.add(generator.row(GenRequest(long_prompt, 2, stop=()), done.append))
    batch.add(generator.row(GenRequest(short_prompt, 40, stop=()), done.append))
    while not done:
        batch.step()
    remaining = batch.running[0]
    assert len(batch.running) == 1 and remaining.request.messages == short_prompt
    layer = batch._cache.layers[0]
    assert layer.keys.shape[0] == 1, "the finished row's cache went with it"
    assert layer.keys.shape[2] == len(remaining.prompt) + len(remaining.tokens) - 1
    while len(batch):
        batch.step()
    assert len(done) == 2 and done[1].completion_tokens > done[0].completion_tokens


def test_the_server_queue_lets_a_new_request_start_before_a_long_one_ends(assistant):
    """Through the scheduler, as the server uses it: a request submitted while a long
    answer is generating gets its first text before that answer is done."""
    scheduler = Scheduler(assistant.scheduler.generator, max_batch=4, max_queue=4)
    events: list[str] = []
    started = threading.Event()

    def streamed(name):
        def on_text(_):
            events.append(name)
            started.set()

        return on_text

    messages = [{"role": "user", "content": "Tell me about the Perch."}]
    long = GenRequest(messages, 200, on_text=streamed("long"), stop=())
    first = scheduler.submit(long)
    assert started.wait(30)
    second = scheduler.submit(GenRequest(messages, 3, on_text=streamed("short"), stop=()))
    assert second.result(30).completion_tokens <= 3
    assert not first.done(), "the short request did not wait for the long one"
    assert first.result(60).completion_tokens == 200, "the tiny model's reply runs to its limit"
    assert events.index("short") < len(events) - 1 - events[::-1].index("long")


def test_stop_sequences_seed_and_usage_as_openai_defines_them(fake):
    """``stop`` cuts the answer before the first stop sequence, also across streamed pieces
    (the generation then stops); ``seed`` reaches the backend; usage comes in its own last
    chunk only when ``stream_options.include_usage`` asks for it."""
    assistant, generator = fake
    seen = []
    original = generator.generate
    generator.generate = lambda requests: seen.extend(requests) or original(requests)
    client = _client(assistant)
    body = {"messages": _ask("hi"), "seed": 42}
    plain = _post(client, body).json()
    assert plain["choices"][0]["message"]["content"] == "Two years [1]."
    assert seen[-1].seed == 42 and not seen[-1].cancelled.is_set()
    cut = _post(client, body | {"stop": ["years", "[1]"]}).json()["choices"][0]
    assert cut["message"]["content"] == "Two " and cut["finish_reason"] == "stop"
    assert _post(client, body | {"stop": "nowhere"}).json()["choices"][0]["message"]["content"] == (
        "Two years [1]."
    )

    def stream(extra):
        response = _post(client, body | {"stream": True} | extra)
        events = [e[6:] for e in response.text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return [json.loads(e) for e in events[:-1]]

    # The generator sends "Two ", "years ", "[1]."; "ars [" spans the last two pieces.
    chunks = stream({"stop": "ars ["})
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Two ye" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert seen[-1].cancelled.is_set(), "the generation is stopped once a stop sequence shows"
    assert all("usage" not in c for c in chunks)
    chunks = stream({"stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert _post(client, body | {"stop": []}).status_code == 200
    for bad in (["a"] * 5, [""], "x" * 300, 5):
        assert _error(_post(client, body | {"stop": bad}), 422)["param"].startswith("stop")
    assert _error(_post(client, body | {"seed": 1 << 64}), 422)["param"] == "seed"


def test_rows_sample_with_their_own_temperature_and_seed(assistant):
    """One batch holds greedy and sampled rows; a seeded row gives the same reply whatever
    its batch-mates, and other seeds give other replies."""
    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "Tell me about the Perch."}]

    def row(temperature, seed=None):
        return GenRequest(messages, max_new_tokens=10, temperature=temperature, seed=seed)

    greedy = generator.generate([row(0.0)])[0].text
    first = generator.generate([row(1.0, seed=7), row(0.0)])
    second = generator.generate([row(0.5, seed=3), row(0.0), row(1.0, seed=7)])
    assert first[0].text == second[2].text, "the same seed, other batch-mates, the same reply"
    assert first[1].text == second[1].text == greedy, "greedy rows are untouched by sampling"
    replies = {generator.generate([row(1.0, seed=s)])[0].text for s in range(4)}
    assert len(replies) > 1, "other seeds sample other replies"


def test_a_backend_that_dies_fails_its_batch_and_the_queue_keeps_serving():
    """Even an exception that is not an ``Exception`` (a KeyboardInterrupt raised inside
    the backend) reaches the callers of its batch instead of leaving them waiting for
    ever, and the next request is served."""

    class Dies:
        context_limit = 4096
        calls = 0

        def generate(self, requests):
            Dies.calls += 1
            if Dies.calls == 1:
                raise KeyboardInterrupt("interrupted inside the backend")
            return [GenResult("fine", 1, 1, "stop") for _ in requests]

    scheduler = Scheduler(Dies(), max_batch=4)
    first = scheduler.submit(GenRequest([{"role": "user", "content": "a"}], 4))
    with pytest.raises(KeyboardInterrupt):
        first.result(10)
    later = scheduler.submit(GenRequest([{"role": "user", "content": "b"}], 4))
    assert later.result(10).text == "fine"


class ScoringFakeGenerator(FakeGenerator):
    """A fake backend that scores choices (``ScoresChoices``): the first choice wins."""

    def score_choices(self, request):
        assert self.gate.wait(30)
        return GenResult("", 10, 0, "stop", None, [0.0] + [-5.0] * (len(request.choices) - 1))


def _held_scheduler(scores_choices: bool = False):
    """A scheduler over a fake backend that records its calls, its worker held by a first
    request until ``generator.gate`` is set, so the next requests queue together."""
    generator = ScoringFakeGenerator() if scores_choices else FakeGenerator()
    batches: list = []
    original = generator.generate
    generator.generate = lambda requests: batches.append(requests) or original(requests)
    if scores_choices:
        score = generator.score_choices
        generator.score_choices = lambda request: batches.append([request]) or score(request)
    generator.gate.clear()
    scheduler = Scheduler(generator, max_batch=8, max_queue=8)
    first = scheduler.submit(GenRequest(_ask("a"), 4))
    deadline = time.time() + 10
    while scheduler.running == 0 and time.time() < deadline:
        time.sleep(0.01)
    return generator, scheduler, batches, first


def test_the_scheduler_batches_requests_of_different_temperatures_together():
    generator, scheduler, batches, first = _held_scheduler()
    rest = [scheduler.submit(GenRequest(_ask("b"), 4, temperature=t)) for t in (0.0, 0.9, 0.3)]
    generator.gate.set()
    for future in [first, *rest]:
        future.result(timeout=10)
    assert sorted(r.temperature for r in batches[-1]) == [0.0, 0.3, 0.9]


def test_scored_requests_are_answered_one_by_one_not_held_for_the_batch():
    """A backend that scores choices scores one request at a time anyway: grouping scored
    requests in one call only held each answer until the whole batch was scored (16
    clients waited twice as long for their first token). Each scored request is its own
    call, its answer delivered at once; generated requests are still batched together."""
    generator, scheduler, batches, first = _held_scheduler(scores_choices=True)
    scored = [GenRequest(_ask(q), 4, choices=["x", "y"]) for q in ("s1", "s2", "s3")]
    generated = [GenRequest(_ask(q), 4) for q in ("g1", "g2")]
    rest = [scheduler.submit(r) for r in (scored[0], generated[0], scored[1], *generated[1:])]
    rest.append(scheduler.submit(scored[2]))
    generator.gate.set()
    for future in [first, *rest]:
        future.result(timeout=10)
    sizes = [[r.messages[-1]["content"] for r in batch] for batch in batches[1:]]
    assert sizes == [["s1"], ["s2"], ["s3"], ["g1", "g2"]]


def test_an_installed_backend_plug_in_answers_by_its_name(runtime_domain, monkeypatch, tmp_path):
    """A package offering a backend in the ``domainkit.backends`` group is chosen by
    ``runtime.backend`` alone; it is built from the runtime settings (student, adapter,
    device), and the runtime checks its replies like any other. An unknown name is a clear
    error naming the backends there are."""
    from domainkit import registry
    from domainkit.backends import base
    from domainkit.config.schema import TeacherConfig
    from domainkit.errors import UnknownNameError
    from domainkit.prompting import quote_reply
    from domainkit.registry import Registry
    from domainkit.synth.teachers import Sampling, make_teacher

    class QuotingBackend:
        """Replies with the first line of the evidence block, as a quote."""

        context_limit = 4096
        built: dict = {}

        @classmethod
        def from_runtime(cls, settings, *, student, adapter, device, name):
            cls.built = {"student": student, "adapter": adapter, "device": device, "name": name}
            return cls()

        @classmethod
        def from_teacher(cls, settings):
            cls.built = {"teacher": settings.model}
            return cls()

        def count_tokens(self, messages):
            return sum(len(m["content"].split()) for m in messages)

        def count_text(self, text):
            return len(text.split())

        def generate(self, requests):
            replies = []
            for r in requests:
                evidence = r.messages[-1]["content"].split("\n")
                line = next(x for x in evidence[1:] if x and not x.startswith("["))
                text = quote_reply(line)
                replies.append(GenResult(text, 7, len(text.split()), "stop", None))
            return replies

    class _EntryPoint:
        name, value = "quoting", "quoting_plugin:QuotingBackend"

        def load(self):
            return QuotingBackend

    groups = {"domainkit.backends": [_EntryPoint()]}
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: groups.get(group, []))
    backends = Registry("chat backend", "domainkit.backends")
    backends._items = dict(base.BACKENDS._items)
    monkeypatch.setattr(base, "BACKENDS", backends)
    monkeypatch.setattr("domainkit.answer.assistant.BACKENDS", backends)
    monkeypatch.setattr("domainkit.synth.teachers.base.BACKENDS", backends)

    settings = runtime_domain.config.runtime.model_copy(update={"backend": "quoting"})
    assistant = Assistant.from_domain(runtime_domain, settings=settings, tuned=False)
    assert QuotingBackend.built == {
        "student": runtime_domain.config.train.student_model,
        "adapter": None,
        "device": runtime_domain.config.train.device,
        "name": runtime_domain.config.name,
    }
    answer = assistant.answer(_ask(WARRANTY_Q), policy="rag")
    assert answer.route == "answer" and answer.quote and answer.completion_tokens > 0
    assert any(answer.quote.removeprefix("Quote: ") in e.text for e in answer.evidence)

    unknown = runtime_domain.config.runtime.model_copy(update={"backend": "vllm-typo"})
    with pytest.raises(UnknownNameError, match="local, openai, quoting"):
        Assistant.from_domain(runtime_domain, settings=unknown)

    # The same plug-in writes synth data as the teacher, by its name alone.
    teacher = make_teacher(TeacherConfig(backend="quoting", model="q-1"))
    conversation = [{"role": "user", "content": "Evidence:\n[1] Doc\nA line.\n\nQuestion: ?"}]
    assert teacher.generate([conversation], Sampling()) == ["Quote: A line."]
    assert QuotingBackend.built == {"teacher": "q-1"} and teacher.id == "quoting:q-1"
    with pytest.raises(
        UnknownNameError, match="teacher .vllm-typo.; available: hf, local, openai, quoting"
    ):
        make_teacher(TeacherConfig(backend="vllm-typo"))


def test_a_scored_request_whose_caller_went_while_its_batch_was_scored_is_not_scored():
    """Scored requests of one batch are scored one by one; one whose caller has gone by its
    turn (an eval that stopped on an error, a client that disconnected) is skipped."""
    from concurrent.futures import CancelledError

    scored: list[str] = []
    hold = threading.Event()

    class Scoring:
        context_limit = 4096

        def generate(self, requests):
            return [self.score_choices(r) for r in requests]

        def score_choices(self, request):
            assert hold.wait(30)
            scored.append(request.messages[0]["content"])
            if request.messages[0]["content"] == "first":
                second.cancelled.set()  # the second's caller goes meanwhile
            return GenResult("", 1, 0, "stop", None, choice_logprobs=[0.0])

    scheduler = Scheduler(Scoring(), max_batch=4, max_queue=8)
    ask = [
        GenRequest([{"role": "user", "content": c}], 4, choices=["a"])
        for c in ("held", "first", "second", "third")
    ]
    second = ask[2]
    futures = [scheduler.submit(r) for r in ask]  # "held" blocks; the rest queue as one batch
    hold.set()
    assert futures[1].result(10).choice_logprobs and futures[3].result(10).choice_logprobs
    with pytest.raises(CancelledError):
        futures[2].result(10)
    assert "second" not in scored and scored[-1] == "third"
