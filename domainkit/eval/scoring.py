"""Scoring a condition's answers: right or refused, the citation check, the judge, the
table's metrics, and retrieval's hit rates."""

from __future__ import annotations

import re
import statistics

from domainkit.answer.answers import Answer
from domainkit.config.loading import Domain
from domainkit.eval import metrics as m
from domainkit.eval.items import Item

JUDGE_SYSTEM = (
    "You check answers against a reference answer. Reply with yes or no only: yes when the "
    "candidate says what the reference says, no otherwise."
)


# The teacher names of a model in this process (by default the embedded 135M model).
LOCAL_TEACHERS = ("hf", "transformers", "local")


def make_judge(domain: Domain):
    """The synth teacher as judge, or None (see ``eval.judge``)."""
    mode = domain.config.eval.judge
    teacher = domain.config.synth.teacher
    if mode == "off" or (mode == "auto" and teacher.backend.lower() in LOCAL_TEACHERS):
        return None
    from domainkit.synth.teachers.base import make_teacher

    return make_teacher(teacher)


def judge_accuracy(judge, items: list[Item], answers: list[Answer]) -> float | None:
    """Share of answerable questions the judge calls correctly answered."""
    from domainkit.synth.teachers.base import Sampling

    pairs = [(i, a) for i, a in zip(items, answers, strict=True) if i.answerable]
    if judge is None or not pairs:
        return None
    conversations = [
        [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": f"Question: {i.question}\nReference: {i.reference}\n"
                f"Candidate: {a.text}\nIs the candidate correct?",
            },
        ]
        for i, a in pairs
    ]
    replies = judge.generate(conversations, Sampling(temperature=0.0, max_new_tokens=4))
    return round(sum(r.strip().lower().startswith("yes") for r in replies) / len(pairs), 4)


def _refused(answer: Answer, refusal: str) -> bool:
    return answer.route == "refusal" or m.is_refusal(answer.text, refusal)


def answered_right(item: Item, answer: Answer, refusal: str) -> bool:
    return m.is_correct(answer.text, item.reference or "", refusal, spans=item.spans)


def _cited(answer: Answer) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d{1,3})\]", answer.text)]


def citation_correct(item: Item, answer: Answer) -> bool | None:
    """Whether the passages an answer cites hold the reference's key facts (or a gold span);
    None when it cites nothing it was given."""
    by_number = {s.number: s.text for s in answer.sources}
    cited = [by_number[n] for n in _cited(answer) if n in by_number]
    if not cited:
        return None
    return m.is_correct(" ".join(cited), item.reference or "", spans=item.spans)


def score(items: list[Item], answers: list[Answer], refusal: str, seconds: float) -> dict:
    """Metrics of one condition on one question set."""
    pairs = list(zip(items, answers, strict=True))
    answerable = [(i, a) for i, a in pairs if i.answerable]
    unanswerable = [a for i, a in pairs if not i.answerable]
    correct = [(i, a) for i, a in answerable if answered_right(i, a, refusal)]
    with_passages = [a for a in answers if a.sources and not _refused(a, refusal)]
    words = [len(a.text.split()) for _, a in answerable if not _refused(a, refusal)]
    citations = [citation_correct(i, a) for i, a in correct]

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 4) if values else None

    routes: dict[str, int] = {}
    for a in answers:
        routes[a.route] = routes.get(a.route, 0) + 1
    return {
        "questions": len(items),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "accuracy": round(len(correct) / len(answerable), 4) if answerable else None,
        "token_f1": mean(m.token_f1(a.text, i.reference or "") for i, a in answerable),
        "key_facts": mean(m.key_fact_recall(a.text, i.reference or "") for i, a in answerable),
        "refusal_accuracy": mean(_refused(a, refusal) for a in unanswerable),
        "false_refusals": mean(_refused(a, refusal) for _, a in answerable),
        "median_words": float(statistics.median(words)) if words else None,
        "citation_correct": mean(citations) if any(c is not None for c in citations) else None,
        "faithfulness": mean(m.support(a.text, [s.text for s in a.sources]) for a in with_passages),
        "seconds_per_answer": round(seconds, 3),
        "routes": routes,
    }


def retrieval_metrics(retriever, items: list[Item], k: int) -> dict:
    """Source-document hit@1, hit@k and MRR over answerable questions with a source."""
    ranks = []
    for item in items:
        if not (item.answerable and item.source):
            continue
        docs = []
        for hit in retriever.search(item.question, k=max(k, 10)):
            if hit.chunk.source not in docs:
                docs.append(hit.chunk.source)
        ranks.append(docs.index(item.source) + 1 if item.source in docs else None)
    n = len(ranks)
    if not n:
        return {"questions": 0}
    return {
        "questions": n,
        "hit@1": round(sum(r == 1 for r in ranks) / n, 4),
        f"hit@{k}": round(sum(r is not None and r <= k for r in ranks) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }
