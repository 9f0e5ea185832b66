"""Retrieval: embeddings in FAISS plus BM25, fused with reciprocal rank fusion."""

from domainkit.retrieval.embedders import EMBEDDERS, Embedder, MemoEmbedder, make_embedder
from domainkit.retrieval.retriever import Hit, Retriever, open_retriever
from domainkit.retrieval.store import IndexReport, LoadedIndex, build_index, load_index

__all__ = [
    "EMBEDDERS",
    "Embedder",
    "Hit",
    "IndexReport",
    "LoadedIndex",
    "MemoEmbedder",
    "Retriever",
    "build_index",
    "load_index",
    "make_embedder",
    "open_retriever",
]
