"""Shared fixtures: a deterministic fake embedder and small domain folders built on the fly."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from domainkit.retrieval.embedders import EMBEDDERS

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
