"""Text clean-up shared by all loaders."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"(?<=\S)[ \t\u00a0]+")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
# "exam-\nple" -> "example": a line-break hyphen between lowercase letters is a layout artefact.
_LINE_BREAK_HYPHEN = re.compile(r"(?<=[a-z])-\n(?=[a-z])")
# A wrapped line: the next line continues the sentence in lowercase.
_WRAPPED_LINE = re.compile(r"(?<=[^\s.:;!?])\n(?=[a-z(])")


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
    text = _TRAILING.sub("", text)
    if layout:
        text = _LINE_BREAK_HYPHEN.sub("", text)
        text = _WRAPPED_LINE.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()
