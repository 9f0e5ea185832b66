"""Heading-aware, token-bounded chunking.

Markdown-style documents (Markdown, HTML, Word) are first cut at their headings, keeping the
heading path of each section; each section is then split to the token budget with
langchain's ``RecursiveCharacterTextSplitter``, measuring length in the embedder's tokens.
The heading cut is done here rather than with langchain's ``MarkdownHeaderTextSplitter``
because that one rewrites whitespace, and chunks must keep exact character spans into the
document so citations can point back at the source text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from domainkit.config.schema import ChunkingConfig
from domainkit.ingest.document import Document
from domainkit.ingest.normalize import atx_heading
from domainkit.utils.hashing import text_hash

# langchain's default separators are paragraphs, lines, then spaces: a long paragraph is cut
# mid-sentence, and the evidence selector then offers a fragment ("Nevertheless,") as a line.
# Between lines and spaces, cut at a sentence's end: . ! or ? after a word, before a capital
# (not "1. Open the app", a numbered step run into one line).
_SEPARATORS = ["\n\n", "\n", r"(?<=[a-z)][.!?])\s+(?=[A-Z\"'(])", " ", ""]
_FENCE = re.compile(r"^\s*(```|~~~)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LIST_OR_QUOTE = re.compile(r"^([-*+>|]|\d+[.)])(\s|$)")


@dataclass(frozen=True)
class Chunk:
    """A retrievable passage of one document.

    Attributes:
        id: Stable content hash of (source, page, text): unchanged text keeps its id.
        text: The passage, an exact slice ``document.text[start:end]``.
        source: Document path relative to docs/.
        title: Document title.
        headings: Heading path from the document's top down to this passage.
        start: Character offset of the passage in the document text.
        end: End offset (exclusive).
        page: Page number for paginated formats.
        n_tokens: Length in embedder tokens.
    """

    id: str
    text: str
    source: str
    title: str
    headings: tuple[str, ...]
    start: int
    end: int
    page: int | None = None
    n_tokens: int = 0

    @property
    def breadcrumb(self) -> str:
        """``Title > Heading > Sub-heading`` without repeating the title as a heading."""
        parts = [self.title, *(h for h in self.headings if h != self.title)]
        return " > ".join(p for p in parts if p)

    @property
    def embed_text(self) -> str:
        """What is embedded and BM25-indexed: the heading path gives the passage its context."""
        return f"{self.breadcrumb}\n\n{self.text}" if self.breadcrumb else self.text

    def to_dict(self) -> dict:
        row = asdict(self)
        row["headings"] = list(self.headings)
        return row

    @classmethod
    def from_dict(cls, row: dict) -> Chunk:
        return cls(**{**row, "headings": tuple(row["headings"])})


@dataclass(frozen=True)
class _Section:
    headings: tuple[str, ...]
    start: int
    end: int


def heading_sections(text: str) -> Iterator[_Section]:
    """Cut Markdown text at its headings, ATX (``## Title``) or setext (a line underlined with
    ``===`` or ``---``), ignoring heading-like lines inside code fences.

    Each section spans the body under one heading, without the heading lines themselves.
    """
    lines = text.splitlines(keepends=True)
    stack: list[tuple[int, str]] = []
    body_start, offset, in_fence, skip = 0, 0, False, 0
    for i, line in enumerate(lines):
        start, offset = offset, offset + len(line)
        if skip:
            skip -= 1
            continue
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _heading(line, lines[i + 1] if i + 1 < len(lines) else "")
        if heading is None:
            continue
        level, title, n_lines = heading
        yield _Section(tuple(h for _, h in stack), body_start, start)
        stack = [(lvl, h) for lvl, h in stack if lvl < level] + [(level, title)]
        body_start = start + sum(len(x) for x in lines[i : i + n_lines])
        skip = n_lines - 1
    yield _Section(tuple(h for _, h in stack), body_start, len(text))


def _heading(line: str, next_line: str) -> tuple[int, str, int] | None:
    """(level, title, lines used) if ``line`` starts a heading."""
    atx = atx_heading(line.rstrip("\n"))
    if atx:
        return atx[0], atx[1], 1
    underline = _SETEXT.match(next_line)
    title = line.strip()
    if (
        underline
        and title
        and (not _LIST_OR_QUOTE.match(title) or _numbered_title(title, underline))
    ):
        return (1 if underline.group(1)[0] == "=" else 2), title, 2
    return None


def _numbered_title(title: str, underline: re.Match) -> bool:
    """A numbered line over a rule as long as itself is a plain-text section title ("4.
    BATTERIES" over twelve dashes); over a short rule ("---") it is a list item before a
    thematic break, as Markdown reads it."""
    return bool(re.match(r"\d+[.)]\s", title)) and len(underline.group(1)) >= len(title) - 2


def _locate(text: str, pieces: list[str]) -> Iterator[tuple[int, str]]:
    """Offsets of consecutive split pieces in ``text``.

    langchain's own ``add_start_index`` subtracts the overlap as if it were characters, which
    misplaces pieces when length is measured in tokens; pieces appear in order, so each is
    searched for just after the start of the previous one.
    """
    cursor = 0
    for piece in pieces:
        found = text.find(piece, cursor)
        if found < 0:  # whitespace stripped at a boundary; fall back to a full search
            found = text.find(piece)
        yield found, piece
        cursor = found + 1


class Chunker:
    """Split documents into ``Chunk``s of at most ``chunk_size`` tokens.

    Args:
        count_tokens: Length function in the embedder's tokens.
        settings: Chunk size, overlap and minimum length.
    """

    def __init__(self, count_tokens: Callable[[str], int], settings: ChunkingConfig):
        self.count_tokens = count_tokens
        self.settings = settings
        self._splitter = RecursiveCharacterTextSplitter(
            separators=_SEPARATORS,
            is_separator_regex=True,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            length_function=count_tokens,
        )

    def chunk(self, document: Document) -> list[Chunk]:
        """Chunks of one document, in reading order."""
        if document.markup == "markdown":
            sections = list(heading_sections(document.text))
        else:
            sections = [_Section((), 0, len(document.text))]
        chunks = []
        for section in sections:
            body = document.text[section.start : section.end]
            if not body.strip():
                continue
            for offset, piece in _locate(body, self._splitter.split_text(body)):
                chunk = self._make_chunk(document, section.headings, section.start + offset, piece)
                if chunk.n_tokens >= self.settings.min_chunk_tokens:
                    chunks.append(chunk)
        return chunks

    def chunk_all(self, documents: Iterable[Document]) -> list[Chunk]:
        """Chunks of all documents, without exact duplicates (same source, page and text)."""
        seen: set[str] = set()
        unique = []
        for document in documents:
            for chunk in self.chunk(document):
                if chunk.id not in seen:
                    seen.add(chunk.id)
                    unique.append(chunk)
        return unique

    def _make_chunk(self, document: Document, headings: tuple[str, ...], start: int, text: str):
        page = "" if document.page is None else str(document.page)
        return Chunk(
            id=text_hash(document.source, page, text),
            text=text,
            source=document.source,
            title=document.title,
            headings=headings,
            start=start,
            end=start + len(text),
            page=document.page,
            n_tokens=self.count_tokens(text),
        )
