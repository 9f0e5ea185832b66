import numpy as np
import pytest

from domainkit.config import load_domain
from domainkit.errors import IndexStoreError
from domainkit.retrieval import MemoEmbedder, Retriever, build_index, load_index, open_retriever
from domainkit.retrieval.fusion import reciprocal_rank_fusion

from .conftest import HashEmbedder


def test_rrf_rewards_agreement_between_rankers():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    order = [item for item, _ in fused]
    assert order[:2] == [1, 3], "items both rankers found come first"
    assert dict(fused)[1] == pytest.approx(1 / 61 + 1 / 62)
    assert set(order) == {1, 2, 3, 4}


@pytest.fixture
def retriever(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    return open_retriever(domain)


def test_each_mode_finds_the_obvious_passage(retriever):
    for mode in ("hybrid", "dense", "bm25"):
        [top, *_] = retriever.search("restocking fee for opened soundbars", k=3, mode=mode)
        assert top.chunk.source == "returns.md", mode
        assert top.chunk.headings == ("Returns", "Restocking fee")


def test_bm25_matches_word_forms_by_stemming(retriever):
    [top, *_] = retriever.search("charging takes how long", k=1, mode="bm25")
    assert top.chunk.source == "battery.txt"


def test_hybrid_ranks_a_passage_found_by_both_above_one_found_by_one(retriever):
    hits = retriever.search("E42 firmware update failed", k=4, mode="hybrid")
    assert hits[0].chunk.source == "errors/codes.md"
    assert hits[0].bm25_score is not None and hits[0].bm25_score > 0
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_hits_carry_source_headings_and_exact_cosine(retriever):
    [hit] = retriever.search("two-year limited warranty", k=1)
    row = hit.to_dict()
    assert row["source"] == "warranty.md" and row["headings"] == ["Warranty"]
    assert row["chunk_id"] == hit.chunk.id
    query = HashEmbedder().embed(["two-year limited warranty"])[0]
    expected = float(HashEmbedder().embed([hit.chunk.embed_text])[0] @ query)
    assert hit.dense_score == pytest.approx(expected, abs=1e-5)


def test_bm25_returns_nothing_for_words_absent_from_the_corpus(retriever):
    assert retriever.search("zyxwv qwerty", k=3, mode="bm25") == []


def test_k_larger_than_corpus(retriever):
    hits = retriever.search("speaker", k=100, mode="dense")
    assert len(hits) == len(retriever.index.chunks)


def test_retriever_refuses_an_index_built_by_another_embedder(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    other = HashEmbedder()
    other.id = "test:other"
    with pytest.raises(IndexStoreError, match="run `domainkit index` again"):
        Retriever(load_index(domain.index_dir), other, domain.config.retrieval)


def test_a_memo_embedder_embeds_each_text_once_and_warms_in_one_batch(embedder):
    memo = MemoEmbedder(embedder, size=3)
    memo.warm(["a warranty", "the returns window", "a warranty"])
    assert embedder.embedded_texts == ["a warranty", "the returns window"]  # one batch
    again = memo.embed(["the returns window", "a warranty"])
    assert embedder.embedded_texts == ["a warranty", "the returns window"]
    assert np.allclose(again, embedder.embed(["the returns window", "a warranty"]))
    # Full: a new batch evicts the oldest texts, never one of its own.
    embedder.embedded_texts.clear()
    out = memo.embed(["a warranty", "shipping", "repairs"])
    assert embedder.embedded_texts == ["shipping", "repairs"]
    assert out.shape == (3, embedder.dim)
    memo.embed(["the returns window"])
    assert embedder.embedded_texts[-1] == "the returns window"  # it had been evicted
