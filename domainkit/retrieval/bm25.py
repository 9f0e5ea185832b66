"""Lexical retrieval with BM25 (bm25s), stemmed English with stop words removed."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import bm25s

# bm25s logs each load and save at INFO, which would interleave with progress bars.
logging.getLogger("bm25s").setLevel(logging.WARNING)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def _tokenize(texts: list[str], return_ids: bool):
    return bm25s.tokenize(
        texts, stopwords="en", stemmer=_stemmer(), return_ids=return_ids, show_progress=False
    )


def content_terms(texts: list[str]) -> list[list[str]]:
    """Stemmed, lower-cased terms of each text without stop words (BM25's own analysis)."""
    return _tokenize(texts, return_ids=False) if texts else []


class BM25Index:
    """A BM25 index over a list of texts; rows are addressed by position."""

    def __init__(self, model: bm25s.BM25, size: int):
        self.model = model
        self.size = size

    @classmethod
    def build(cls, texts: list[str]) -> BM25Index:
        model = bm25s.BM25()
        if texts:
            model.index(_tokenize(texts, return_ids=True), show_progress=False)
        return cls(model, len(texts))

    def save(self, folder: Path) -> None:
        self.model.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, size: int) -> BM25Index:
        return cls(bm25s.BM25.load(str(folder), show_progress=False, verbosity=0), size)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top ``k`` (row, BM25 score) pairs; rows sharing no term with the query are left out."""
        k = min(k, self.size)
        tokens = _tokenize([query], return_ids=False)
        if k == 0 or not tokens[0]:
            return []
        rows, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]
