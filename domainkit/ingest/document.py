"""The unit ingestion produces: a document's normalized text and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Document:
    """Text of one source file (or one page of a PDF).

    Attributes:
        text: Normalized text. With ``markup="markdown"`` headings are ``#`` lines, which is
            how HTML and Word headings are represented too, so one chunker serves all formats.
        source: Path relative to the domain's docs/ folder, with forward slashes.
        title: Document title (HTML <title>, first heading, or the file name).
        format: The loader that read it (``md``, ``txt``, ``html``, ``pdf``, ``docx``).
        markup: ``markdown`` when ``#`` lines are headings, ``plain`` otherwise.
        page: 1-based page number for paginated formats.
    """

    text: str
    source: str
    title: str
    format: str
    markup: Literal["markdown", "plain"] = "plain"
    page: int | None = None
