"""Feedback and review over HTTP and the command line, tested like the chat API: the
exchange recorded under its completion id, keys, limits, bad ids, floods; the review page
behind admin keys; ``domainkit review`` for scripts; a server killed mid-request."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app as cli
from domainkit.config import load_domain
from domainkit.feedback.desk import ReviewDesk
from domainkit.feedback.log import build_id, open_log
from domainkit.retrieval import build_index
from domainkit.runtime import Assistant
from domainkit.runtime.openai_api import ServerLimits

from .conftest import SUPPORT_DOCS, HashEmbedder, write_domain
from .runtime_support import WARRANTY_Q, ask, client_for, error_of, post_chat
from .tiny_lm import save_tiny_chat_model

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def served(tmp_path):
    """A tiny domain's assistant served with its conversation log and the review page."""
    model = save_tiny_chat_model(tmp_path / "tiny", max_positions=4096)
    root = write_domain(
        tmp_path / "support",
        SUPPORT_DOCS,
        train={"student_model": str(model)},
        runtime={"temperature": 0.0, "max_new_tokens": 12},
    )
    domain = load_domain(root)
    build_index(domain, HashEmbedder(), progress=False)
    assistant = Assistant.from_domain(domain)
    conversations = open_log(domain)
    desk = ReviewDesk(domain, conversations, assistant.retriever)
    return domain, assistant, conversations, desk


def _client(served, **kwargs):
    domain, assistant, conversations, desk = served
    options = {
        "conversations": conversations,
        "build": build_id(domain),
        "review": desk,
        "admin_keys": {"admin-key"},
    }
    return client_for(assistant, **(options | kwargs))


def _feedback(client, body, **kwargs):
    return client.post("/v1/feedback", json=body, **kwargs)


def test_an_answer_is_logged_under_its_completion_id_streamed_or_not(served):
    client = _client(served)
    whole = post_chat(client, {"messages": ask(WARRANTY_Q)}).json()
    conversations = served[2]
    logged = conversations.get(whole["id"])
    assert (
        logged.question == WARRANTY_Q and logged.answer == whole["choices"][0]["message"]["content"]
    )
    assert logged.source == "serve" and logged.evidence and logged.gate["threshold"] > 0
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"messages": ask("What does error E42 mean?"), "stream": True},
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    ident = json.loads(events[0])["id"]
    assert conversations.get(ident).question == "What does error E42 mean?"
    assert _feedback(client, {"id": ident, "rating": "up"}).status_code == 200


def test_feedback_takes_the_chat_apis_keys_limits_and_error_bodies(served):
    client = _client(
        served, api_keys={"k"}, limits=ServerLimits(max_feedback_bytes=4096, feedback_per_minute=30)
    )
    key = {"Authorization": "Bearer k"}
    ident = post_chat(client, {"messages": ask(WARRANTY_Q)}, headers=key).json()["id"]
    error_of(_feedback(client, {"id": ident, "rating": "up"}), 401)
    done = _feedback(
        client,
        {"id": ident, "rating": "down", "reason": "should_answer", "comment": "Two years!"},
        headers=key,
    )
    assert done.status_code == 200 and done.json()["count"] == 1
    assert served[2].get(ident).reason == "should_answer"
    error_of(_feedback(client, {"id": "chatcmpl-unknown", "rating": "up"}, headers=key), 404)
    assert (
        error_of(_feedback(client, {"id": ident, "rating": "meh"}, headers=key), 422)["param"]
        == "rating"
    )
    error_of(_feedback(client, {"id": ident, "rating": "down", "reason": "x"}, headers=key), 422)
    error_of(_feedback(client, {"rating": "up"}, headers=key), 422)
    assert (
        error_of(
            _feedback(client, {"id": ident, "rating": "up", "comment": "x" * 2001}, headers=key),
            413,
        )["param"]
        == "comment"
    )
    error_of(_feedback(client, {"id": ident, "rating": "up", "pad": "x" * 5000}, headers=key), 413)
    form = client.post(
        "/v1/feedback", content=b"id=1", headers=key | {"Content-Type": "text/plain"}
    )
    error_of(form, 415)
    error_of(
        client.post(
            "/v1/feedback", content=b"{", headers=key | {"Content-Type": "application/json"}
        ),
        400,
    )
    # A flood: the bucket (30 a minute) runs dry and the rest get 429 with Retry-After.
    statuses = [
        _feedback(client, {"id": ident, "rating": "up"}, headers=key).status_code for _ in range(40)
    ]
    assert 429 in statuses and set(statuses) <= {200, 429}
    flooded = _feedback(client, {"id": ident, "rating": "up"}, headers=key)
    assert flooded.status_code == 429 and int(flooded.headers["retry-after"]) >= 1


def test_feedback_when_the_log_is_off_says_so(served):
    client = _client(served, conversations=None, review=None)
    ident = post_chat(client, {"messages": ask(WARRANTY_Q)}).json()["id"]
    assert (
        "log is off" in error_of(_feedback(client, {"id": ident, "rating": "up"}), 404)["message"]
    )
    assert "FEEDBACK = false" in client.get("/").text


def test_the_review_page_is_behind_admin_keys_and_records_verdicts(served):
    domain = served[0]
    client = _client(served)
    assert "FEEDBACK = true" in client.get("/").text
    ident = post_chat(client, {"messages": ask(WARRANTY_Q)}).json()["id"]
    _feedback(client, {"id": ident, "rating": "down", "reason": "should_answer"})
    error_of(client.get("/review/api/pending"), 401)
    error_of(client.get("/review/api/pending", headers={"Authorization": "Bearer k"}), 401)
    assert client.get("/review").status_code == 200  # the page itself holds no data
    pending = client.get("/review/api/pending", headers=ADMIN).json()["exchanges"]
    assert pending[0]["id"] == ident and pending[0]["rating"] == "down"
    line = next(e["id"] for e in pending[0]["evidence"] if "two-year" in e["text"])
    found = client.get("/review/api/search", params={"q": "restocking fee"}, headers=ADMIN)
    assert any("restocking" in x["text"] for x in found.json()["lines"])
    error_of(client.get("/review/api/search", params={"q": " "}, headers=ADMIN), 422)
    error_of(client.get("/review/api/search", params={"q": "x" * 600}, headers=ADMIN), 413)
    verdict = {"exchange": ident, "verdict": "line", "line": line}
    error_of(client.post("/review/api/verdicts", json=verdict), 401)
    error_of(
        client.post("/review/api/verdicts", json=verdict | {"exchange": "nope"}, headers=ADMIN),
        404,
    )
    error_of(
        client.post("/review/api/verdicts", json=verdict | {"verdict": "meh"}, headers=ADMIN), 422
    )
    error_of(
        client.post("/review/api/verdicts", json=verdict | {"line": "bad"}, headers=ADMIN), 422
    )
    many = verdict | {"also": [line] * 9}
    error_of(client.post("/review/api/verdicts", json=many, headers=ADMIN), 422)
    error_of(
        client.post("/review/api/verdicts", json=verdict | {"also": ["bad"]}, headers=ADMIN), 422
    )
    done = client.post("/review/api/verdicts", json=verdict, headers=ADMIN)
    assert done.status_code == 200 and done.json()["question"]["line"] == line
    questions = yaml.safe_load(domain.validation_path.read_text())["questions"]
    assert questions[-1]["exchange"] == ident and "two-year" in questions[-1]["answer"]
    assert client.get("/review/api/pending", headers=ADMIN).json()["exchanges"] == []


def test_without_admin_keys_there_is_no_review_page(served):
    client = _client(served, admin_keys=None)
    assert client.get("/review").status_code == 404
    assert client.get("/review/api/pending").status_code == 404


def test_review_from_the_command_line(served, tmp_path):
    domain = served[0]
    runner = CliRunner()
    asked = runner.invoke(cli, ["ask", str(domain.root), WARRANTY_Q, "--json"])
    assert asked.exit_code == 0, asked.output
    ident = json.loads(asked.stdout)["id"]
    listed = runner.invoke(cli, ["review", str(domain.root), "--json"])
    assert listed.exit_code == 0, listed.output
    pending = json.loads(listed.stdout)["exchanges"]
    assert [e["id"] for e in pending] == [ident] and pending[0]["source"] == "ask"
    searched = runner.invoke(
        cli, ["review", str(domain.root), "--search", "two-year warranty", "--json"]
    )
    line = next(x["id"] for x in json.loads(searched.stdout)["lines"] if "two-year" in x["text"])
    both = runner.invoke(
        cli, ["review", str(domain.root), "--mark", ident, "--right", "--not-in-docs"]
    )
    assert both.exit_code == 1 and "exactly one" in both.output
    searched = runner.invoke(cli, ["review", str(domain.root), "--search", "claim", "--json"])
    claim = next(x["id"] for x in json.loads(searched.stdout)["lines"] if "claim" in x["text"])
    marked = runner.invoke(
        cli, ["review", str(domain.root), "--mark", ident, "--line", line, "--line", claim]
    )
    assert marked.exit_code == 0, marked.output
    [written] = yaml.safe_load(load_domain(domain.root).validation_path.read_text())["questions"]
    assert written["line"] == line and written["lines"] == [line, claim]
    assert load_domain(domain.root).validation_path.is_file()
    out = tmp_path / "export.yaml"
    exported = runner.invoke(cli, ["review", str(domain.root), "--export", str(out)])
    assert (
        exported.exit_code == 0 and yaml.safe_load(out.read_text())["questions"][0]["line"] == line
    )
    purged = runner.invoke(cli, ["review", str(domain.root), "--purge-before", "2999-01-01"])
    assert purged.exit_code == 0 and "deleted 1" in purged.output
    bad = runner.invoke(cli, ["review", str(domain.root), "--purge-before", "soon"])
    assert bad.exit_code == 1 and "not a date" in bad.output
    unknown = runner.invoke(cli, ["review", str(domain.root), "--mark", "nope", "--right"])
    assert unknown.exit_code == 1 and "no exchange" in unknown.output


@pytest.mark.integration
def test_a_server_killed_mid_request_keeps_every_acknowledged_feedback(served, tmp_path):
    """SIGKILL while clients post feedback: every 200 has its row, and the database passes
    SQLite's integrity check."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    domain = served[0]
    served[2].close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import tests.conftest, domainkit.cli; domainkit.cli.main()",
            "serve",
            str(domain.root),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:]
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.time() < deadline
                time.sleep(0.2)
        ident = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": ask(WARRANTY_Q)}, timeout=60
        ).json()["id"]
        acknowledged: list[str] = []
        stop = threading.Event()

        def post(worker: int) -> None:
            n = 0
            while not stop.is_set():
                comment = f"w{worker}-{n}"
                try:
                    r = httpx.post(
                        f"{url}/v1/feedback",
                        json={"id": ident, "rating": "down", "comment": comment},
                        timeout=5,
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acknowledged.append(comment)
                n += 1

        workers = [threading.Thread(target=post, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        while len(acknowledged) < 8:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        stop.set()
        for w in workers:
            w.join(10)
    finally:
        if server.poll() is None:
            server.kill()
    db = sqlite3.connect(domain.log_path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = {row[0] for row in db.execute("SELECT comment FROM feedback")}
    assert set(acknowledged) <= kept, "an acknowledged feedback row was lost"
