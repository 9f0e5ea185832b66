"""File loaders, chosen by file extension from the ``LOADERS`` registry.

A loader turns one file into one or more ``Document``s or raises ``LoadError`` with a reason a
user can act on; the corpus loader records the reason and goes on with the other files.
HTML and Word headings become Markdown ``#`` lines so one heading-aware chunker serves all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from domainkit.ingest.document import Document
from domainkit.ingest.normalize import atx_heading, normalize_text
from domainkit.registry import Registry

Loader = Callable[[Path, str], list[Document]]
LOADERS: Registry[Loader] = Registry("loader", "domainkit.loaders")


class LoadError(Exception):
    """One file cannot be read; the message says why."""


def read_text_file(path: Path) -> str:
    """Decode a text file: UTF-8 (with or without BOM), else a confidently detected encoding."""
    data = path.read_bytes()
    if not data.strip():
        raise LoadError("empty file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise LoadError("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        utf8_error = f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    # chaos measures how garbled the decoded text looks; above ~10% it is guesswork.
    if best is None or best.chaos > 0.1:
        raise LoadError(f"{utf8_error} and no other encoding fits; re-save it as UTF-8")
    # Short texts fit several single-byte code pages equally well; Windows-1252 is by far
    # the most common legacy encoding of documents, so it wins a tie.
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and western.chaos <= best.chaos + 0.02:
        return str(western)
    return str(best)


def _first_heading(text: str) -> str | None:
    heading = next((h for h in map(atx_heading, text.split("\n")) if h), None)
    return heading[1].strip() if heading else None


def _title_from_name(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").strip().capitalize()


def _require_text(text: str) -> str:
    if not text.strip():
        raise LoadError("no text after extraction")
    return text


@LOADERS.register(".md", ".markdown")
def load_markdown(path: Path, source: str) -> list[Document]:
    text = _require_text(normalize_text(read_text_file(path)))
    title = _first_heading(text) or _title_from_name(path)
    return [Document(text, source, title, "md", markup="markdown")]


@LOADERS.register(".txt", ".text")
def load_text(path: Path, source: str) -> list[Document]:
    text = _require_text(normalize_text(read_text_file(path)))
    first_line = text.split("\n", 1)[0].strip()
    title = first_line if 0 < len(first_line) <= 120 else _title_from_name(path)
    # Plain text often underlines its headings (setext style); then it chunks like Markdown.
    markup: Literal["markdown", "plain"] = "markdown" if _SETEXT_UNDERLINE.search(text) else "plain"
    return [Document(text, source, title, "txt", markup=markup)]


_SETEXT_UNDERLINE = re.compile(r"^\S[^\n]*\n {0,3}(={3,}|-{3,})[ \t]*$", re.MULTILINE)


_HTML_DROP = ["script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside"]
_HTML_BLOCKS = {"p", "div", "section", "article", "main", "blockquote", "pre", "tr", "dd", "dt"}


@LOADERS.register(".html", ".htm")
def load_html(path: Path, source: str) -> list[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(read_text_file(path), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_HTML_DROP + ["title", "head"]):
        tag.decompose()
    for tag in soup.find_all(_is_navigation):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    text = _require_text(normalize_text(_html_to_markdown(body)))
    # The page's own <h1> beats <title>, which usually carries the site name as well.
    title = _first_heading(text) or title or _title_from_name(path)
    return [Document(text, source, title, "html", markup="markdown")]


_NAVIGATION_ROLES = {"navigation", "menu", "menubar", "banner", "contentinfo"}


def _is_navigation(tag) -> bool:
    """Breadcrumb trails and elements marked as navigation (often a <p> or <ol>, not <nav>)."""
    if tag.attrs is None:  # a tag decomposed with its parent
        return False
    classes = " ".join(tag.get("class") or []) + " " + str(tag.get("id") or "")
    label = str(tag.get("aria-label") or "")
    return (
        "breadcrumb" in classes.lower()
        or "breadcrumb" in label.lower()
        or str(tag.get("role") or "").lower() in _NAVIGATION_ROLES
    )


def _html_to_markdown(root) -> str:
    """Flatten HTML to Markdown-like text: headings as # lines, list items as bullets."""
    for level in range(1, 7):
        for tag in root.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in root.find_all("li"):
        tag.replace_with(f"\n- {tag.get_text(' ', strip=True)}\n")
    for tag in root.find_all(["td", "th"]):
        tag.replace_with(f"{tag.get_text(' ', strip=True)} | ")
    for tag in root.find_all("br"):
        tag.replace_with("\n")
    for tag in root.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = (
        re.sub(r"[ \t]+", " ", line).strip().rstrip("|").strip()
        for line in root.get_text().split("\n")
    )
    return "\n".join(lines)


# Each of a PDF's streams inflates to at most pypdf's cap (75 MB), but a file can hold
# hundreds: its text as a whole is capped too. A 2,000-page book has about 5 MB of text.
MAX_TEXT_MB = 64


@LOADERS.register(".pdf")
def load_pdf(path: Path, source: str) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF (needs a password)")
        pages, size = [], 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            size += len(pages[-1])
            if size > MAX_TEXT_MB * 2**20:
                raise LoadError(
                    f"more than {MAX_TEXT_MB:g} MB of text (a file this size can hold that much "
                    "only as a decompression bomb)"
                )
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except LimitReachedError:  # pypdf caps each stream's inflated size (75 MB)
        raise LoadError("a compressed stream inflates past pypdf's size limit") from None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise LoadError(f"unreadable PDF ({type(e).__name__}: {e})") from None
    texts = [normalize_text(page, layout=True) for page in pages]
    if not any(texts):
        raise LoadError("no extractable text (a scanned PDF? run OCR on it first)")
    title = meta_title.strip() or next(t.split("\n", 1)[0] for t in texts if t)[:120]
    return [
        Document(text, source, title, "pdf", page=number)
        for number, text in enumerate(texts, start=1)
        if text
    ]


# A .docx is a zip: a few kilobytes can inflate to gigabytes that python-docx would read whole.
MAX_INFLATED_MB = 256


def _check_inflated_size(path: Path) -> None:
    """Refuse a zip whose members inflate past ``MAX_INFLATED_MB`` (their declared sizes:
    zipfile stops reading a member at its declared size, so a lying header cannot pass)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        inflated = sum(member.file_size for member in archive.infolist()) / 2**20
    if inflated > MAX_INFLATED_MB:
        raise LoadError(
            f"its contents inflate to {inflated:.0f} MB, over the {MAX_INFLATED_MB} MB limit "
            "(a compression bomb, or a document too large to index)"
        )


@LOADERS.register(".docx")
def load_docx(path: Path, source: str) -> list[Document]:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        _check_inflated_size(path)
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as e:
        raise LoadError(f"unreadable Word file ({type(e).__name__}: {e})") from None
    lines = [_docx_paragraph(paragraph) for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    text = _require_text(normalize_text("\n\n".join(line for line in lines if line.strip())))
    title = (document.core_properties.title or "").strip() or _first_heading(text)
    return [Document(text, source, title or _title_from_name(path), "docx", markup="markdown")]


def _docx_paragraph(paragraph) -> str:
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    text = paragraph.text.strip()
    if style == "Title":
        return f"# {text}"
    match = re.fullmatch(r"Heading (\d)", style)
    if match:
        return f"{'#' * int(match.group(1))} {text}"
    if style.startswith("List"):
        return f"- {text}"
    return text
