"""Text clean-up shared by all loaders."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"(?<=\S)[ \t\u00a0]+")
_ATX = re.compile(r"(#{1,6})[ \t]+(.*)")
_BLANK_LINES = re.compile(r"\n{3,}")
# "exam-\nple" -> "example": a line-break hyphen between lowercase letters is a layout artefact.
_LINE_BREAK_HYPHEN = re.compile(r"(?<=[a-z])-\n(?=[a-z])")
# A wrapped line: the next line continues the sentence in lowercase.
_WRAPPED_LINE = re.compile(r"(?<=[^\s.:;!?])\n(?=[a-z(])")
# A line wrapped before a figure: "...then dims after" / "10 seconds." (a numbered step,
# "1. Open the app", starts a line of its own).
_WRAPPED_BEFORE_FIGURE = re.compile(r"(?<=[a-z,])\n(?=\d+(?:[.,:]\d+)*\s*[a-z%£$€])")


def normalize_text(text: str, *, layout: bool = False) -> str:
    """Normalize unicode and whitespace.

    Args:
        text: Raw extracted text.
        layout: The text comes from a page layout (PDF), so line-break hyphens are removed and
            hard-wrapped lines rejoined. Authored formats keep their line breaks.
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00ad", "")
    text = _CONTROL.sub("", text)
    # Line by line: a regex for trailing blanks backtracks quadratically on a long inner run.
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    if layout:
        text = _LINE_BREAK_HYPHEN.sub("", text)
        text = _WRAPPED_LINE.sub(" ", text)
        text = _WRAPPED_BEFORE_FIGURE.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def atx_heading(line: str) -> tuple[int, str] | None:
    """(level, title) of a Markdown ``#`` heading line, else None.

    A closing run of ``#`` is dropped only after a space (``## C#`` keeps its title). Plain
    string operations, no backtracking regex: a crafted line of 60k ``#`` costs linear time.
    """
    match = _ATX.match(line)
    if match is None:
        return None
    title = match.group(2).rstrip(" \t")
    opened = title.rstrip("#")
    if opened != title and (not opened or opened[-1] in " \t"):
        title = opened.rstrip(" \t")
    return (len(match.group(1)), title) if title else None
