"""Checks on generated samples. Every rejection is counted by filter and kept for inspection.

A small teacher writes many unusable questions, so the filters are what make its output
usable: parse validity, length, repetition, relevance of the question to its fact (plus the
round trip, in ``questions``), near-duplicates, overlap with the eval questions, and
optional PII masking. Answers need no such checks: they are quoted from the source.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from domainkit.config.schema import SynthFilterConfig
from domainkit.retrieval.bm25 import content_terms
from domainkit.synth.parsing import repetition_ratio
from domainkit.synth.sample import Rejection, Sample
from domainkit.utils.pii import mask_pii


@dataclass
class FilterLog:
    """Rejections by filter, and how many samples had PII masked."""

    rejections: list[Rejection] = field(default_factory=list)
    pii_masked: int = 0

    def reject(
        self, filter_name: str, generator: str, chunk_id: str | None, detail: str, **content
    ) -> None:
        self.rejections.append(Rejection(filter_name, generator, chunk_id, detail, content))

    @property
    def counts(self) -> Counter:
        return Counter(r.filter for r in self.rejections)


def text_problem(text: str, settings: SynthFilterConfig, *, kind: str) -> str | None:
    """Why a question or answer is unusable on its face (length, looping), or None."""
    words = len(text.split())
    if kind == "question" and not 3 <= words <= settings.max_question_words:
        return f"question of {words} words"
    if repetition_ratio(text) > 0.3:
        return "repetitive text"
    return None


def shares_terms(a: str, b: str, minimum: int = 1) -> bool:
    terms_a, terms_b = content_terms([a, b])
    return len(set(terms_a) & set(terms_b)) >= minimum


def drop_near_duplicates(
    samples: list[Sample], embedder, threshold: float, log: FilterLog
) -> list[Sample]:
    """Keep the first of any group of samples whose questions are near-identical."""
    if not samples:
        return samples
    vectors = embedder.embed([_normalized(s.question) for s in samples])
    kept: list = []
    kept_vectors: list = []
    for sample, vector in zip(samples, vectors, strict=True):
        if kept_vectors:
            similarity = np.asarray(kept_vectors) @ vector
            best = int(similarity.argmax())
            if similarity[best] >= threshold and kept[best].generator == sample.generator:
                log.reject(
                    "near_duplicate",
                    sample.generator,
                    sample.chunk_id,
                    f"cosine {similarity[best]:.3f} with a kept sample",
                    question=sample.question,
                    kept=kept[best].question,
                )
                continue
        kept.append(sample)
        kept_vectors.append(vector)
    return kept


def decontaminate(
    samples: list[Sample], eval_questions: list[str], embedder, threshold: float, log: FilterLog
) -> list[Sample]:
    """Remove samples whose question is too close to an evaluation question."""
    if not samples or not eval_questions:
        return samples
    eval_vectors = embedder.embed(eval_questions)
    vectors = embedder.embed([s.question for s in samples])
    similarity = vectors @ eval_vectors.T
    eval_grams = [_ngrams(q) for q in eval_questions]
    kept = []
    for sample, row in zip(samples, similarity, strict=True):
        best = int(row.argmax())
        grams = _ngrams(sample.question)
        overlap = next(
            (q for q, g in zip(eval_questions, eval_grams, strict=True) if g & grams), None
        )
        if row[best] >= threshold or overlap:
            log.reject(
                "eval_overlap",
                sample.generator,
                sample.chunk_id,
                f"cosine {row[best]:.3f}" if row[best] >= threshold else "shares 6 words",
                question=sample.question,
                eval_question=overlap or eval_questions[best],
            )
            continue
        kept.append(sample)
    return kept


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _ngrams(text: str, n: int = 6) -> set[tuple[str, ...]]:
    words = _normalized(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def scrub_samples(samples: list[Sample], log: FilterLog) -> None:
    """Mask PII in every message, in place, counting the samples changed."""
    for sample in samples:
        masked = [{**m, "content": mask_pii(m["content"])} for m in sample.messages]
        if masked != sample.messages:
            sample.messages = masked
            log.pii_masked += 1
