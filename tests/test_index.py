import json
import os

import numpy as np
import pytest

from domainkit.config import load_domain
from domainkit.errors import IndexStoreError
from domainkit.retrieval import build_index, load_index
from domainkit.retrieval import store as store_module
from domainkit.retrieval.dense import build_faiss, choose_index_type, index_kind, search_faiss

from .conftest import HashEmbedder


def test_index_persists_chunks_vectors_and_a_manifest(support_domain, embedder):
    domain = load_domain(support_domain)
    report = build_index(domain, embedder, progress=False)
    assert report.chunks > 0 and report.embedded == report.chunks and report.reused == 0
    loaded = load_index(domain.index_dir)
    manifest = loaded.manifest
    assert manifest["counts"]["chunks"] == len(loaded.chunks) == loaded.dense.ntotal
    assert manifest["embedder"] == {"id": embedder.id, "dim": HashEmbedder.dim}
    assert manifest["index"]["type"] == "flat"
    assert manifest["chunking"]["chunk_size"] == 40
    assert set(manifest["files"]) == {
        "warranty.md",
        "returns.md",
        "battery.txt",
        "errors/codes.md",
    }
    assert loaded.embeddings.shape == (len(loaded.chunks), HashEmbedder.dim)
    assert domain.index_dir.parent == support_domain / ".domainkit"


def test_unchanged_domain_is_not_rebuilt(support_domain, embedder):
    domain = load_domain(support_domain)
    first = build_index(domain, embedder, progress=False)
    again = build_index(domain, embedder, progress=False)
    assert again.up_to_date and again.path == first.path
    assert len(embedder.embedded_texts) == first.chunks


def test_an_edit_to_the_code_that_reads_documents_rebuilds_the_index(
    support_domain, embedder, monkeypatch
):
    """A loader fix (dropping breadcrumbs) once left the old chunks live: the index was
    fingerprinted by the package version, not by the code that reads the documents."""
    domain = load_domain(support_domain)
    first = build_index(domain, embedder, progress=False)
    real = store_module.code_hash
    monkeypatch.setattr(
        store_module, "code_hash", lambda *p: real(*p) + "edited" if "ingest" in p else real(*p)
    )
    again = build_index(domain, embedder, progress=False)
    assert not again.up_to_date and again.path != first.path
    assert again.reused == again.chunks  # same chunk texts: their vectors are reused


def test_changing_one_document_embeds_only_its_changed_chunks(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    before = {c.id: c for c in load_index(domain.index_dir).chunks}

    returns = support_domain / "docs" / "returns.md"
    returns.write_text(returns.read_text().replace("30 days", "45 days"))
    embedder = HashEmbedder()
    report = build_index(domain, embedder, progress=False)

    after = {c.id: c for c in load_index(domain.index_dir).chunks}
    new_ids = set(after) - set(before)
    assert len(new_ids) == 1 and report.embedded == 1 and report.reused == report.chunks - 1
    assert embedder.embedded_texts == [after[new_ids.pop()].embed_text]
    assert "45 days" in embedder.embedded_texts[0]


def test_reused_vectors_equal_fresh_ones(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    (support_domain / "docs" / "new.md").write_text("# New\n\nA brand new page about gift cards.")
    build_index(domain, HashEmbedder(), progress=False)
    loaded = load_index(domain.index_dir)
    fresh = HashEmbedder().embed([c.embed_text for c in loaded.chunks])
    np.testing.assert_allclose(loaded.embeddings, fresh, atol=1e-6)


def test_changing_the_embedder_reembeds_everything(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    other = HashEmbedder()
    other.id = "test:other-model"
    report = build_index(domain, other, progress=False)
    assert report.embedded == report.chunks


def test_killed_build_leaves_the_previous_index_intact(support_domain, monkeypatch):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    before = load_index(domain.index_dir)
    (support_domain / "docs" / "returns.md").write_text("# Returns\n\nNo returns at all.")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(store_module, "save_faiss", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(domain, HashEmbedder(), progress=False)
    after = load_index(domain.index_dir)
    assert after.path == before.path
    assert [c.id for c in after.chunks] == [c.id for c in before.chunks]
    assert not list(domain.index_dir.glob(".tmp-*")), "temporary folder removed"

    monkeypatch.undo()
    report = build_index(domain, HashEmbedder(), progress=False)
    assert not report.up_to_date
    assert any("No returns" in c.text for c in load_index(domain.index_dir).chunks)
    assert len(list(domain.index_dir.glob("v-*"))) == 1, "old versions are cleaned up"


def test_leftover_temporary_folder_from_a_hard_kill_is_ignored_and_removed(support_domain):
    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    stale = domain.index_dir / ".tmp-stale"
    stale.mkdir()
    (stale / "chunks.jsonl").write_text("{half a line")
    assert load_index(domain.index_dir).chunks
    build_index(domain, HashEmbedder(), force=True, progress=False)
    assert not stale.exists()


def test_missing_index_is_a_clear_error(support_domain):
    with pytest.raises(IndexStoreError, match="run `domainkit index`"):
        load_index(load_domain(support_domain).index_dir)


def test_skipped_files_are_recorded_in_the_manifest(support_domain, embedder):
    (support_domain / "docs" / "scan.pdf").write_bytes(b"%PDF-1.4 nonsense")
    domain = load_domain(support_domain)
    report = build_index(domain, embedder, progress=False)
    assert [s.source for s in report.skipped] == ["scan.pdf"]
    manifest = json.loads((report.path / "manifest.json").read_text())
    assert manifest["skipped"][0]["source"] == "scan.pdf"


def test_build_dir_override(support_domain, embedder, tmp_path):
    domain = load_domain(support_domain, build_dir=tmp_path / "elsewhere")
    build_index(domain, embedder, progress=False)
    assert (tmp_path / "elsewhere" / "index" / "CURRENT").is_file()
    assert not (support_domain / ".domainkit").exists()


def test_index_type_is_chosen_by_size():
    assert choose_index_type(1_000) == "flat"
    assert choose_index_type(200_000) == "hnsw"
    assert choose_index_type(5_000_000) == "ivf"
    assert choose_index_type(10, "hnsw") == "hnsw"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_every_faiss_kind_finds_the_exact_vector(kind, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_faiss(vectors, kind)
    assert index_kind(index) == kind
    hits = [search_faiss(index, vectors[i], 3)[0][0] for i in range(0, 4_000, 400)]
    assert hits == list(range(0, 4_000, 400))


def test_files_are_written_without_touching_the_documents(support_domain, embedder):
    docs = support_domain / "docs"
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in docs.rglob("*") if p.is_file()}
    build_index(load_domain(support_domain), embedder, progress=False)
    after = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in docs.rglob("*") if p.is_file()}
    assert before == after


def test_a_second_run_on_the_same_domain_fails_at_once_naming_the_first(indexed_support):
    from typer.testing import CliRunner

    from domainkit.cli import app
    from domainkit.config import load_domain
    from domainkit.utils.lock import build_lock

    domain = load_domain(indexed_support)
    live = (domain.index_dir / "CURRENT").read_text()
    with build_lock(domain.build_dir, "build"):
        result = CliRunner().invoke(app, ["index", str(indexed_support), "--force"])
        assert result.exit_code == 1
        assert "in use by another domainkit run" in result.output
        assert f"pid {os.getpid()}, domainkit build" in result.output
    assert (domain.index_dir / "CURRENT").read_text() == live, "the live index is untouched"
    again = CliRunner().invoke(app, ["index", str(indexed_support)])
    assert again.exit_code == 0, again.output


@pytest.mark.integration
def test_an_index_run_killed_with_sigkill_leaves_the_previous_index_to_search(support_domain):
    """SIGKILL while re-indexing changed documents (no cleanup at all): the previous index
    still loads and searches, and the next run replaces it with the index an unbroken run
    builds, and removes the leftovers."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    domain = load_domain(support_domain)
    build_index(domain, HashEmbedder(), progress=False)
    before = [c.id for c in load_index(domain.index_dir).chunks]
    (support_domain / "docs" / "returns.md").write_text("# Returns\n\nNo returns at all.")
    root = Path(__file__).resolve().parents[1]
    cli = [sys.executable, "-c", "import tests.conftest; from domainkit.cli import app; app()"]
    command = [*cli, "index", str(support_domain), "--force"]
    embedding = support_domain.parent / "embedding-started"
    env = {
        **os.environ,
        "DOMAINKIT_TEST_EMBED_DELAY": "30",
        "DOMAINKIT_TEST_EMBED_MARKER": str(embedding),
    }
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 60
    while not embedding.exists():  # the run has read and chunked the documents
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    after = load_index(domain.index_dir)
    assert [c.id for c in after.chunks] == before, "the previous index is untouched"
    rerun = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = load_index(domain.index_dir)
    assert any("No returns" in c.text for c in resumed.chunks)
    assert not list(domain.index_dir.glob(".tmp-*")), "leftovers of the killed run are gone"
    # The same index as a run that was never killed, from the same documents.
    unbroken = support_domain.parent / "unbroken"
    shutil.copytree(support_domain / "docs", unbroken / "docs")
    shutil.copy(support_domain / "domain.yaml", unbroken / "domain.yaml")
    command[-2] = str(unbroken)
    once = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert once.returncode == 0, once.stderr[-3000:]
    whole = load_index(load_domain(unbroken).index_dir)
    assert [(c.id, c.text) for c in resumed.chunks] == [(c.id, c.text) for c in whole.chunks]
    assert np.array_equal(resumed.embeddings, whole.embeddings)
