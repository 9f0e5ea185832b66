"""Shared fixtures: a deterministic fake embedder and small domain folders built on the fly."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from domainkit.retrieval.embedders import EMBEDDERS
from domainkit.synth.teachers import TEACHERS

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag-of-words feature hashing: texts sharing words get similar vectors, deterministically.

    Counts what it embeds so tests can assert that unchanged chunks are not embedded again.
    """

    dim = 256

    def __init__(self, settings=None):
        self.id = "test:hash-256"
        self.embedded_texts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def embed(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        self.embedded_texts.extend(texts)
        # A subprocess test slows embedding down to kill the run halfway, and is told when
        # it has started.
        if marker := os.environ.get("DOMAINKIT_TEST_EMBED_MARKER"):
            Path(marker).touch()
        time.sleep(float(os.environ.get("DOMAINKIT_TEST_EMBED_DELAY", "0")))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim
                out[row, bucket] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


EMBEDDERS.register("hash-test")(HashEmbedder)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


def write_domain(root: Path, docs: dict[str, str | bytes], **overrides) -> Path:
    """Write a domain folder using the hash embedder and small chunks."""
    config = {
        "name": "test-domain",
        "organization": "Testco",
        "recipe": "customer-support",
        "retrieval": {"embedder": "hash-test"},
        "chunking": {"chunk_size": 40, "chunk_overlap": 8},
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    root.mkdir(parents=True, exist_ok=True)
    (root / "domain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for name, content in docs.items():
        path = root / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


SUPPORT_DOCS = {
    "warranty.md": (
        "# Warranty\n\nEvery Perch speaker has a two-year limited warranty.\n\n"
        "## Claims\n\nFile a claim with your order number and a photo of the serial label.\n"
    ),
    "returns.md": (
        "# Returns\n\nYou can return any product within 30 days for a full refund.\n\n"
        "## Restocking fee\n\nOpened soundbars carry a 15 percent restocking fee.\n"
    ),
    "battery.txt": (
        "Battery and charging\n\nThe Talon portable speaker plays for 18 hours on a charge.\n"
        "Charge it with the supplied USB-C cable; a full charge takes three hours.\n"
    ),
    "errors/codes.md": (
        "# Error codes\n\n## E42\n\nError E42 means the firmware update failed. "
        "Hold the power button for ten seconds and retry the update.\n"
    ),
}


@pytest.fixture
def support_domain(tmp_path: Path) -> Path:
    return write_domain(tmp_path / "support", SUPPORT_DOCS)


class ScriptedTeacher:
    """A rule-following stand-in for a teacher model: it answers each prompt kind the way a
    good teacher would (questions from facts, answers copied from the passage), so pipeline
    tests exercise real prompts, parsing and filters deterministically."""

    batch_size = 4

    def __init__(self, settings=None):
        self.id = "test:scripted"
        self.conversations: list[list[dict]] = []

    def generate(self, conversations, sampling):
        self.conversations.extend(conversations)
        # A subprocess test slows the teacher down to kill the run halfway, and is told when
        # it has been called.
        if marker := os.environ.get("DOMAINKIT_TEST_TEACHER_MARKER"):
            Path(marker).touch()
        time.sleep(float(os.environ.get("DOMAINKIT_TEST_TEACHER_DELAY", "0")))
        return [self.reply(c) for c in conversations]

    @staticmethod
    def reply(conversation: list[dict]) -> str:
        system, last = conversation[0]["content"], conversation[-1]["content"]
        if "turn a statement into the question" in system:
            fact = last.rsplit("Statement:", 1)[1]
            words = [w.strip(".,") for w in fact.split()]
            return f"What do you know about {' '.join(words[:6])}?"
        if "reword questions" in system:
            return f"Could you tell me this: {last[0].lower()}{last[1:]}"
        if "search engine" in system:
            return "What is the best soil for growing tomatoes?"
        if "check answers" in system:  # a judge: yes when the candidate shares a word
            reference = last.split("Reference:", 1)[1].split("\n", 1)[0].lower().split()
            candidate = last.split("Candidate:", 1)[1].lower().split()
            return "yes" if set(reference) & set(candidate) else "no"
        return "I do not know."


TEACHERS.register("scripted")(ScriptedTeacher)


@pytest.fixture
def indexed_support(support_domain):
    """The small support domain, indexed with the hash embedder, synth set to the scripted
    teacher."""
    from domainkit.config import load_domain
    from domainkit.retrieval import build_index

    config = yaml.safe_load((support_domain / "domain.yaml").read_text())
    config["synth"] = {"teacher": {"backend": "scripted"}, "validation_fraction": 0.3}
    (support_domain / "domain.yaml").write_text(yaml.safe_dump(config))
    build_index(load_domain(support_domain), HashEmbedder(), progress=False)
    return support_domain


def sigkill_when(process, marker: Path, timeout: float = 120) -> None:
    """SIGKILL ``process`` (a ``Popen`` with ``stderr=PIPE``, text) as soon as ``marker``
    exists; fail with its stderr if it exits first, or after ``timeout`` seconds."""
    import signal
    import subprocess

    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline, f"{marker} never appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the killed process did not exit") from None


def kill_after(steps: int):
    """An ``on_step`` hook that stops a run after ``steps`` steps, as a kill would."""

    def on_step(state):
        if state.step >= steps:
            raise KeyboardInterrupt(f"killed after step {state.step}")

    return on_step


# -- the runtime's tiny domain and model, shared by the runtime test modules --------------


@pytest.fixture(scope="session")
def runtime_domain(tmp_path_factory):
    """The small support domain, indexed with the hash embedder, with a tiny random student."""
    from domainkit.config import load_domain
    from domainkit.retrieval import build_index

    from .tiny_lm import save_tiny_chat_model

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


@pytest.fixture(scope="session")
def assistant(runtime_domain):
    from domainkit.runtime import Assistant

    return Assistant.from_domain(runtime_domain)


@pytest.fixture
def fake(support_domain):
    """An assistant over a fake backend that cannot score choices, and that backend."""
    from domainkit.backends.scheduler import Scheduler
    from domainkit.config import load_domain
    from domainkit.runtime import Assistant

    from .runtime_support import FakeGenerator

    config = load_domain(support_domain).config
    generator = FakeGenerator()
    scheduler = Scheduler(generator, max_batch=1, max_queue=1)
    assistant = Assistant(config, scheduler)
    return assistant, generator


@pytest.fixture(scope="session")
def server_url(assistant):
    from domainkit.runtime.server import create_app, serve_in_thread

    app = create_app(assistant, model_name="kestrel-test")
    with serve_in_thread(app) as url:
        yield url
