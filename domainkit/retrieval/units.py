"""A passage cut into evidence units: sentences and list lines, each with the lead-in it
depends on ("You can return it if:", a sentence opening with "It") and the title line
above it. Evidence selection scores these units; synth's facts are these units too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# A sentence ends at . ! ? (and closing quotes or brackets) before a capital, digit or
# opening bracket; not after common abbreviations or single initials.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9£$€])")
_ABBREVIATION = re.compile(
    r"(?:\b(?i:e\.g|i\.e|approx|dr|mr|mrs|ms|st|vs|fig|cf|inc|ltd|jr|sr|mt|ft|al|vol)|\b[A-Z])\.$"
)
# These end a sentence too ("The answer is no."), so they count only before a number.
_NUMBER_ABBREVIATION = re.compile(r"\b(?i:no|nos|art|pp?|para|reg|ss?|sec|ch|op|min|max)\.$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\(?[a-z0-9]{1,3}[.)]|\([ivx]{1,4}\))\s+")
_REFERS_BACK = re.compile(
    r"^(?:it|its|this|these|that|those|they|them|their|he|she|then|however|otherwise|"
    r"also|both|each|such|if so|if not|in that case|in this case|here|there)\b",
    re.IGNORECASE,
)
_LEAD_IN_END = ("：", ":", "—", "–", " -")
_HAS_WORDS = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Unit:
    """A sentence or list line of a passage: ``chunk.text[start:end]``."""

    start: int
    end: int
    lead: int | None = None  # index of the unit it depends on, in the same passage
    heading: tuple[int, int] | None = None  # span of the title line above it in the passage
    lead_in: bool = False  # another unit depends on it ("You can return it if:", a header)


def text_units(text: str) -> list[Unit]:
    """The sentences and list lines of a passage, with the lead-in each depends on.

    Hard-wrapped lines (PDF and plain-text documents) are joined back into their sentence;
    a list item or table row starts a new line of its own. Headings (``#`` lines, short
    title lines such as a PDF's "3. What you may bring to your desk", breadcrumbs) and lines
    without words are left out; each unit keeps the span of the title line above it, which
    gives a bare sentence its topic.
    """
    units: list[Unit] = []
    lead_in: int | None = None
    table_head: int | None = None
    heading: tuple[int, int] | None = None
    section = 0  # the first unit under the latest heading: nothing refers back past it
    for start, end, kind in _blocks(text):
        block = text[start:end]
        if kind == "heading":
            lead_in = table_head = None
            section = len(units)
            if _HAS_WORDS.search(block):
                heading = (start + len(block) - len(block.lstrip("#* ")), end)
            continue
        if kind == "row":
            if table_head is None:
                table_head = len(units)
                units.append(Unit(start, end, heading=heading))
            else:
                units.append(Unit(start, end, table_head, heading))
            continue
        table_head = None
        if kind != "item":
            lead_in = None
        for s, e in _sentences(block):
            sentence = block[s:e]
            if kind == "item":
                lead = lead_in  # a list item depends on its "...:" line, when there is one
            elif len(units) > section and _REFERS_BACK.match(sentence):
                lead = len(units) - 1
            else:
                lead = None
            units.append(Unit(start + s, start + e, lead, heading))
            if sentence.rstrip().endswith(_LEAD_IN_END):
                lead_in = len(units) - 1
    # A colon line or a table's header introduces what follows without stating it; a
    # sentence that a later "It ..." refers back to states something itself.
    leads = {
        u.lead
        for u in units
        if u.lead is not None
        and (
            text[units[u.lead].start : units[u.lead].end].rstrip().endswith(_LEAD_IN_END)
            or text[u.start : u.end].lstrip().startswith("|")
            or text[u.start : u.end].count(" | ") >= 2
        )
    }
    return [replace(u, lead_in=True) if i in leads else u for i, u in enumerate(units)]


_TERMINAL = (".", "!", "?", ":", ";", "—", "–")


def _blocks(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the passage's logical lines: kind is text, item, row or heading.
    A wrapped line continues the previous one when that one has no closing punctuation and
    either is long (a wrapped paragraph) or is followed by a lower-case word."""
    blocks: list[list] = []
    offset = 0
    previous_open = False
    lines = text.splitlines(keepends=True)
    width = max((len(line.strip()) for line in lines), default=0)
    for line in lines:
        stripped = line.strip()
        start = offset + len(line) - len(line.lstrip())
        offset += len(line)
        if not stripped:
            previous_open = False
            continue
        if stripped.startswith("#") or not _HAS_WORDS.search(stripped):
            blocks.append([start, start + len(stripped), "heading"])
            previous_open = False
            continue
        is_row = stripped.startswith("|") or stripped.count(" | ") >= 2
        is_item = bool(_LIST_ITEM.match(stripped))
        if previous_open and not is_row and not is_item:
            last = blocks[-1]
            last_words = len(text[last[0] : last[1]].split())
            last_line = len(text[last[0] : last[1]].splitlines()[-1])
            if stripped[0].islower() or (last_words >= 7 and last_line >= 0.7 * width):
                last[1] = start + len(stripped)
                previous_open = not stripped.endswith(_TERMINAL)
                continue
        kind = "row" if is_row else "item" if is_item else "text"
        blocks.append([start, start + len(stripped), kind])
        previous_open = kind != "row" and not stripped.endswith(_TERMINAL)
    for block in blocks:
        if block[2] in ("text", "item") and _is_title(text[block[0] : block[1]], block[2]):
            block[2] = "heading"
    return [(s, e, k) for s, e, k in blocks if _HAS_WORDS.search(text[s:e])]


_NUMBERED = re.compile(r"^\s*(?:\d{1,2}(?:\.\d{1,2})*[.)]?|[A-Z][.)])\s+(?=[A-Z])")
_BREADCRUMB = re.compile(r"[›»]|\s>\s")
TITLE_WORDS = 8


def _is_title(line: str, kind: str) -> bool:
    """A title line: a breadcrumb ("Support › App › Pairing"), or a short line without
    closing punctuation or a "label: value" colon ("Refunds when you withdraw", a PDF's
    "3. What you may bring to your desk"); for a list line, only a numbered section title
    in capitals. Such lines name a topic and state nothing, so they are context, not
    evidence."""
    plain = line.strip().strip("*_ ")
    if plain.endswith(_TERMINAL):
        return False
    if len(_BREADCRUMB.findall(plain)) >= 2:
        return True
    if kind == "item":
        match = _NUMBERED.match(plain)
        if not match:
            return False
        plain = plain[match.end() :]
    words = plain.split()
    return (
        0 < len(words) <= TITLE_WORDS
        and not plain.endswith(_TERMINAL)
        and ":" not in plain
        and "|" not in plain
        and (kind == "text" or plain[0].isupper())
    )


def _sentences(line: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _BOUNDARY.finditer(line):
        before = line[start : match.start()]
        if _ABBREVIATION.search(before) or (
            _NUMBER_ABBREVIATION.search(before) and line[match.end() : match.end() + 1].isdigit()
        ):
            continue
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(line)))
    return [(s, e) for s, e in spans if _HAS_WORDS.search(line[s:e])]
