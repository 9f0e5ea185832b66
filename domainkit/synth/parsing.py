"""Turning teacher replies into clean questions and answers, or rejecting them."""

from __future__ import annotations

import re

_TURN_MARKER = re.compile(
    r"\n\s*(?:\*\*)?(?:question|q|user|customer|statement|information|assistant|a|answer|"
    r"human|ai|reference)\s*(?:\*\*)?\s*[:：]",
    re.IGNORECASE,
)
_LEADING_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:answer|a|assistant|response|reply|question|q|new question|"
    r"rewritten question|reworded question)\s*(?:\*\*)?\s*[:：]\s*",
    re.IGNORECASE,
)
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s+")
_QUOTED_QUESTION = re.compile(r"[\"“]([^\"”]{8,}\?)[\"”]")
_META_PREFIX = re.compile(
    r"^(?:a |the )?(?:customer|user|student|tenant|patient|person|someone)\b[^:?]{0,40}"
    r"(?:ask|say|wonder|want)[a-z]*[^:?]{0,20}[:,]\s*",
    re.IGNORECASE,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(])|\n+")


def clean_reply(text: str) -> str:
    """Strip labels the model added and cut where it starts writing the next turn itself."""
    text = _LEADING_LABEL.sub("", text.strip())
    match = _TURN_MARKER.search("\n" + text)
    if match and match.start() > 0:
        text = ("\n" + text)[: match.start()]
    return text.strip().strip('"“”').strip()


def parse_question(text: str) -> str | None:
    """The first well-formed question in a reply, or None if there is none."""
    text = clean_reply(text)
    quoted = _QUOTED_QUESTION.search(text)
    if quoted:
        return quoted.group(1).strip()
    for line in text.splitlines():
        line = _META_PREFIX.sub("", _NUMBERING.sub("", line.strip())).strip().strip('"“”')
        for sentence in _SENTENCE_SPLIT.split(line):
            sentence = sentence.strip()
            if sentence.endswith("?") and len(sentence.split()) >= 3:
                return sentence[0].upper() + sentence[1:]
    return None


def repetition_ratio(text: str, n: int = 4) -> float:
    """Share of repeated word n-grams: high values mean the model looped."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)
