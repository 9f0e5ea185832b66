"""FAISS vector indexes over normalized embeddings (inner product = cosine similarity)."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

# Exact search stays under ~10 ms per query up to here on two cores; beyond, use a graph.
FLAT_MAX = 50_000
# HNSW keeps every vector plus its graph in memory; past this IVF's smaller footprint wins.
HNSW_MAX = 2_000_000


def choose_index_type(n_vectors: int, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if n_vectors <= FLAT_MAX:
        return "flat"
    return "hnsw" if n_vectors <= HNSW_MAX else "ivf"


def build_faiss(vectors: np.ndarray, index_type: str = "auto") -> faiss.Index:
    """Build a FAISS index of the given (or automatically chosen) type over ``vectors``."""
    n, dim = vectors.shape
    kind = choose_index_type(n, index_type)
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.hnsw.efSearch = 96
        index = hnsw
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, nlist * 256), replace=False)]
        ivf.train(sample)
        ivf.nprobe = max(8, nlist // 16)
        index = ivf
    else:
        raise ValueError(f"unknown index type {kind!r}: expected auto, flat, hnsw or ivf")
    if n:
        index.add(vectors)
    return index


def index_kind(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "flat"


def save_faiss(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load_faiss(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def search_faiss(index: faiss.Index, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top ``k`` (row, cosine similarity) pairs for one normalized query vector."""
    k = min(k, index.ntotal)
    if k == 0:
        return []
    scores, ids = index.search(query.reshape(1, -1).astype(np.float32), k)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
