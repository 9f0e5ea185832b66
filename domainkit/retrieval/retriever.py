"""Search over a loaded index: dense, BM25, or both fused with reciprocal rank fusion."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from domainkit.config.schema import RetrievalConfig
from domainkit.ingest import Chunk
from domainkit.retrieval.dense import search_faiss
from domainkit.retrieval.embedders import Embedder
from domainkit.retrieval.fusion import reciprocal_rank_fusion
from domainkit.retrieval.store import LoadedIndex

Mode = Literal["hybrid", "dense", "bm25"]


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk.

    Attributes:
        chunk: The passage.
        rank: 1-based position in the results.
        score: The ranking score of the mode used (RRF, cosine or BM25).
        dense_score: Cosine similarity of query and passage, always filled; the runtime's
            relevance threshold is defined on it because it is comparable across queries.
        bm25_score: BM25 score, when the passage shares terms with the query.
    """

    chunk: Chunk
    rank: int
    score: float
    dense_score: float
    bm25_score: float | None

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "dense_score": round(self.dense_score, 6),
            "bm25_score": None if self.bm25_score is None else round(self.bm25_score, 6),
            "chunk_id": self.chunk.id,
            "source": self.chunk.source,
            "page": self.chunk.page,
            "headings": list(self.chunk.headings),
            "title": self.chunk.title,
            "text": self.chunk.text,
        }


class Retriever:
    """Answers queries against one loaded index."""

    def __init__(self, index: LoadedIndex, embedder: Embedder, settings: RetrievalConfig):
        if index.manifest["embedder"]["id"] != embedder.id:
            from domainkit.errors import IndexStoreError

            raise IndexStoreError(
                f"index was built with {index.manifest['embedder']['id']} but the domain now uses "
                f"{embedder.id}; run `domainkit index` again"
            )
        self.index = index
        self.embedder = embedder
        self.settings = settings

    @cached_property
    def vocabulary(self):
        """Term statistics of the indexed passages (with their headings)."""
        from domainkit.retrieval.terms import CorpusVocabulary

        return CorpusVocabulary([c.embed_text for c in self.index.chunks])

    def search(self, query: str, k: int | None = None, mode: Mode | None = None) -> list[Hit]:
        """The top ``k`` chunks for ``query`` (defaults from the domain's retrieval settings)."""
        k = k or self.settings.top_k
        mode = mode or self.settings.mode
        query_vector = self.embedder.embed([query])[0]
        n = max(k, self.settings.candidates)
        dense = search_faiss(self.index.dense, query_vector, n) if mode != "bm25" else []
        lexical = self.index.bm25.search(query, n) if mode != "dense" else []
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = lexical
        else:
            ranked = reciprocal_rank_fusion(
                [[i for i, _ in dense], [i for i, _ in lexical]], k=self.settings.rrf_k
            )
        bm25_scores = dict(lexical)
        return [
            Hit(
                chunk=self.index.chunks[row],
                rank=rank,
                score=score,
                dense_score=float(np.dot(self.index.embeddings[row], query_vector)),
                bm25_score=bm25_scores.get(row),
            )
            for rank, (row, score) in enumerate(ranked[:k], start=1)
        ]


def open_retriever(domain) -> Retriever:
    """The retriever of a domain's live index, with the embedder its settings name."""
    from domainkit.retrieval.embedders import make_embedder
    from domainkit.retrieval.store import load_index

    settings = domain.config.retrieval
    return Retriever(load_index(domain.index_dir), make_embedder(settings), settings)
