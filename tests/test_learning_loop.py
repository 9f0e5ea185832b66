"""The learning loop in a real browser: ask in the web page, thumbs down, mark the line (or
the lines) on the review page, rebuild, and the same and a reworded question get the
reviewed line, cited."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app as cli
from domainkit.config import load_domain

from .conftest import SUPPORT_DOCS, write_domain
from .runtime_support import CHROMIUM
from .tiny_lm import save_tiny_chat_model, tiny_training

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM and not os.environ.get("CI"), reason="Debian chromium not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[1]
ASKED = "How long is the warranty on a Perch speaker?"
REWORDED = "What warranty period does the Perch speaker come with?"
NOT_IN_DOCS = "Can I pay for a Perch speaker with Bitcoin?"
LINE_TEXT = "two-year limited warranty"
# An answer no single line holds: the reviewer ticks a rule and its exception.
TWO_LINES = "Can I return an opened soundbar for a full refund?"
RULE, EXCEPTION = "return any product within 30 days", "15 percent restocking fee"
FOLLOW_UP = "And a Talon?"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Running:
    """A ``domainkit`` command serving on a free port for the length of a ``with`` block."""

    def __init__(self, *args: str):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*args, "--port", str(self.port)]

    def __enter__(self) -> _Running:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import domainkit.cli; domainkit.cli.main()", *self.args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            cwd=ROOT,
        )
        deadline = time.time() + 180
        while True:
            assert self.process.poll() is None, self.process.stderr.read()[-3000:]
            try:
                httpx.get(self.url + "/", timeout=2)
                return self
            except httpx.HTTPError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _build(root: Path) -> None:
    result = CliRunner().invoke(cli, ["build", str(root), "--limit", "12"])
    assert result.exit_code == 0, result.output


def _ask(page, question: str) -> dict:
    """Ask in the chat page; the last answer's text, route badge and sources."""
    before = page.locator(".assistant .route").count()
    page.fill("#input", question)
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"document.querySelectorAll('.assistant .route').length > {before}", timeout=120_000
    )
    bubble = page.locator(".assistant").last
    return {
        "text": bubble.evaluate("b => b.firstChild.textContent"),
        "route": bubble.locator(".route").inner_text(),
        "sources": bubble.locator(".sources li").all_inner_texts(),
        "bubble": bubble,
    }


def _thumbs_down(bubble, reason: str) -> None:
    bubble.locator("button.thumb.down").click()
    bubble.locator(f".why input[value='{reason}']").check()
    bubble.locator(".why button[type=submit]").click()
    bubble.locator(".thanks").filter(has_text="recorded").wait_for(timeout=10_000)


def _launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def test_a_reviewed_answer_is_given_again_after_the_next_build(tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CI installs chromium (make browser); it is missing"
    model = save_tiny_chat_model(tmp_path / "tiny", max_positions=4096)
    root = write_domain(
        tmp_path / "support",
        SUPPORT_DOCS,
        retrieval={"embedder": "sentence-transformers"},
        synth={"teacher": {"backend": "scripted"}},
        train=tiny_training(model),
        eval={"max_new_tokens": 8},
        runtime={"max_new_tokens": 12},
    )
    (root / "eval.yaml").write_text(
        yaml.safe_dump(
            {
                "questions": [
                    {
                        "question": "What does error E42 mean?",
                        "answer": "the firmware update failed",
                    },
                    {"question": "Do you ship to Antarctica?", "answerable": False},
                ]
            }
        )
    )
    _build(root)

    with sync_playwright() as p:
        browser = _launch(p)
        try:
            # A user asks twice and is unhappy with both answers.
            with _Running("serve", str(root)) as served:
                page = browser.new_page()
                page.goto(served.url)
                first = _ask(page, ASKED)
                _thumbs_down(first["bubble"], "should_answer")
                second = _ask(page, NOT_IN_DOCS)
                _thumbs_down(second["bubble"], "wrong_answer")
                third = _ask(page, TWO_LINES)
                _thumbs_down(third["bubble"], "wrong_answer")
                _thumbs_down(_ask(page, FOLLOW_UP)["bubble"], "wrong_answer")
                another = browser.new_page()  # another user, a conversation of their own
                another.goto(served.url)
                _ask(another, ASKED)

            # The reviewer: the thumbs-down exchanges come first; one gets its line from a
            # search of the documents, the other is marked "the documents do not answer it".
            with _Running("review", str(root)) as review:
                page = browser.new_page()
                page.goto(review.url)
                cards = page.locator("article.card")
                page.wait_for_function(
                    "document.getElementById('count').textContent !== ''", timeout=30_000
                )
                assert cards.count() == 4, page.inner_text("body")
                assert all("👎" in cards.nth(i).inner_text() for i in range(4))
                # A short follow-up is shown with the question it follows.
                assert f"Follows: {TWO_LINES}" in cards.filter(has_text=FOLLOW_UP).inner_text()
                assert "asked 2 times" in cards.filter(has_text=ASKED).inner_text()
                asked = cards.filter(has_text=ASKED)
                asked.locator("form.search input").fill("Perch warranty")
                asked.locator("form.search button").click()
                pick = asked.locator("li", has_text=LINE_TEXT).locator("button")
                pick.first.click()
                asked.locator(".status").filter(has_text="Recorded: line").wait_for()
                other = cards.filter(has_text=NOT_IN_DOCS)
                other.locator("button[data-verdict=not_in_docs]").click()
                other.locator(".status").filter(has_text="Recorded: not_in_docs").wait_for()
                both = cards.filter(has_text=TWO_LINES, has_not_text=FOLLOW_UP)
                both.locator("form.search input").fill("return an opened soundbar restocking fee")
                both.locator("form.search button").click()
                several = both.locator("button[data-verdict=lines]")
                for text in (RULE, EXCEPTION):
                    assert several.is_disabled(), "one ticked line is not several"
                    both.locator("li", has_text=text).locator("input[data-part]").first.check()
                several.click()
                both.locator(".status").filter(has_text="Recorded: line").wait_for()

            reviewed = yaml.safe_load((root / "validation.yaml").read_text())["questions"]
            assert {q["question"] for q in reviewed} == {ASKED, NOT_IN_DOCS, TWO_LINES}
            assert len(next(q for q in reviewed if q["question"] == TWO_LINES)["lines"]) == 2
            _build(root)

            # After the build: the reviewed line, cited, for the question and a rewording;
            # the question the documents do not answer is refused.
            with _Running("serve", str(root)) as served:
                page = browser.new_page()
                page.goto(served.url)
                for question in (ASKED, REWORDED):
                    answer = _ask(page, question)
                    assert LINE_TEXT in answer["text"], (question, answer["text"])
                    assert "[1]" in answer["text"] and answer["route"] == "from a reviewed answer"
                    assert any("warranty.md" in s for s in answer["sources"]), answer["sources"]
                refused = _ask(page, NOT_IN_DOCS)
                assert refused["route"] == "from a reviewed answer"
                assert LINE_TEXT not in refused["text"]
                assert refused["text"].strip() == load_domain(root).config.refusal
                answer = _ask(page, TWO_LINES)
                assert answer["route"] == "from a reviewed answer"
                assert answer["text"].index(RULE) < answer["text"].index(EXCEPTION), answer
        finally:
            browser.close()
