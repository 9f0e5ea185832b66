"""Reading the evidence: which line answers the question, and how likely a refusal is.

The tuned student reads the evidence block and replies with the line it relies on
(``Quote: ...``) or with the recipe's refusal, the format it was trained on
(``prompting.evidence_question``). A backend that scores choices gives the probability of
each line and of the refusal directly; the line that answers is the one the selector's and
the model's scores, mixed by the reader weight, rank first. A backend that can only
generate writes its quote, which must then pass ``verify.match_quote``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from domainkit.answer.evidence import Evidence, EvidenceSentence
from domainkit.answer.refusal import is_refusal
from domainkit.answer.verify import match_quote
from domainkit.prompting import evidence_question, parse_quote, quote_reply


@dataclass(frozen=True)
class Reading:
    """What one reading of the evidence decided.

    Attributes:
        line: The line the answer opens with; None when no line was matched.
        refusal: The model's probability of refusing (1.0 or 0.0 for a generated reply),
            None when the model was not asked.
        quote: The model's own quote (its best line, or its generated reply).
    """

    line: EvidenceSentence | None
    refusal: float | None
    quote: str | None


def prompt_text(question: str, evidence: Evidence) -> str:
    """The user turn the model reads."""
    return evidence_question(question, evidence.block())


def choices(evidence: Evidence, refusal: str) -> list[str]:
    """The replies to score: a quote of each evidence line, then the refusal."""
    return [quote_reply(s.text) for s in evidence.sentences] + [refusal]


def unread(evidence: Evidence) -> Reading:
    """No model: the selector's best line."""
    return Reading(evidence.best(), None, None)


def read_scores(evidence: Evidence, scores: list[float], reader_weight: float) -> Reading:
    """From the log-probabilities of ``choices``: the line that wins the selector's and the
    model's scores combined by ``reader_weight``, and the refusal's share of the
    probability over all choices; the model's quote is its own best line."""
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    refusal = weights[-1] / sum(weights)
    lines = softmax(scores[:-1])
    w = reader_weight
    # A lead-in ("The options are:", a table's header row) introduces facts without stating
    # them: never the answer's main line (``Evidence.best``).
    combined = [
        (s, (1 - w) * s.score + w * p) for s, p in zip(evidence.sentences, lines, strict=True)
    ]
    stated = [c for c in combined if not c[0].lead_in] or combined
    own = evidence.sentences[lines.index(max(lines))]
    pick = max(stated, key=lambda c: c[1])[0]
    return Reading(pick, round(refusal, 4), quote_reply(own.text))


def read_reply(evidence: Evidence, reply: str, refusal_wording: str) -> Reading:
    """From a generated reply: the evidence line its quote reproduces (``verify``), and a
    refusal as probability 1."""
    quoted = parse_quote(reply)
    refused = quoted is None and is_refusal(reply, refusal_wording)
    matched = match_quote(quoted, evidence)
    quote = quote_reply(matched.text) if matched is not None else reply or None
    return Reading(matched, 1.0 if refused else 0.0, quote)


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]
