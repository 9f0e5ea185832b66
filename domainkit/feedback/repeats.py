"""Building the answers to repeats (``answer.memory``) from the reviewed questions.

Each reviewed question of ``validation.yaml`` whose verdict names a line (or says the
documents do not answer it) becomes a memory entry, its line found again in the current
index; a line the documents no longer hold as it was makes the review stale, and it is left
out (``domainkit review`` lists it). The similarity a repeat needs is calibrated on
questions that must *not* match: questions about different facts of the same passage
(synth's), and reviewed questions with different verdicts (users'), which name the same
things. The cut is the one that lets through at most ``FALSE_MATCH`` of pairs like them (a
normal prediction bound on their similarities: with a few dozen pairs, the empirical tail
quantile is one or two of them).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field, replace

import numpy as np

from domainkit.answer.memory import DEFAULT_THRESHOLD, Reviewed, ReviewedAnswers, same_things
from domainkit.config.loading import Domain
from domainkit.feedback.review import reviewed_questions
from domainkit.feedback.samples import reviewed_samples
from domainkit.ingest.lines import LineRef
from domainkit.utils.atomic import atomic_write_jsonl
from domainkit.utils.stats import prediction_bound

log = logging.getLogger(__name__)

# Share of must-not-match question pairs a repeat's cut may let through.
FALSE_MATCH = 0.02
# Fewer must-not-match pairs than this and the default cut stands.
MIN_PAIRS = 30
# The calibrated cut stays within these: below, a question is about as close to another on
# the same topic (all-MiniLM-L6-v2's scale); above, hardly a rewording matches.
BOUNDS = (0.70, 0.95)


@dataclass
class RepeatsReport:
    """What the reviews stage built."""

    entries: int = 0
    answers: int = 0
    refusals: int = 0
    stale: list[str] = field(default_factory=list)
    text_only: int = 0
    threshold: float = DEFAULT_THRESHOLD
    calibration: str = ""
    samples: int = 0

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def build_repeats(domain: Domain, retriever) -> RepeatsReport:
    """Write ``BUILD/runtime/reviewed.json`` from ``validation.yaml``'s reviewed questions."""
    report = RepeatsReport()
    chunks = list(retriever.index.chunks)
    entries: list[Reviewed] = []
    for q in reviewed_questions(domain):
        entry = _entry(q, chunks, report)
        if entry is not None:
            dense, lines = _evidence(domain, retriever, entry.question)
            seen = lines if entry.verdict == "not_in_docs" else []
            entries.append(replace(entry, dense=dense, seen=seen))
    vectors = (
        retriever.embedder.embed([e.question for e in entries])
        if entries
        else np.zeros((0, 1), dtype=np.float32)
    )
    report.threshold, report.calibration = _threshold(domain, retriever, entries, vectors)
    report.entries = len(entries)
    report.answers = sum(e.verdict == "line" for e in entries)
    report.refusals = len(entries) - report.answers
    ReviewedAnswers(entries, vectors, report.threshold).save(domain.layout.reviewed)
    samples = reviewed_samples(domain, retriever, entries)
    atomic_write_jsonl(domain.layout.reviewed_samples, (s.to_row() for s in samples))
    report.samples = len(samples)
    return report


def _entry(question: dict, chunks, report: RepeatsReport) -> Reviewed | None:
    if not question.get("answerable", True):
        return Reviewed(question["question"], "not_in_docs")
    line = question.get("line")
    if not line:
        report.text_only += 1  # an answer in the reviewer's words: calibration only
        return None
    lines = question.get("lines") or [line]
    found = [LineRef.parse(x).find(chunks) for x in lines]
    if any(f is None for f in found):
        report.stale.append(line)
        return None
    passages = {f[0].id: f[0].to_dict() for f in found if f is not None}
    return Reviewed(question["question"], "line", line, lines, list(passages.values()))


def _evidence(domain: Domain, retriever, question: str) -> tuple[float | None, list[str]]:
    """The question's best evidence similarity and its evidence lines' ids, as the runtime
    would find them."""
    from domainkit.answer.evidence import EvidenceSelector

    hits = retriever.search(question, k=domain.config.evidence.passages)
    selector = EvidenceSelector(retriever.embedder, retriever.vocabulary, domain.config.evidence)
    evidence = selector.select(question, [h.chunk for h in hits])
    if not evidence.sentences:
        return None, []
    return round(evidence.best_dense, 4), [s.id for s in evidence.sentences]


def _threshold(domain: Domain, retriever, entries, vectors) -> tuple[float, str]:
    """The cut that lets through at most ``FALSE_MATCH`` of must-not-match pairs like these."""
    similarities = _different_facts(domain, retriever)
    for i, j in itertools.combinations(range(len(entries)), 2):
        a, b = entries[i], entries[j]
        if (a.verdict, a.line) != (b.verdict, b.line) and same_things(a.question, b.question):
            similarities.append(float(vectors[i] @ vectors[j]))
    return repeat_cut(similarities)


def repeat_cut(similarities: list[float]) -> tuple[float, str]:
    """The cut for must-not-match pairs of these similarities, and how it was found."""
    if len(similarities) < MIN_PAIRS:
        return DEFAULT_THRESHOLD, f"{len(similarities)} pairs to calibrate on: the default cut"
    bound = prediction_bound(similarities, 1 - FALSE_MATCH)
    cut = max(similarities) if bound is None else bound
    bounded = min(max(cut, BOUNDS[0]), BOUNDS[1])
    return round(bounded, 4), (
        f"{len(similarities)} pairs of questions that must not match; "
        f"{1 - FALSE_MATCH:.0%} of pairs like them fall below {cut:.3f}"
        + (f", kept within {BOUNDS}" if bounded != cut else "")
    )


def _different_facts(domain: Domain, retriever) -> list[float]:
    """Similarities of synth's questions about different facts of one passage that name
    the same things."""
    from domainkit.synth import dataset

    try:
        splits = dataset.load_samples(domain.layout.synth)
    except Exception:  # noqa: BLE001 - no synth data yet: nothing to calibrate on
        return []
    by_chunk: dict[str, dict[str, str]] = {}
    for sample in splits.get("train", []) + splits.get("validation", []):
        question, fact = sample.meta.get("question"), sample.meta.get("fact")
        if sample.chunk_id and question and fact:
            by_chunk.setdefault(sample.chunk_id, {})[question] = fact
    pairs = [
        (a, b)
        for questions in by_chunk.values()
        for a, b in itertools.combinations(sorted(questions), 2)
        if questions[a] != questions[b] and same_things(a, b)
    ]
    if not pairs:
        return []
    texts = sorted({q for pair in pairs for q in pair})
    index = {q: i for i, q in enumerate(texts)}
    vectors = retriever.embedder.embed(texts)
    return [float(vectors[index[a]] @ vectors[index[b]]) for a, b in pairs]
