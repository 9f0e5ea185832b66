"""Expected answer types: what kind of value a question asks for, and whether a text
states one.

Classic question answering types the answer before looking for it: "How heavy is the
Roost?" wants a weight, "What does the plan cost?" a price, "How long is the warranty?"
a duration. Evidence that is on the topic but states no value of that kind ("Power cable
(2 m)" for the weight) does not answer the question, however similar it is; this is the
commonest near miss a support corpus sees. Both halves are deliberately broad: a
question gets a type only from an unambiguous phrase ("how heavy", "in mAh"), and a
text states a type with any number in a unit of that dimension, so a misfire costs a
refusal only when the answer has no such value at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = (
    r"(?:\d[\d,.]*|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"fifteen|twenty|thirty|forty|fifty|sixty|ninety|hundred|a\s+few|several|few|many)"
)


def _amount(units: str) -> str:
    """A number followed by one of ``units`` ("2 kg", "two hours", "10-day", "5W")."""
    return rf"(?:\d[\d,.]*\s*-?\s*|\b{_NUMBER}[\s-]+)(?:{units})\b"


_TIME = (
    r"seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?|nights?|weeks?|wks?|fortnights?|"
    r"months?|years?|yrs?|decades?|(?:working|business|calendar|school)\s+days?|"
    r"(?:working|business|school)\s+weeks?|terms?|semesters?"
)
_LENGTH = (
    r"mm|cm|m|km|millimet(?:re|er)s?|centimet(?:re|er)s?|met(?:re|er)s?|kilomet(?:re|er)s?|"
    r"in|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mi"
)


@dataclass(frozen=True)
class AnswerType:
    """One kind of value: the question phrases that ask for it and the text that states it."""

    name: str
    asks: re.Pattern
    states: re.Pattern


def _type(name: str, asks: str, states: str) -> AnswerType:
    return AnswerType(name, re.compile(asks, re.IGNORECASE), re.compile(states, re.IGNORECASE))


TYPES = (
    _type(
        "weight",
        r"\bhow\s+heavy\b|\bhow\s+much\s+(?:does|do|did|will|would)\b.{0,60}\bweigh\b|"
        r"\bweight\b",
        _amount(
            r"kg|g|mg|grams?|kilos?|kilograms?|milligrams?|lbs?|pounds?|oz|ounces?|stones?|"
            r"tonnes?|tons?"
        ),
    ),
    _type(
        "length",
        r"\bhow\s+(?:far(?!\s+(?:ahead|in\s+advance|back))|tall|wide|deep|high|thick)\b|"
        r"\bwhat\s+(?:size|dimensions?|height|width|depth|length|distance)\b",
        _amount(_LENGTH) + r"|\d\s*[x×]\s*\d|\d\s*(?:\"|″|')",
    ),
    _type(
        "loudness",
        r"\bhow\s+loud\b|\bdecibels?\b|\bdba?\b",
        _amount(r"db|dba|decibels?"),
    ),
    _type(
        "charge",
        r"\bm?ah\b|\bk?wh\b|\bwatt[\s-]?hours?\b|\bbattery\s+(?:capacity|size)\b",
        _amount(r"mah|ah|wh|kwh|watt[\s-]?hours?|milliamp[\s-]?hours?"),
    ),
    _type(
        "power",
        r"\bwattage\b|\bhow\s+many\s+watts\b|\bin\s+watts\b|\bpower\s+(?:output|rating)\b",
        _amount(r"w|kw|watts?|kilowatts?"),
    ),
    _type("voltage", r"\bvoltage\b|\bvolts\b", _amount(r"v|kv|volts?")),
    _type(
        "frequency",
        r"\bfrequency\b|\b[kmg]?hz\b|\bhertz\b",
        _amount(r"hz|khz|mhz|ghz|hertz"),
    ),
    _type(
        "temperature",
        r"\bhow\s+(?:hot|cold|warm)\b|\b(?:what|which)\s+temperatures?\b|"
        r"\btemperature\s+(?:range|rating|limits?)\b|\bin\s+degrees\b|\bcelsius\b|\bfahrenheit\b",
        r"\d\s*(?:°|º|degrees?\b|deg\b|[cf]\b)",
    ),
    _type(
        "data",
        r"\bhow\s+much\s+(?:storage|memory|space|data)\b|\bgigabytes?\b|\b[kmgt]b\b",
        _amount(r"kb|mb|gb|tb|bytes?|kilobytes?|megabytes?|gigabytes?|terabytes?"),
    ),
    _type(
        "speed",
        r"\bhow\s+fast\b|\bwhat\s+speed\b|\bmph\b|\bkm/h\b|\b[mg]bps\b",
        _amount(r"mph|km/h|kph|kmh|mbps|gbps|kbps|rpm|knots?")
        + r"|\d\s*(?:mph|km/h|mbps|gbps|rpm)",
    ),
    _type(
        "percentage",
        r"\bwhat\s+(?:percentage|percent|proportion|share|fraction)\b|\bhow\s+many\s+percent\b",
        r"\d\s*(?:%|per\s*cent\b|percent\b)|\b(?:half|quarter|third|all|none)\b",
    ),
    _type(
        "price",
        r"\bhow\s+much\b.{0,60}\b(?:cost|costs|charge|charged|pay|paid|fee|price)\b|"
        r"\bwhat\b.{0,30}\b(?:price|cost|fee|fees|charge|rate)\b|\bwhat\s+does\b.{0,60}\bcost\b",
        # Any figure: currencies vary (£, Cr, credits), and "free" is a price.
        r"\d|\bfree\b|\bno\s+(?:charge|cost|fee)\b|\bnothing\b|\bwaived?\b",
    ),
    _type(
        "duration",
        r"\bhow\s+long\b|\bhow\s+many\s+(?:seconds|minutes|hours|days|weeks|months|years)\b|"
        r"\bfor\s+how\s+long\b|\bhow\s+far\s+(?:ahead|in\s+advance|back)\b|\bhow\s+much\s+notice\b",
        _amount(_TIME + "|" + _LENGTH)
        + rf"|\b(?:{_TIME})\s+\d|\b(?:immediately|instantly|overnight|indefinitely|"
        r"permanently|forever|lifetime|same\s+day|next\s+day|straight\s+away|until|as\s+long\s+as)\b",
    ),
    _type(
        "year",
        r"\b(?:what|which)\s+year\b|\bin\s+what\s+year\b",
        r"\b1\d{3}\b|\b20\d{2}\b|\d0s\b",
    ),
    _type(
        "date",
        r"\b(?:what|which)\s+(?:date|day|time)\b|\bby\s+when\b|\bwhat\s+hours\b",
        r"\d|\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekdays?|"
        r"weekends?|january|february|march|april|may|june|july|august|september|october|"
        r"november|december|noon|midnight|morning|afternoon|evening|night|daily|today|"
        r"tomorrow|always|any\s+time|anytime)\b",
    ),
    _type(
        "count",
        r"\bhow\s+many\b",
        r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
        r"thirty|hundred|thousand|million|dozen|single|both|no|none|all|every|several|"
        r"few|unlimited|once|twice)\b",
    ),
)


def expected_types(question: str) -> list[AnswerType]:
    """The kinds of value ``question`` asks for: none for most questions (yes/no, how-to,
    why), one or more for "how heavy", "what does it cost and how long does it last"."""
    return [t for t in TYPES if t.asks.search(question)]


def missing_type(question: str, text: str) -> bool:
    """Whether ``question`` asks for a kind of value and ``text`` states none of the kinds
    asked for (a multi-part question is answered in part by any of them)."""
    wanted = expected_types(question)
    return bool(wanted) and not any(t.states.search(text) for t in wanted)


# Questions whose answer is a quantity, a time or a price ("How long is the warranty?",
# "What does the family plan cost?", "When is the deadline?"): broader than the types above
# (any "when"), for ranking evidence rather than refusing. A sentence that states a figure is
# likelier to answer them.
_ASKS_FIGURE = re.compile(
    r"\b(?:how\s+(?:long|many|much|often|old|far|soon|late|early|quickly|fast|big|large|"
    r"small|high|low|heavy|tall|wide|deep|hot|cold)|what\s+(?:time|date|day|year|age|"
    r"percentage|percent|proportion|share|fee|fees|price|cost|rate|amount|number|size)|when|"
    r"by\s+what\s+date|which\s+(?:year|date|day)|costs?|price|fees?)\b",
    re.IGNORECASE,
)
FIGURE = re.compile(
    r"\d|\b(?i:one|two|three|four|five|six|seven|eight|nine|ten|twelve|"
    r"twenty|thirty|hundred|thousand|million|half|twice|once)\b"
)


def asks_for_figure(question: str) -> bool:
    """Whether the question asks for a quantity, time, date or price."""
    return bool(_ASKS_FIGURE.search(question))


# "How long", "how often", "how heavy": the adjective asks for a value of a kind; the
# sentence that answers states the value ("2 years", "weekly", "1.2 kg"), not the word. As a
# term to match, it favours lines that happen to use it ("for as long as you subscribe").
_DEGREE = re.compile(
    r"\bhow\s+(long|much|many|often|far|old|soon|big|large|small|heavy|tall|wide|fast|"
    r"quickly|early|late|high|deep|thick|loud|bright|hot|cold|warm)\b",
    re.IGNORECASE,
)


def degree_words(question: str) -> list[str]:
    """The words of a question's "how long"-style phrases that name the kind of value it
    asks for ("long" in "How long is the warranty?"), to leave out of its lexical terms."""
    return [m.group(1).lower() for m in _DEGREE.finditer(question)]
