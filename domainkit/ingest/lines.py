"""Line ids: a sentence or list line of a document, named so the name survives rebuilds.

A line id is the document's path, its page (paginated formats), the line's character span
in the document and a digest of its text: ``warranty.md#120-184@1a2b3c4d`` or
``manual.pdf#p3:120-184@1a2b3c4d``. An unchanged document keeps every line's id through
any rebuild (new chunk sizes, another embedder); an edited line no longer matches its
digest, so a review that named it is known to be stale rather than silently moved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from domainkit.ingest.chunking import Chunk
from domainkit.utils.hashing import text_hash

_ID = re.compile(
    r"^(?P<source>.+)#(?:p(?P<page>\d+):)?(?P<start>\d+)-(?P<end>\d+)@(?P<digest>[0-9a-f]{8})$"
)


@dataclass(frozen=True)
class LineRef:
    """Where a line is: document, page, character span, and a digest of its text."""

    source: str
    page: int | None
    start: int
    end: int
    digest: str

    @classmethod
    def of(cls, source: str, page: int | None, start: int, end: int, text: str) -> LineRef:
        return cls(source, page, start, end, digest(text))

    @classmethod
    def parse(cls, line_id: str) -> LineRef:
        """The reference an id names; ``ValueError`` when it is not a line id."""
        match = _ID.match(line_id.strip())
        if match is None:
            raise ValueError(
                f"{line_id!r} is not a line id (expected DOCUMENT#START-END@DIGEST, as "
                "`domainkit review --json` lists them)"
            )
        page = match.group("page")
        return cls(
            match.group("source"),
            int(page) if page else None,
            int(match.group("start")),
            int(match.group("end")),
            match.group("digest"),
        )

    def __str__(self) -> str:
        page = f"p{self.page}:" if self.page else ""
        return f"{self.source}#{page}{self.start}-{self.end}@{self.digest}"

    def find(self, chunks: Iterable[Chunk]) -> tuple[Chunk, str] | None:
        """The passage that holds this line and the line's text, when the document still
        has the same text at the same place; None when it changed or is gone."""
        for chunk in chunks:
            if chunk.source != self.source or chunk.page != self.page:
                continue
            if chunk.start <= self.start and self.end <= chunk.end:
                text = chunk.text[self.start - chunk.start : self.end - chunk.start]
                return (chunk, text) if digest(text) == self.digest else None
        return None


def digest(text: str) -> str:
    """8 hex characters of the line's whitespace-normalized text."""
    return text_hash(" ".join(text.split()), length=8)


def line_id(chunk: Chunk, start: int, end: int) -> str:
    """The id of the line at document span [start, end) of ``chunk``'s document."""
    text = chunk.text[start - chunk.start : end - chunk.start]
    return str(LineRef.of(chunk.source, chunk.page, start, end, text))
