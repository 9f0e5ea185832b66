"""The answerability gate: answer from the evidence, or refuse.

No single signal separates answerable questions from near misses: the best evidence
sentence's similarity keeps most answerable questions but lets through questions that
share a topic with the documents without being answered by them ("How heavy is the
Roost?"). So the gate combines several signals in a logistic model:

- ``dense``: cosine similarity of the question and its best evidence sentence;
- ``coverage``: IDF-weighted share of the question's terms found in that sentence;
- ``unknown``: how many of the question's names, model numbers and figures the corpus
  never mentions (a question about the "Falcon" speaker, in a corpus without one);
- ``novel``: the share of the question's content terms the corpus never uses (decibels,
  mAh, halal: a detail the documents do not give);
- ``model_refusal``: the tuned model's own probability of refusing, read from its first
  answer token (it was trained on gold-absent evidence and near-miss questions);
- ``missing_type``: the question asks for a kind of value (a weight, a price, a duration)
  and the answer states none (``answer.answer_types``): "How heavy is the Roost?"
  answered with "Power cable (2 m)".

``eval.gate_fit.calibrate`` fits the weights (keeping the hand-set prior's signs) and the
decision threshold on a validation set that holds unanswerable questions (never on the eval
set). Before calibration, and for a domain whose validation questions are too few, the gate
is ``prior_gate``: fitted on the shipped corpora's own hand-written questions
(``bench/fit_prior.py`` writes ``prior.json``), the hand-set gate when that is missing.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from domainkit.answer.answer_types import missing_type
from domainkit.answer.evidence import Evidence
from domainkit.retrieval.terms import CorpusVocabulary

FEATURES = ("dense", "coverage", "unknown", "novel", "model_refusal", "missing_type")
# The gate before calibration, and the prior calibration shrinks towards: answer from
# evidence about as similar as a paraphrase (cosine ~0.5), less so when the question names
# or asks about things the corpus never mentions, or the model would rather refuse; an
# answer without the kind of value asked for is refused unless its evidence is near-certain.
PRIOR_WEIGHTS = {
    "dense": 10.0,
    "coverage": 1.0,
    "unknown": -2.0,
    "novel": -4.0,
    "model_refusal": -1.0,
    "missing_type": -4.0,
}
PRIOR_BIAS = -4.7


@dataclass
class GateFeatures:
    """What the gate sees of one question."""

    dense: float
    coverage: float
    unknown: int
    novel: float
    model_refusal: float | None = None  # None when the backend gives no probabilities
    missing_type: int = 0

    def vector(self) -> np.ndarray:
        refusal = 0.5 if self.model_refusal is None else self.model_refusal
        values = [
            self.dense,
            self.coverage,
            min(self.unknown, 2),
            self.novel,
            refusal,
            self.missing_type,
        ]
        return np.array(values, dtype=float)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Gate:
    """A logistic model of P(answerable | features) and the cut above which to answer.

    Attributes:
        weights: One weight per name in ``FEATURES``.
        bias: Intercept.
        threshold: Answer when P(answerable) reaches it.
        calibrated: Whether weights and threshold were fitted on a validation set.
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(PRIOR_WEIGHTS))
    bias: float = PRIOR_BIAS
    threshold: float = 0.5
    calibrated: bool = False

    def probability(self, features: GateFeatures) -> float:
        w = np.array([self.weights.get(name, 0.0) for name in FEATURES])
        return sigmoid(float(features.vector() @ w) + self.bias)

    def answers(self, features: GateFeatures) -> bool:
        return self.probability(features) >= self.threshold

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Gate:
        return cls(
            weights={k: float(v) for k, v in data["weights"].items()},
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
            calibrated=bool(data.get("calibrated", True)),
        )


def reading_counts(reader_weight: float, weights: dict[str, float]) -> bool:
    """Whether the model's reading of the evidence can change an answer: its choice of line
    has weight, or the gate weighs its probability of refusing."""
    return reader_weight > 0 or weights.get("model_refusal", 0.0) != 0.0


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(-60.0, min(60.0, x))))


def features_of(
    evidence: Evidence, vocabulary: CorpusVocabulary, answer: str, model_refusal: float | None
) -> GateFeatures:
    """What the gate sees of a question: its evidence's best similarity and coverage, the
    names and terms the corpus never uses, the model's refusal probability and whether the
    answer states the kind of value asked for."""
    question = evidence.question
    return GateFeatures(
        dense=evidence.best_dense,
        coverage=evidence.best_coverage,
        unknown=len(vocabulary.unknown_specific_terms(question)),
        novel=round(vocabulary.novel_share(question), 4),
        model_refusal=model_refusal,
        missing_type=int(missing_type(question, answer)),
    )


PRIOR_FILE = Path(__file__).with_name("prior.json")


def prior_gate(docs: str | None = None) -> Gate:
    """The gate before calibration: the fit on the shipped corpora's questions; for one of
    those corpora (``docs``, its documents' fingerprint, ``retrieval.store.docs_fingerprint``)
    the fit that left it out, so no corpus is answered by a gate fitted on its own questions."""
    return prior_fit(docs)[1]


def prior_fit(docs: str | None = None) -> tuple[str, Gate]:
    """``prior_gate`` and the name of the fit it is (``all``, ``without:legal``, or
    ``hand-set`` without a fitted prior)."""
    fits = _fitted_priors()
    name = next((n for n, f in fits.items() if docs and docs in f.get("excludes", [])), "all")
    fit = fits.get(name)
    if fit is None:
        return "hand-set", Gate()
    return name, Gate(dict(fit["weights"]), float(fit["bias"]), float(fit["threshold"]), False)


@functools.lru_cache(maxsize=1)
def _fitted_priors() -> dict[str, dict]:
    if not PRIOR_FILE.is_file():
        return {}
    return json.loads(PRIOR_FILE.read_text(encoding="utf-8")).get("fits", {})
