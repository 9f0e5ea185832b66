"""Facts, questions made from them without a teacher, and near-miss variants.

A fact is one evidence line of a passage (``retrieval.units.text_units``), so a question
made from it has a target that is correct by construction: quote that line. The teacher
writes the natural questions when it can; when its question fails the checks, a template
question is made from the sentence itself (its wh-word from the figure it states, its
words from the sentence's rarest terms and its heading), the way users type into a
search box. A near miss swaps one name or model number of a real question for one the
corpus never mentions, so the right reply is a refusal even though the evidence looks close.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from domainkit.ingest import Chunk
from domainkit.prompting import readable
from domainkit.retrieval.bm25 import content_terms
from domainkit.retrieval.terms import CorpusVocabulary, specific_terms, surface_words
from domainkit.retrieval.units import text_units

_DIGIT = re.compile(r"\d")
_STOP_TEMPLATE = frozenset(
    "a an the and or but of to in on at by for with from as is are was were be been it "
    "its this that these those you your we our they their can may must will shall should "
    "would not no if then than which who what when where how do does did has have had any "
    "all each per such also only there here".split()
)
_UNITS = (
    (
        re.compile(r"[£$€]\s*\d|\b\d+\s*(?:pence|cents?|dollars?|pounds?|euros?)\b", re.I),
        "How much",
    ),
    (re.compile(r"\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}\s*(?:am|pm)\b", re.I), "What time"),
    (
        re.compile(
            r"\b\d+\s*(?:-\s*)?(?:minutes?|hours?|days?|weeks?|months?|years?|seconds?)\b", re.I
        ),
        "How long",
    ),
    (
        re.compile(
            r"\b(?:january|february|march|april|may|june|july|august|september|october|"
            r"november|december)\b",
            re.I,
        ),
        "When",
    ),
    (re.compile(r"\d\s*%|\bpercent", re.I), "What percentage"),
    (re.compile(r"\b\d+\s+[a-z]+s\b", re.I), "How many"),
)


@dataclass(frozen=True)
class Fact:
    """One line of a passage that a question can be made from.

    Attributes:
        chunk: The passage.
        start: Start of the line in the passage text.
        end: End of the line in the passage text.
    """

    chunk: Chunk
    start: int
    end: int

    @property
    def text(self) -> str:
        return readable(self.chunk.text[self.start : self.end])


def facts_of(chunk: Chunk, limit: int) -> list[Fact]:
    """Up to ``limit`` informative lines of a passage, in passage order.

    Lines with figures and names are preferred: they are what users ask about. Lead-in
    lines ("You can return it if:") and very short or very long lines are not facts.
    """
    candidates = []
    for position, unit in enumerate(text_units(chunk.text)):
        text = readable(chunk.text[unit.start : unit.end])
        words = text.split()
        if not 5 <= len(words) <= 60 or text.endswith((":", "—", "–")):
            continue
        informative = len(_DIGIT.findall(text)) + len(specific_terms(text))
        candidates.append((informative, position, Fact(chunk, unit.start, unit.end)))
    best = sorted(candidates, key=lambda c: (-c[0], c[1]))[:limit]
    return [fact for _, _, fact in sorted(best, key=lambda c: c[1])]


# A digit inside a name or code (AirPlay 2, KP-200, E401) is not a figure to ask about.
_NAMED_DIGITS = re.compile(r"\b[A-Za-z]+-?\d[\w-]*|\b\d+[A-Za-z]+\d*\b|\b[A-Z]\w*[A-Z]\w* \d\b")


def wh_word(sentence: str) -> str:
    """The question word a sentence's figure calls for ("How long" for durations ...)."""
    plain = _NAMED_DIGITS.sub(" ", sentence)
    for pattern, word in _UNITS:
        if pattern.search(plain):
            return word
    return "What"


def template_question(fact: Fact, vocabulary: CorpusVocabulary, max_terms: int = 5) -> str:
    """A search-box question from the sentence itself: its wh-word, its rarest words (in
    sentence order, figures left out since they are the answer) and its heading's topic."""
    text = fact.text
    words = [w for w in surface_words(text) if not _DIGIT.search(w)]
    scored = []
    for position, word in enumerate(words):
        lowered = word.lower()
        if lowered in _STOP_TEMPLATE or len(lowered) < 3:
            continue
        terms = content_terms([lowered])[0]
        weight = max((vocabulary.idf(t) for t in terms), default=0.0)
        scored.append((weight + 2.0 * word[0].isupper(), position, word))
    topic = fact.chunk.headings[-1] if fact.chunk.headings else ""
    if len(topic.split()) > 6:
        topic = ""
    scored = [s for s in scored if s[2].lower() not in topic.lower().split()]
    keep = sorted(sorted(scored, reverse=True)[:max_terms], key=lambda s: s[1])
    phrase = " ".join(w for _, _, w in keep)
    if topic:
        phrase = f"{topic}: {phrase}"
    return f"{wh_word(text)} {phrase}?"


# Names a near miss may swap in. They are checked against the corpus before use.
_SWAP_NAMES = (
    "Falcon Osprey Heron Merlin Kingfisher Avocet Curlew Plover Wren Linnet Corvid Petrel "
    "Orion Vega Altair Rigel Nova Quasar Zenith Apex Summit Harbour Meridian Solstice "
    "Brackley Dunmore Ashgrove Fenwick Holloway Kirkby Marston Penrith Radley Stanmore "
    "Thornbury Whitcombe Aldgate Bexley Corbridge"
).split()


def near_miss(question: str, vocabulary: CorpusVocabulary, rng: random.Random) -> str | None:
    """The question with one of its names or model numbers replaced by one the corpus never
    mentions, or None when it names nothing that can be swapped."""
    # Figures stay: "within 45 days" when the documents say 30 still has an answer ("no").
    swappable = [
        t for t in specific_terms(question) if vocabulary.knows(t) and re.search("[A-Za-z]", t)
    ]
    if not swappable:
        return None
    term = rng.choice(swappable)
    if _DIGIT.search(term):
        replacement = _mutate_code(term, vocabulary, rng)
    else:
        options = [n for n in _SWAP_NAMES if not vocabulary.knows(n)]
        replacement = rng.choice(options) if options else None
        if replacement and term.isupper():
            replacement = replacement.upper()
    if not replacement:
        return None
    swapped = re.sub(rf"(?<![\w-]){re.escape(term)}(?![\w-])", replacement, question, count=1)
    return swapped if swapped != question else None


def _mutate_code(term: str, vocabulary: CorpusVocabulary, rng: random.Random) -> str | None:
    """A model number or figure with its digits changed into one the corpus never uses."""
    for _ in range(20):
        candidate = re.sub(r"\d", lambda _: str(rng.randint(0, 9)), term)
        if candidate != term and not vocabulary.knows(candidate):
            return candidate
    return None
