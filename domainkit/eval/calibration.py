"""Calibrating the runtime on validation questions: the reader weight, then the gate.

Synthetic unanswerable questions are easy to tell apart (a swapped name, an everyday
question), while real ones are topical: the documents discuss the product, not the detail
asked. So each answerable validation question with a known source passage also gets a
*gold-absent twin*: the same question, asked while its passage (and any passage that
restates its fact) is hidden from retrieval. The twin's evidence is as close as evidence
gets without the answer, which is what the gate must learn to refuse. A twin whose
answer is still right (another passage states the fact in words ``restates`` missed) is not
unanswerable at all and is left out of the fit.
"""

from __future__ import annotations

import math
from dataclasses import replace

from domainkit.answer.assistant import Calibration
from domainkit.answer.gate import FEATURES, Gate, GateFeatures
from domainkit.eval.gate_fit import calibrate
from domainkit.retrieval.terms import restates

# Reader weights tried: 0 is the evidence selector's best line alone, 1 the model's choice.
READER_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Fewer answerable validation questions than this and the reader weight keeps its default:
# on four questions one lucky pick decides it.
MIN_READER_QUESTIONS = 10
# The model's reading replaces the selector's line only when it wins on validation by more
# than chance would (one-sided sign test over the questions the two disagree on).
READER_SIGNIFICANCE = 0.05
# How far down the results a restating passage is looked for.
RESTATING_DEPTH = 20


class HidingRetriever:
    """A retriever that leaves given passages out of listed questions' results."""

    def __init__(self, retriever, hidden: dict[str, frozenset[str]]):
        self.retriever, self.hidden = retriever, hidden
        self.settings, self.embedder = retriever.settings, retriever.embedder
        self.vocabulary = retriever.vocabulary

    def search(self, query: str, k: int | None = None, mode=None) -> list:
        k = k or self.settings.top_k
        hide = self.hidden.get(query, frozenset())
        hits = self.retriever.search(query, k=k + len(hide) + RESTATING_DEPTH, mode=mode)
        return [h for h in hits if h.chunk.id not in hide][:k]


def gold_absent_twins(items, retriever) -> tuple[list, dict[str, frozenset[str]]]:
    """Unanswerable twins of the answerable items that know their source passage, and the
    passages to hide for each (the source and those restating its fact)."""
    twins, hidden = [], {}
    for item in items:
        if not (item.answerable and item.chunk_id and item.reference):
            continue
        hits = retriever.search(item.question, k=RESTATING_DEPTH)
        hide = {item.chunk_id} | {
            h.chunk.id for h in hits if restates(item.reference, h.chunk.text, retriever.vocabulary)
        }
        hidden[item.question] = frozenset(hide)
        twins.append(replace(item, reference=None, answerable=False, spans=[]))
    return twins, hidden


def calibrate_assistant(
    assistant,
    answers,
    items,
    twin_answers,
    twins,
    is_correct,
    max_false_refusals=None,
    prior: Gate | None = None,
) -> tuple[Calibration, dict]:
    """Fit the reader weight on the answerable items, then the gate on every item and
    twin.

    Args:
        assistant: The tuned assistant; calibration tries its answers again under other
            reader weights and gates with ``with_parts``, never changing it.
        answers: Its ``rag`` answers to ``items``.
        twin_answers: Its ``rag`` answers to the gold-absent ``twins``.
        is_correct: ``(item, answer) -> bool``.
        max_false_refusals: The gate's budget of refused answerable questions (``calibrate``).
        prior: The gate before calibration: what the fit shrinks towards, and what stays
            when there are too few questions to fit (default: the hand-set gate).

    Returns:
        The calibration (gate and reader weight) and a report of how it was fitted.
    """
    answerable = [(i, a) for i, a in zip(items, answers, strict=True) if i.answerable]
    accuracy, notes = {}, []
    weight = assistant.reader_weight
    if len(answerable) >= MIN_READER_QUESTIONS:
        right_at: dict[float, list[bool]] = {}
        for w in READER_WEIGHTS:
            trial = assistant.with_parts(reader_weight=w)
            right_at[w] = [is_correct(i, trial.recheck(a, gated=False)) for i, a in answerable]
            accuracy[w] = round(sum(right_at[w]) / len(right_at[w]), 4)
        # The lowest of the best weights: the selector needs no model and is cheaper.
        weight = max(accuracy, key=lambda w: (accuracy[w], -w))
        gained, lost = _discordant(right_at[weight], right_at[READER_WEIGHTS[0]])
        if weight != READER_WEIGHTS[0] and _sign_test(gained, lost) > READER_SIGNIFICANCE:
            notes.append(
                f"the model's reading (weight {weight}) got {gained} questions right that the "
                f"selector got wrong and {lost} the other way: not enough to tell from chance "
                f"(sign test p > {READER_SIGNIFICANCE}), so the selector's line is used"
            )
            weight = READER_WEIGHTS[0]
    else:
        notes.append(
            f"the reader weight was not calibrated ({len(answerable)} answerable validation "
            f"questions, {MIN_READER_QUESTIONS} needed); {weight} is used"
        )
    weighted = assistant.with_parts(reader_weight=weight)
    # A twin answered right anyway is answerable: its fact is restated elsewhere.
    # Each answer made once with the calibrated reader weight, ungated.
    answers = [weighted.recheck(a, gated=False) for a in answers]
    twin_answers = [weighted.recheck(a, gated=False) for a in twin_answers]
    originals = {i.question: i for i in items if i.answerable}
    unanswered = [
        (t, a)
        for t, a in zip(twins, twin_answers, strict=True)
        if not is_correct(originals[t.question], a)
    ]
    pairs = list(zip(items, answers, strict=True)) + unanswered
    # An answer without evidence has no features: the runtime refuses it anyway.
    pairs = [(i, a) for i, a in pairs if a.gate is not None]
    features = [_features(a) for _, a in pairs]
    out = {
        "validation_questions": len(items),
        "gold_absent_twins": len(twins),
        "twins_still_answered": len(twins) - len(unanswered),
        "reader_weight": weight,
        "reader_accuracy": {str(w): a for w, a in accuracy.items()},
    }
    gate = prior or Gate()  # unless the fit below replaces it
    try:
        # The false-refusal budget protects users' right answers (``calibrate``).
        right = [i.answerable and is_correct(i, a) for i, a in pairs]
        labels = [i.answerable for i, _ in pairs]
        synthetic = [i.synthetic for i, _ in pairs]
        gate, fit = calibrate(
            features, labels, max_false_refusals, right=right, synthetic=synthetic, prior=prior
        )
        out |= {"gate": gate.to_dict(), **fit}
    except ValueError as e:
        notes.append(f"the gate was not calibrated ({e}); the prior gate is used")
    out |= {"note": "; ".join(notes)} if notes else {}
    return Calibration(gate, weight), out


def _discordant(trial: list[bool], base: list[bool]) -> tuple[int, int]:
    """Questions ``trial`` gets right and ``base`` wrong, and the other way round."""
    pairs = list(zip(trial, base, strict=True))
    return sum(t and not b for t, b in pairs), sum(b and not t for t, b in pairs)


def _sign_test(gained: int, lost: int) -> float:
    """One-sided exact sign test: the chance of ``gained`` or more of the discordant
    questions going the trial's way if it were no better."""
    n = gained + lost
    return sum(math.comb(n, k) for k in range(gained, n + 1)) / 2**n if n else 1.0


def _features(answer) -> GateFeatures:
    return GateFeatures(**{k: answer.gate[k] for k in FEATURES})
