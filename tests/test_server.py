"""The OpenAI-compatible server: the official client, errors and limits, keys, admission and
cancellation under load, stop sequences, the disclaimer, and the web page in Chromium."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from domainkit.backends import GenRequest
from domainkit.backends.scheduler import Scheduler
from domainkit.runtime.server import ServerLimits, create_app, serve_in_thread

from .runtime_support import (
    CHROMIUM,
    WARRANTY_Q,
    SlowGenerator,
    ask,
    client_for,
    error_of,
    openai_client,
    post_chat,
    slow_server,
    with_settings,
)


def test_errors_use_openai_format_and_status_codes(fake):
    assistant, _ = fake
    client = client_for(assistant, limits=ServerLimits(max_body_bytes=4000, max_messages=3))
    ok = {"messages": ask("hi")}
    assert post_chat(client, ok).status_code == 200

    bad_json = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    error_of(bad_json, 400)
    error_of(post_chat(client, {"messages": [{"role": "assistant", "content": "x"}]}), 422)
    error_of(post_chat(client, {"messages": []}), 422)
    assert error_of(post_chat(client, ok | {"temperature": 7}), 422)["param"] == "temperature"
    assert error_of(post_chat(client, ok | {"max_tokens": 5000}), 422)["param"] == "max_tokens"
    error_of(post_chat(client, {"messages": [{"role": "wizard", "content": "x"}]}), 422)
    error_of(post_chat(client, {"messages": ask("x" * 5000)}), 413)
    error_of(post_chat(client, {"messages": ask("a") * 4}), 413)
    error_of(client.get("/v1/nothing-here"), 404)


def test_api_keys(fake, tmp_path, monkeypatch):
    from domainkit.runtime.auth import load_api_keys

    (tmp_path / "keys").write_text("# staff\nkey-one\n\nkey-two  # bot\n")
    monkeypatch.setenv("DOMAINKIT_API_KEYS", "env-key")
    keys = load_api_keys(tmp_path / "keys")
    assert keys == {"key-one", "key-two", "env-key"}
    client = client_for(fake[0], api_keys=keys)
    body = {"messages": ask("hi")}
    assert error_of(post_chat(client, body), 401)["code"] == "invalid_api_key"
    error_of(post_chat(client, body, headers={"Authorization": "Bearer wrong"}), 401)
    error_of(client.get("/v1/models"), 401)
    assert post_chat(client, body, headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert client.get("/healthz").status_code == 200, "health checks need no key"
    assert "NEEDS_KEY = true" in client.get("/").text


def test_busy_server_answers_503_and_recovers(fake):
    assistant, generator = fake
    client = client_for(assistant)
    generator.gate.clear()
    body = {"messages": ask("hi")}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post_chat, client, body)  # taken by the worker, held at the gate
        deadline = time.time() + 10
        while assistant.scheduler.waiting or not running.running():
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        waiting = pool.submit(post_chat, client, body)  # fills the queue of one
        while not assistant.scheduler.waiting:
            assert time.time() < deadline
            time.sleep(0.01)
        assert error_of(post_chat(client, body), 503)["code"] == "busy"
        generator.gate.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert post_chat(client, body).status_code == 200


def test_backend_failure_is_a_500_without_details(fake):
    assistant, generator = fake
    generator.fail = True
    response = post_chat(client_for(assistant), {"messages": ask("hi")})
    error = error_of(response, 500)
    assert "secret" not in response.text and error["type"] == "server_error"


def test_metrics_and_health(fake):
    client = client_for(fake[0])
    post_chat(client, {"messages": ask("hi")})
    post_chat(client, {"messages": []})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "test-domain"
    text = client.get("/metrics").text
    assert 'domainkit_requests_total{status="200"} 1.0' in text
    assert 'domainkit_requests_total{status="422"} 1.0' in text
    assert 'domainkit_tokens_total{kind="completion"} 3.0' in text
    assert "domainkit_request_seconds_count 1.0" in text


def test_official_client_non_streaming_and_models(server_url):
    client = openai_client(server_url)
    assert [m.id for m in client.models.list().data] == ["kestrel-test"]
    response = client.chat.completions.create(
        model="kestrel-test", messages=ask(WARRANTY_Q), max_tokens=8
    )
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 0
    extra = response.model_extra["domainkit"]
    assert extra["route"] in ("answer", "refusal") and extra["evidence"] and extra["gate"]
    if extra["route"] == "answer":
        assert extra["quote"].startswith("Quote: ") and extra["sources"]


def test_official_client_streaming(server_url):
    stream = openai_client(server_url).chat.completions.create(
        model="kestrel-test",
        messages=ask(WARRANTY_Q),
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
    closed = openai_client(server_url).chat.completions.create(
        model="kestrel-test",
        messages=ask(WARRANTY_Q),
        max_tokens=10,
        stream=True,
        extra_body={"policy": "closed"},
    )
    pieces = [
        c.choices[0].delta.content for c in closed if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1


def test_sixteen_concurrent_clients_are_all_answered(server_url):
    client = openai_client(server_url)

    def one(i):
        if i % 2:
            stream = client.chat.completions.create(
                model="kestrel-test",
                messages=ask(f"warranty claim {i}"),
                max_tokens=6,
                stream=True,
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        r = client.chat.completions.create(
            model="kestrel-test", messages=ask(f"battery life {i}"), max_tokens=6
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    assert len(answers) == 16 and all(isinstance(a, str) for a in answers)
    metrics = httpx.get(f"{server_url}/metrics").text
    assert 'domainkit_requests_total{status="200"}' in metrics


@pytest.mark.integration
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


def test_clients_may_only_choose_the_recipes_client_policies(fake):
    client = client_for(fake[0])
    ok = {"messages": ask("hi")}
    assert post_chat(client, ok | {"policy": "auto"}).status_code == 200
    error = error_of(post_chat(client, ok | {"policy": "rag"}), 422)
    assert error["param"] == "policy" and "auto" in error["message"]
    assert "<option>auto</option>" in client.get("/").text
    assert "<option>rag</option>" not in client.get("/").text


def test_requests_a_web_page_could_forge_are_refused(fake):
    """With no keys (the default), a page in the user's browser must not be able to use a
    server on localhost: no text/plain or form POSTs, no foreign Host (DNS rebinding)."""
    client = client_for(fake[0], allowed_hosts=["127.0.0.1", "localhost", "testserver"])
    body = json.dumps({"messages": ask("What is the CEO salary?")})
    plain = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}
    )
    error_of(plain, 415)
    form = client.post("/v1/chat/completions", data={"messages": "x"})
    error_of(form, 415)
    rebound = client.post(
        "/v1/chat/completions",
        content=body,
        headers={"Host": "evil.example", "Content-Type": "application/json"},
    )
    assert rebound.status_code == 400
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def test_hostile_json_is_a_400_not_a_500(fake):
    client = client_for(fake[0])
    for raw in ('{"max_tokens": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000):
        response = client.post(
            "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
        )
        error_of(response, 400)


def test_with_keys_metrics_and_schema_are_not_public(fake):
    client = client_for(fake[0], api_keys={"k1"})
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer k1"}).status_code == 200
    assert client.get("/openapi.json").status_code == 404
    assert client_for(fake[0]).get("/openapi.json").status_code == 200


def test_two_hundred_concurrent_requests_get_200_or_503_and_none_hangs(support_domain):
    import asyncio

    generator = SlowGenerator(steps=3, delay=0.01)
    assistant, app = slow_server(support_domain, generator, max_queue=4, max_active=8)
    with serve_in_thread(app) as url:

        async def burst():
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                body = {"messages": ask("hi"), "max_tokens": 8}
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
        ok = httpx.post(f"{url}/v1/chat/completions", json={"messages": ask("hi")}, timeout=10)
        assert ok.status_code == 200 and time.perf_counter() - after < 5


def test_streaming_clients_that_disconnect_free_their_places(support_domain):
    generator = SlowGenerator(steps=60, delay=0.05)  # 3 s per answer if nobody leaves
    assistant, app = slow_server(
        support_domain, generator, max_queue=32, max_active=32, max_batch=20
    )
    with serve_in_thread(app) as url:

        def leave_early(i):
            body = {"messages": ask(f"question {i}"), "stream": True}
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
        body = {"messages": ask("next")}
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
    app = create_app(with_settings(assistant, policy="closed"), model_name="kestrel-test")
    try:
        with serve_in_thread(app) as url:

            def hang_up(i):
                body = {"messages": ask(f"Tell me about the Perch {i}."), "stream": True}
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
            body = {"messages": ask("Hi"), "max_tokens": 8}
            ok = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert ok.status_code == 200 and time.perf_counter() - started < 5
    finally:
        generator.row = row


def test_a_waiting_client_that_disconnects_is_dropped_from_the_queue(support_domain):
    generator = SlowGenerator(steps=40, delay=0.05)  # 2 s
    assistant, app = slow_server(support_domain, generator, max_queue=4, max_batch=1)
    with serve_in_thread(app) as url:
        with ThreadPoolExecutor(2) as pool:
            body = {"messages": ask("first")}
            first = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=30)
            time.sleep(0.3)
            body = {"messages": ask("impatient")}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
            assert first.result().status_code == 200
        time.sleep(0.5)
        assert [q for q, _ in generator.ran] == ["first"], "the impatient request never ran"
        assert httpx.get(f"{url}/healthz").json()["active"] == 0


def test_the_disclaimer_comes_with_a_conversations_first_answer(support_domain):
    from fastapi.testclient import TestClient

    assistant, app = slow_server(
        support_domain, SlowGenerator(steps=2, delay=0), disclaimer="Not advice."
    )
    client = TestClient(app)
    first = post_chat(client, {"messages": ask("hi")}).json()
    assert first["domainkit"]["disclaimer"] == "Not advice."
    later = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "word word"},
        {"role": "user", "content": "and then?"},
    ]
    assert post_chat(client, {"messages": later}).json()["domainkit"]["disclaimer"] is None
    with client.stream(
        "POST", "/v1/chat/completions", json={"messages": ask("hi"), "stream": True}
    ) as r:
        lines = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert lines[-1]["domainkit"]["disclaimer"] == "Not advice."
    assert 'note.className = "disclaimer"' in client.get("/").text


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
    client = client_for(assistant)
    body = {"messages": ask("hi"), "seed": 42}
    plain = post_chat(client, body).json()
    assert plain["choices"][0]["message"]["content"] == "Two years [1]."
    assert seen[-1].seed == 42 and not seen[-1].cancelled.is_set()
    cut = post_chat(client, body | {"stop": ["years", "[1]"]}).json()["choices"][0]
    assert cut["message"]["content"] == "Two " and cut["finish_reason"] == "stop"
    assert post_chat(client, body | {"stop": "nowhere"}).json()["choices"][0]["message"][
        "content"
    ] == ("Two years [1].")

    def stream(extra):
        response = post_chat(client, body | {"stream": True} | extra)
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
    assert post_chat(client, body | {"stop": []}).status_code == 200
    for bad in (["a"] * 5, [""], "x" * 300, 5):
        assert error_of(post_chat(client, body | {"stop": bad}), 422)["param"].startswith("stop")
    assert error_of(post_chat(client, body | {"seed": 1 << 64}), 422)["param"] == "seed"
