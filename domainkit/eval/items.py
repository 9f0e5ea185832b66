"""The questions eval asks: eval.yaml, the domain's validation.yaml and the held-out synth
split, each as an ``Item`` with its reference (None when the documents do not answer it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from domainkit.config.evalset import load_eval_set
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError


@dataclass
class Item:
    question: str
    reference: str | None  # None for unanswerable questions
    answerable: bool
    source: str | None = None  # document path relative to docs/
    spans: list[str] = field(default_factory=list)  # accepted short answers, if any
    chunk_id: str | None = None  # the passage it was written from (synth questions)
    synthetic: bool = False  # written by synth, not by a user (calibration trusts it less)
    line: str | None = None  # the line a reviewer marked as the answer


def eval_items(domain: Domain, limit: int | None = None, path: Path | None = None) -> list[Item]:
    """The questions of eval.yaml (or another file in its format)."""
    docs_prefix = f"{domain.config.docs_dir.rstrip('/')}/"
    items = []
    for q in load_eval_set(path or domain.eval_path).current():
        source = (
            q.source[len(docs_prefix) :]
            if q.source and q.source.startswith(docs_prefix)
            else q.source
        )
        reference = q.answer if q.answerable else None
        item = Item(q.question, reference, q.answerable, source, list(q.spans), line=q.line)
        items.append(item)
    return _spread(items, limit)


def validation_items(domain: Domain, limit: int | None = None) -> list[Item]:
    """Validation questions: the domain's own validation.yaml, when it has one, and the
    held-out synth split: RAFT questions asked with their passage (answerable; the
    reference is the fact) and near-miss and refusal questions (unanswerable). Gold-absent
    RAFT samples are left out: with the whole index their question is answerable."""
    from domainkit.synth import dataset

    items = (
        eval_items(domain, path=domain.validation_path) if domain.validation_path.is_file() else []
    )
    try:
        samples = dataset.load_samples(domain.layout.synth).get("validation", [])
    except (FileNotFoundError, DomainkitError):  # no synth dataset (yet)
        samples = []
    for s in samples:
        question = s.meta.get("question") or s.question
        if s.meta.get("question_origin") == "template" and s.generator != "refusal":
            continue  # keyword questions are easier than users' own: not for calibration
        if s.generator == "raft" and s.meta.get("gold_present"):
            fact = s.meta.get("fact") or s.answers[-1]
            items.append(Item(question, fact, True, s.source, chunk_id=s.chunk_id, synthetic=True))
        elif s.generator in ("near_miss", "refusal"):
            items.append(Item(question, None, False, None, synthetic=True))
    return _spread(items, limit)


def with_passages(items: list[Item], chunks) -> list[Item]:
    """Items whose reviewed line is found in ``chunks`` get its passage as their source
    passage (gold-absent twins hide it); the rest are returned as they were."""
    from dataclasses import replace

    from domainkit.ingest.lines import LineRef

    out = []
    for item in items:
        found = LineRef.parse(item.line).find(chunks) if item.line and not item.chunk_id else None
        out.append(replace(item, chunk_id=found[0].id) if found else item)
    return out


def _spread(items: list[Item], limit: int | None) -> list[Item]:
    """At most ``limit`` items, answerable and unanswerable in their original proportion."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


# -- running -----------------------------------------------------------------------------------
