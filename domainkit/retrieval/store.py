"""The persisted index of a domain: chunks, embeddings, FAISS and BM25, with a manifest.

Layout under ``<build>/index/``: ``CURRENT`` names the live ``v-<fingerprint>-<time>/``
folder holding manifest.json, chunks.jsonl, embeddings.npy, dense.faiss and bm25/. Versions
are published with ``utils.versioned``, so a killed run leaves the previous index intact.
Embeddings of unchanged chunks are reused from the previous version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from domainkit import __version__
from domainkit.config.layout import IndexVersion
from domainkit.config.loading import Domain
from domainkit.errors import IndexStoreError
from domainkit.ingest import Chunk, Chunker, IngestResult, SkippedFile, load_documents
from domainkit.ingest.corpus import list_files
from domainkit.retrieval.bm25 import BM25Index
from domainkit.retrieval.dense import build_faiss, index_kind, load_faiss, save_faiss
from domainkit.retrieval.embedders import Embedder
from domainkit.utils import versioned
from domainkit.utils.atomic import atomic_write_json, atomic_write_jsonl, read_jsonl
from domainkit.utils.hashing import code_hash, file_hash, json_hash, text_hash

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class LoadedIndex:
    """An index version read back from disk."""

    path: Path
    manifest: dict
    chunks: list[Chunk]
    embeddings: np.ndarray
    dense: faiss.Index
    bm25: BM25Index


@dataclass
class IndexReport:
    """What a build did, for the CLI summary."""

    path: Path
    up_to_date: bool
    documents: int = 0
    files_read: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    index_type: str = ""
    seconds: float = 0.0
    skipped: list[SkippedFile] = field(default_factory=list)


def current_version(index_dir: Path) -> Path | None:
    return versioned.current_version(index_dir, IndexVersion(Path()).manifest.name)


def load_index(index_dir: Path) -> LoadedIndex:
    """Load the live index version.

    Raises:
        IndexStoreError: There is no complete index (run ``domainkit index`` first).
    """
    version = current_version(index_dir)
    if version is None:
        raise IndexStoreError(f"{index_dir}: no index yet; run `domainkit index` on the domain")
    manifest = _read_manifest(version)
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexStoreError(
            f"{version}: index format {manifest.get('format')} is not "
            f"{FORMAT_VERSION}; rebuild it with `domainkit index --force`"
        )
    files = IndexVersion(version)
    chunks = [Chunk.from_dict(row) for row in read_jsonl(files.chunks)]
    embeddings = np.load(files.embeddings, mmap_mode="r")
    return LoadedIndex(
        path=version,
        manifest=manifest,
        chunks=chunks,
        embeddings=embeddings,
        dense=load_faiss(files.dense),
        bm25=BM25Index.load(files.bm25, size=len(chunks)),
    )


def _read_manifest(version: Path) -> dict:
    return json.loads(IndexVersion(version).manifest.read_text(encoding="utf-8"))


def docs_fingerprint(index_dir: Path) -> str | None:
    """One hash of the documents the live index was built from (their paths and contents),
    None without an index: which corpus this is, whatever the domain is called."""
    from domainkit.utils.hashing import json_hash

    version = current_version(index_dir)
    if version is None:
        return None
    return json_hash(sorted(_read_manifest(version).get("files", {}).items()))


def source_hashes(domain: Domain) -> dict[str, str]:
    """Content hash of every document file the index reads, by path relative to docs/."""
    docs = domain.docs_dir
    hashes = {}
    for path in list_files(docs, domain.config.ingest):
        try:
            hashes[path.relative_to(docs).as_posix()] = file_hash(path)
        except OSError:  # unreadable or gone: reading it reports why
            continue
    return hashes


def fingerprint(files: dict[str, str], domain: Domain, embedder: Embedder) -> str:
    """Hash of everything the index depends on: files, settings, embedder, and the code
    that reads, chunks and indexes them."""
    config = domain.config
    settings = {
        "ingest": config.ingest.model_dump(),
        "chunking": config.chunking.model_dump(),
        "index_type": config.retrieval.index_type,
        "embedder": embedder.id,
        "format": FORMAT_VERSION,
        "code": code_hash("ingest", "retrieval"),
    }
    return json_hash({"files": files, "settings": settings})


def build_index(
    domain: Domain,
    embedder: Embedder,
    *,
    force: bool = False,
    progress: bool = True,
    ingested: IngestResult | None = None,
) -> IndexReport:
    """Chunk, embed and index a domain's documents, reusing what has not changed.

    Args:
        domain: The domain to index.
        embedder: Embedder for chunks (and, via its tokenizer, chunk sizes).
        force: Rebuild even when the fingerprint matches the live index.
        progress: Show progress bars.
        ingested: The documents as the build's ingest stage read them; by default they
            are read here.
    """
    started = time.perf_counter()
    index_dir = domain.index_dir
    files = source_hashes(domain)
    stamp = fingerprint(files, domain, embedder)
    previous = current_version(index_dir)
    if previous is not None and not force:
        manifest = _read_manifest(previous)
        if manifest.get("fingerprint") == stamp:
            return IndexReport(
                path=previous,
                up_to_date=True,
                documents=manifest["counts"]["documents"],
                files_read=manifest["counts"]["files"],
                chunks=manifest["counts"]["chunks"],
                index_type=manifest["index"]["type"],
            )

    if ingested is None:
        ingested = load_documents(domain.docs_dir, domain.config.ingest, progress=progress)
    chunks = Chunker(embedder.count_tokens, domain.config.chunking).chunk_all(ingested.documents)
    if not chunks:
        raise IndexStoreError(f"{domain.docs_dir}: documents were read but gave no chunks")
    cache = _reusable_vectors(previous, embedder.id)
    vectors, embedded = _embed_with_cache(chunks, embedder, cache, progress)
    dense = build_faiss(vectors, domain.config.retrieval.index_type)
    bm25 = BM25Index.build([c.embed_text for c in chunks])
    manifest = _manifest(domain, stamp, embedder, vectors, dense, files, ingested, chunks)
    version = _write_version(index_dir, stamp, chunks, vectors, dense, bm25, manifest)
    return IndexReport(
        path=version,
        up_to_date=False,
        documents=len(ingested.documents),
        files_read=ingested.files_read,
        chunks=len(chunks),
        embedded=embedded,
        reused=len(chunks) - embedded,
        index_type=manifest["index"]["type"],
        seconds=time.perf_counter() - started,
        skipped=ingested.skipped,
    )


def _manifest(domain, stamp, embedder, vectors, dense, files, ingested, chunks) -> dict:
    """What a version holds and was built from (its ``manifest.json``)."""
    return {
        "format": FORMAT_VERSION,
        "domainkit": __version__,
        "fingerprint": stamp,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embedder": {"id": embedder.id, "dim": int(vectors.shape[1])},
        "index": {"type": index_kind(dense), "vectors": int(dense.ntotal)},
        "chunking": domain.config.chunking.model_dump(),
        "counts": {
            "files": ingested.files_read,
            "documents": len(ingested.documents),
            "chunks": len(chunks),
            "skipped": len(ingested.skipped),
        },
        "files": files,
        "skipped": [{"source": s.source, "reason": s.reason} for s in ingested.skipped],
    }


def _reusable_vectors(previous: Path | None, embedder_id: str) -> dict[str, np.ndarray]:
    """Vectors of the previous version keyed by embedded-text hash, if made by this embedder."""
    if previous is None:
        return {}
    try:
        manifest = _read_manifest(previous)
        if manifest.get("embedder", {}).get("id") != embedder_id:
            return {}
        rows = read_jsonl(IndexVersion(previous).chunks)
        vectors = np.load(IndexVersion(previous).embeddings)
    except (OSError, ValueError, KeyError) as e:
        log.warning("previous index unreadable, embedding everything again: %s", e)
        return {}
    return {text_hash(Chunk.from_dict(row).embed_text): vectors[i] for i, row in enumerate(rows)}


def _embed_with_cache(
    chunks: list[Chunk], embedder: Embedder, cache: dict[str, np.ndarray], progress: bool
) -> tuple[np.ndarray, int]:
    keys = [text_hash(c.embed_text) for c in chunks]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if missing:
        log.info("embedding %d new chunks (%d reused)", len(missing), len(chunks) - len(missing))
        fresh = embedder.embed([chunks[i].embed_text for i in missing], progress=progress)
        cache = {**cache, **{keys[i]: fresh[j] for j, i in enumerate(missing)}}
    vectors = np.stack([cache[k] for k in keys]).astype(np.float32)
    return vectors, len(missing)


def _write_version(
    index_dir: Path,
    stamp: str,
    chunks: list[Chunk],
    vectors: np.ndarray,
    dense: faiss.Index,
    bm25: BM25Index,
    manifest: dict,
) -> Path:
    def write(folder: Path) -> None:
        files = IndexVersion(folder)
        atomic_write_jsonl(files.chunks, (c.to_dict() for c in chunks))
        np.save(files.embeddings, vectors)
        save_faiss(dense, files.dense)
        bm25.save(files.bm25)
        atomic_write_json(files.manifest, manifest)  # last: marks completeness

    return versioned.publish(index_dir, stamp, write)
