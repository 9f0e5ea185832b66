"""Ingestion: files -> normalized ``Document``s -> heading-aware, token-bounded ``Chunk``s."""

from domainkit.ingest.chunking import Chunk, Chunker
from domainkit.ingest.corpus import IngestResult, SkippedFile, load_documents
from domainkit.ingest.document import Document
from domainkit.ingest.loaders import LOADERS, LoadError

__all__ = [
    "LOADERS",
    "Chunk",
    "Chunker",
    "Document",
    "IngestResult",
    "LoadError",
    "SkippedFile",
    "load_documents",
]
