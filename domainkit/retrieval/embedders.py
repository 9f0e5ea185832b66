"""Text embedders, chosen by name from the ``EMBEDDERS`` registry."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from domainkit.config.schema import RetrievalConfig
from domainkit.models import resolve_embedding_model
from domainkit.registry import Registry
from domainkit.utils.device import best_device

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors and counts tokens for chunking."""

    @property
    def id(self) -> str:
        """Identifies the model: vectors of different ids are never mixed in one index."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str], *, progress: bool = False) -> np.ndarray: ...


EMBEDDERS: Registry[Callable[[RetrievalConfig], Embedder]] = Registry(
    "embedder", "domainkit.embedders"
)


def make_embedder(settings: RetrievalConfig) -> Embedder:
    """Build the embedder a domain's retrieval settings name."""
    return EMBEDDERS.get(settings.embedder)(settings)


class MemoEmbedder:
    """An embedder that keeps the vectors of the last ``size`` texts it embedded.

    Synth checks, retrieves for and reads each question it writes, and each step embeds the
    question again; ``warm`` embeds many in one batch, which on a CPU costs little more than
    one at a time.
    """

    def __init__(self, embedder: Embedder, size: int = 8192):
        self.inner, self.size = embedder, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def id(self) -> str:
        return self.inner.id

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def warm(self, texts: list[str]) -> None:
        """Embed, in one batch, those of ``texts`` not already kept."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self._keep(text, vector)

    def embed(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if len(texts) > self.size:
            return self.inner.embed(texts, progress=progress)
        for text in texts:  # kept ones first to the young end, so warming cannot evict them
            if text in self._vectors:
                self._vectors.move_to_end(text)
        self.warm(texts)
        return np.stack([self._vectors[t] for t in texts]) if texts else self.inner.embed([])

    def _keep(self, text: str, vector: np.ndarray) -> None:
        self._vectors[text] = vector
        if len(self._vectors) > self.size:
            self._vectors.popitem(last=False)


@EMBEDDERS.register("sentence-transformers")
class SentenceTransformerEmbedder:
    """Any sentence-transformers model; loaded lazily, since counting tokens needs only the
    tokenizer and an up-to-date index needs no model at all."""

    def __init__(self, settings: RetrievalConfig):
        self.model_name = settings.embedding_model
        self.batch_size = settings.batch_size
        self.device = settings.device

    @property
    def id(self) -> str:
        return f"sentence-transformers:{self.model_name}"

    @cached_property
    def _path(self) -> str:
        return resolve_embedding_model(self.model_name)

    @cached_property
    def _tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self._path)
        tokenizer.model_max_length = 10**9  # used only to count, long texts are expected
        return tokenizer

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        device = best_device(self.device)
        log.info("loading embedder %s on %s", self.model_name, device)
        return SentenceTransformer(self._path, device=device)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        model = self.model
        # sentence-transformers 6 renamed the method; keep older releases working.
        dimension = getattr(model, "get_embedding_dimension", None)
        dim = dimension() if dimension else model.get_sentence_embedding_dimension()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths and the ETA starts pessimistic.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with tqdm(total=len(texts), desc="Embedding", unit="chunk", disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                out[rows] = self.model.encode(
                    [texts[i] for i in rows],
                    batch_size=len(rows),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                bar.update(len(rows))
        return out
