"""Retrieval benchmark on the PubMedQA development questions.

Each question's own abstract is the one relevant document. Prints recall@1/5/10 and MRR
(document level) for dense, BM25 and hybrid retrieval; index build throughput; and query
latency p50/p95 at the corpus's size and on a synthetic 100,000-chunk index (flat and HNSW).

    .venv/bin/python bench/retrieval.py [--data ../shared/data/pubmedqa/dev.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from domainkit.config import load_domain  # noqa: E402
from domainkit.ingest import Chunk  # noqa: E402
from domainkit.retrieval import Retriever, build_index, load_index, make_embedder  # noqa: E402
from domainkit.retrieval.bm25 import BM25Index  # noqa: E402
from domainkit.retrieval.dense import build_faiss  # noqa: E402
from domainkit.retrieval.store import LoadedIndex  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa" / "dev.json"
MODES = ("dense", "bm25", "hybrid")


def write_domain(records: dict, root: Path) -> None:
    """One Markdown document per abstract; the question (often the title) is left out."""
    docs = root / "docs"
    docs.mkdir(parents=True)
    for pmid, record in records.items():
        sections = [
            f"## {label.title()}\n\n{text}"
            for label, text in zip(record["LABELS"], record["CONTEXTS"], strict=False)
        ]
        (docs / f"{pmid}.md").write_text(f"# PubMed {pmid}\n\n" + "\n\n".join(sections))
    (root / "domain.yaml").write_text("name: pubmedqa-bench\nrecipe: medical\n")


def document_ranking(retriever: Retriever, query: str, mode: str) -> list[str]:
    """Distinct source documents in the order their best chunk was retrieved."""
    hits = retriever.search(query, k=50, mode=mode)
    return list(dict.fromkeys(Path(h.chunk.source).stem for h in hits))


def quality(retriever: Retriever, records: dict) -> dict[str, dict[str, float]]:
    results = {}
    for mode in MODES:
        ranks = []
        for pmid, record in records.items():
            ranking = document_ranking(retriever, record["QUESTION"], mode)
            ranks.append(ranking.index(pmid) + 1 if pmid in ranking else None)
        n = len(ranks)
        results[mode] = {
            **{f"recall@{k}": sum(1 for r in ranks if r and r <= k) / n for k in (1, 5, 10)},
            "mrr": sum(1 / r for r in ranks if r) / n,
        }
    return results


def latency(retriever: Retriever, queries: list[str], mode: str) -> tuple[float, float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        retriever.search(query, k=10, mode=mode)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def synthetic_corpus(base: LoadedIndex, n: int, rng: np.random.Generator):
    """``n`` chunks whose texts are sampled from the real corpus's words (so BM25 sees a
    realistic vocabulary) and whose vectors are real ones plus noise (so FAISS sees a
    realistic distribution)."""
    words = np.array(" ".join(c.text for c in base.chunks).split())
    texts = [" ".join(rng.choice(words, size=size)) for size in rng.integers(80, 200, size=n)]
    real = np.asarray(base.embeddings)
    vectors = real[rng.integers(0, len(real), size=n)] + rng.normal(0, 0.05, (n, real.shape[1]))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    chunks = [
        Chunk(f"s{i}", text, f"synthetic/{i}.md", "synthetic", (), 0, len(text))
        for i, text in enumerate(texts)
    ]
    start = time.perf_counter()
    bm25 = BM25Index.build(texts)
    print(f"  synthetic corpus: {n} chunks, BM25 built in {time.perf_counter() - start:.1f}s")
    return chunks, vectors, bm25


def synthetic_index(base: LoadedIndex, corpus, kind: str) -> LoadedIndex:
    chunks, vectors, bm25 = corpus
    start = time.perf_counter()
    dense = build_faiss(vectors, kind)
    print(f"  FAISS {kind} built in {time.perf_counter() - start:.1f}s")
    manifest = {**base.manifest, "index": {"type": kind, "vectors": len(chunks)}}
    return LoadedIndex(base.path, manifest, chunks, vectors, dense, bm25)


def approximate_recall(exact: LoadedIndex, approx: LoadedIndex, queries: np.ndarray) -> float:
    """Share of the exact top-10 neighbours that the approximate index also returns."""
    _, truth = exact.dense.search(queries, 10)
    _, found = approx.dense.search(queries, 10)
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", type=int, default=100_000, help="chunks in the large index")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per setting")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"PubMedQA data not found at {args.data}", file=sys.stderr)
        return 1
    records = json.loads(args.data.read_text())
    print(f"PubMedQA dev: {len(records)} questions, one abstract each\n")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pubmedqa"
        write_domain(records, root)
        domain = load_domain(root)
        embedder = make_embedder(domain.config.retrieval)
        embedder.embed(["warm-up"])  # load the model outside the timed build
        start = time.perf_counter()
        report = build_index(domain, embedder, progress=False)
        seconds = time.perf_counter() - start
        print(
            f"Index build: {report.documents} documents -> {report.chunks} chunks in "
            f"{seconds:.1f}s = {report.chunks / seconds:.1f} chunks/s "
            f"(chunking, embedding, FAISS {report.index_type}, BM25; model already loaded)"
        )
        index = load_index(domain.index_dir)
        retriever = Retriever(index, embedder, domain.config.retrieval)

        print("\nRetrieval quality (document level, question -> its own abstract):")
        print(f"  {'mode':8} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6}")
        for mode, row in quality(retriever, records).items():
            print(
                f"  {mode:8} {row['recall@1']:6.3f} {row['recall@5']:6.3f} "
                f"{row['recall@10']:6.3f} {row['mrr']:6.3f}"
            )

        queries = [r["QUESTION"] for r in records.values()][: args.queries]
        print(f"\nQuery latency, k=10, {len(queries)} queries (ms, includes embedding the query):")
        print(f"  {'index':32} {'mode':8} {'p50':>7} {'p95':>7}")
        for mode in MODES:
            p50, p95 = latency(retriever, queries, mode)
            label = f"PubMedQA ({len(index.chunks)} chunks, flat)"
            print(f"  {label:32} {mode:8} {p50:7.1f} {p95:7.1f}")
        rng = np.random.default_rng(0)
        corpus = synthetic_corpus(index, args.synthetic, rng)
        built = {}
        for kind in ("flat", "hnsw"):
            built[kind] = synthetic_index(index, corpus, kind)
            big_retriever = Retriever(built[kind], embedder, domain.config.retrieval)
            for mode in MODES:
                p50, p95 = latency(big_retriever, queries, mode)
                label = f"synthetic ({args.synthetic} chunks, {kind})"
                print(f"  {label:32} {mode:8} {p50:7.1f} {p95:7.1f}")
        query_vectors = embedder.embed(queries)
        recall = approximate_recall(built["flat"], built["hnsw"], query_vectors)
        print(f"\nHNSW recall@10 against exact search at {args.synthetic} chunks: {recall:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
