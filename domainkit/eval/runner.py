"""``domainkit eval``: what tuning and retrieval each bring, as in the RAFT paper's table.

Conditions, each on the hand-written ``eval.yaml`` and on the synth validation split:
base closed-book, base + retrieval, tuned closed-book, tuned + retrieval (``rag``) and the
tuned model under the runtime policy (``auto``). The policy's thresholds are first
calibrated on the validation split (never on eval.yaml) and written to
``BUILD/runtime/calibration.json``, where the runtime reads them. A small
general-knowledge set, asked closed-book of base and tuned, shows forgetting.

All answers are greedy, generated in batches through the runtime's own ``Assistant``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from domainkit.config.evalset import load_eval_set
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.eval import metrics as m
from domainkit.runtime.assistant import Answer, Assistant, adapter_path, calibration_path
from domainkit.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

# A few facts any small instruction model knows; a tuned model that loses them has forgotten.
GENERAL = [
    ("What is the capital of France?", "Paris"),
    ("How many days are there in a week?", "7 seven"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("What is the chemical symbol for water?", "H2O"),
    ("How many legs does a spider have?", "8 eight"),
    ("What is 12 plus 30?", "42"),
    ("Which ocean lies between Europe and North America?", "Atlantic"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What is the freezing point of water in degrees Celsius?", "0 zero"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What gas do plants take in from the air for photosynthesis?", "carbon dioxide CO2"),
]


@dataclass
class Item:
    question: str
    reference: str | None  # None for unanswerable questions
    answerable: bool
    source: str | None = None  # document path relative to docs/


@dataclass
class Condition:
    name: str
    tuned: bool
    policy: str


CONDITIONS = [
    Condition("base closed-book", False, "closed"),
    Condition("base + retrieval", False, "rag"),
    Condition("tuned closed-book", True, "closed"),
    Condition("tuned + retrieval", True, "rag"),
    Condition("tuned, runtime policy", True, "auto"),
]


@dataclass
class EvalReport:
    path: Path
    conditions: dict[str, dict[str, dict]]  # set -> condition -> metrics
    retrieval: dict
    calibration: dict
    general: dict
    headline: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def eval_dir(domain: Domain) -> Path:
    return domain.build_dir / "eval"


def eval_items(domain: Domain, limit: int | None = None) -> list[Item]:
    docs_prefix = f"{domain.config.docs_dir.rstrip('/')}/"
    items = []
    for q in load_eval_set(domain.eval_path).questions:
        source = (
            q.source[len(docs_prefix) :]
            if q.source and q.source.startswith(docs_prefix)
            else q.source
        )
        items.append(Item(q.question, q.answer if q.answerable else None, q.answerable, source))
    return _spread(items, limit)


def validation_items(domain: Domain, limit: int | None = None) -> list[Item]:
    """Questions of the held-out synth split: closed-book Q&A, RAFT questions whose gold
    passage was present, and refusals (unanswerable)."""
    from domainkit.synth import dataset, synth_dir

    try:
        samples = dataset.load_samples(synth_dir(domain)).get("validation", [])
    except FileNotFoundError:
        return []
    items = []
    for s in samples:
        user, reply = s.messages[-2]["content"], s.messages[-1]["content"]
        if s.generator == "qa":
            items.append(Item(user, reply, True, s.source))
        elif s.generator == "raft" and s.meta.get("gold_present", True):
            question = user.split("\nQuestion: ", 1)[-1].split("\n\n", 1)[0]
            items.append(Item(question, reply, True, s.source))
        elif s.generator == "refusal":
            items.append(Item(user, None, False, None))
    return _spread(items, limit)


def _spread(items: list[Item], limit: int | None) -> list[Item]:
    """At most ``limit`` items, answerable and unanswerable in their original proportion."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


# -- running -----------------------------------------------------------------------------------


class _MemoRetriever:
    """The retriever with each query's results kept: every condition, the prompt-length
    ordering and calibration ask the same questions, and each is embedded once."""

    def __init__(self, retriever):
        self.retriever, self.settings = retriever, retriever.settings
        self._hits: dict[tuple, list] = {}

    def search(self, query: str, k: int | None = None, mode=None) -> list:
        key = (query, k, mode)
        if key not in self._hits:
            self._hits[key] = self.retriever.search(query, k=k, mode=mode)
        return self._hits[key]


def _answer_all(
    assistant: Assistant, items: list[Item], policy: str, max_tokens: int, bar=None
) -> tuple[list[Answer], float]:
    """Every item answered, queued at once so the scheduler batches them, longest prompts
    first so each batch holds prompts of similar length (little padding). The wall time
    per answer is the batched cost a deployment would see under load."""
    started = time.perf_counter()
    order = sorted(range(len(items)), key=lambda i: -_prompt_chars(assistant, items[i], policy))
    pending = {
        i: assistant.submit(
            [{"role": "user", "content": items[i].question}],
            policy=policy,
            max_tokens=max_tokens,
            temperature=0.0,
        )
        for i in order
    }
    answers = {}
    for i in order:
        answers[i] = pending[i].result()
        if bar is not None:
            bar.update(1)
    return [answers[i] for i in range(len(items))], (time.perf_counter() - started) / max(
        1, len(items)
    )


def _prompt_chars(assistant: Assistant, item: Item, policy: str) -> int:
    if policy == "closed" or assistant.retriever is None:
        return len(item.question)
    return len(item.question) + sum(
        len(h.chunk.text) for h in assistant.retriever.search(item.question)
    )


JUDGE_SYSTEM = (
    "You check answers against a reference answer. Reply with yes or no only: yes when the "
    "candidate says what the reference says, no otherwise."
)


def make_judge(domain: Domain):
    """The synth teacher as judge, or None (see ``eval.judge``)."""
    mode = domain.config.eval.judge
    teacher = domain.config.synth.teacher
    if mode == "off" or (mode == "auto" and teacher.backend == "hf"):
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


def score(items: list[Item], answers: list[Answer], refusal: str, seconds: float) -> dict:
    """Metrics of one condition on one question set."""
    answerable = [(i, a) for i, a in zip(items, answers, strict=True) if i.answerable]
    unanswerable = [a for i, a in zip(items, answers, strict=True) if not i.answerable]
    refused = [m.is_refusal(a.text, refusal) or a.route == "refusal" for _, a in answerable]
    with_passages = [a for a in answers if a.sources and a.route != "refusal"]
    with_passages = [a for a in with_passages if not m.is_refusal(a.text, refusal)]

    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else None

    routes: dict[str, int] = {}
    for a in answers:
        routes[a.route] = routes.get(a.route, 0) + 1
    return {
        "questions": len(items),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "accuracy": mean(m.is_correct(a.text, i.reference, refusal) for i, a in answerable),
        "token_f1": mean(m.token_f1(a.text, i.reference) for i, a in answerable),
        "key_facts": mean(m.key_fact_recall(a.text, i.reference) for i, a in answerable),
        "refusal_accuracy": mean(
            m.is_refusal(a.text, refusal) or a.route == "refusal" for a in unanswerable
        ),
        "false_refusals": mean(refused),
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


def calibrate(
    best_scores: list[float], answerable: list[bool], confidences: list[float], correct: list[bool]
) -> dict:
    """Thresholds that decide best on the validation split.

    relevance: the best passage's cosine similarity separating answerable questions from
    unanswerable ones. confidence: the closed-book confidence above which answering beats
    refusing (a correct answer is kept, a wrong one refused).
    """

    def best_cut(values: list[float], positive: list[bool]) -> tuple[float, float]:
        candidates = sorted(set(values)) + [max(values) + 1e-6]
        scored = [
            (sum((v >= t) == p for v, p in zip(values, positive, strict=True)) / len(values), t)
            for t in candidates
        ]
        accuracy = max(s for s, _ in scored)
        ties = [t for s, t in scored if s == accuracy]
        return round(ties[len(ties) // 2], 4), round(accuracy, 4)

    out: dict = {"validation_questions": len(best_scores)}
    if best_scores and any(answerable) and not all(answerable):
        out["relevance_threshold"], out["relevance_accuracy"] = best_cut(best_scores, answerable)
    if confidences:
        threshold, accuracy = best_cut(confidences, correct)
        out["confidence_threshold"] = min(1.0, threshold)
        out["confidence_accuracy"] = accuracy
        out["closed_book_correct"] = sum(correct)
    return out


def run_eval(domain: Domain, *, limit: int | None = None, progress: bool = True) -> EvalReport:
    """Evaluate the domain's models under every condition and write the report."""
    from domainkit.eval.report import write_report
    from domainkit.retrieval import open_retriever

    started = time.perf_counter()
    # Greedy, local and batched: base and tuned are compared on this machine's models.
    settings = domain.config.runtime.model_copy(
        update={"temperature": 0.0, "backend": "local", "max_batch": 16}
    )
    max_tokens = domain.config.eval.max_new_tokens
    refusal = domain.config.refusal
    retriever = _MemoRetriever(open_retriever(domain))
    sets = {"eval.yaml": eval_items(domain, limit), "validation": validation_items(domain, limit)}
    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        raise DomainkitError(
            f"nothing to evaluate: {domain.eval_path} has no questions and there is no synth "
            "validation split"
        )
    general = [Item(q, a, True) for q, a in GENERAL] if domain.config.eval.general_knowledge else []
    tuned_available = (adapter_path(domain) / "adapter_config.json").is_file()
    notes = [] if tuned_available else ["no trained adapter: tuned conditions skipped"]
    conditions = [c for c in CONDITIONS if tuned_available or not c.tuned]
    total = sum(len(v) for v in sets.values()) * len(conditions) + len(general) * 2
    bar = tqdm(total=total, desc="Evaluating", unit="answer", disable=not progress)

    results: dict[str, dict[str, dict]] = {name: {} for name in sets}
    judge = make_judge(domain)
    rows: list[dict] = []
    general_scores: dict = {}
    calibration: dict = {}
    for tuned in (False, True) if tuned_available else (False,):
        assistant = Assistant.from_domain(
            domain, tuned=tuned, settings=settings, max_queue=1 << 16, retriever=retriever
        )
        model = "tuned" if tuned else "base"
        if general:
            answers, _ = _answer_all(assistant, general, "closed", max_tokens, bar)
            general_scores[model] = round(
                sum(
                    m.is_correct(a.text, i.reference) for i, a in zip(general, answers, strict=True)
                )
                / len(general),
                4,
            )
        if tuned:
            calibration = _calibrate(assistant, sets.get("validation", []), max_tokens, refusal)
            update = {
                k: calibration[k]
                for k in ("relevance_threshold", "confidence_threshold")
                if k in calibration
            }
            assistant.settings = assistant.settings.model_copy(update=update)
        for condition in (c for c in conditions if c.tuned == tuned):
            for set_name, items in sets.items():
                answers, seconds = _answer_all(assistant, items, condition.policy, max_tokens, bar)
                results[set_name][condition.name] = score(items, answers, refusal, seconds)
                results[set_name][condition.name]["judge"] = judge_accuracy(judge, items, answers)
                rows += [
                    {
                        "set": set_name,
                        "condition": condition.name,
                        "question": i.question,
                        "reference": i.reference,
                        "answer": a.text,
                        "route": a.route,
                        "confidence": a.confidence,
                        "sources": [s.document for s in a.sources],
                    }
                    for i, a in zip(items, answers, strict=True)
                ]
    bar.close()
    if calibration:
        calibration["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(calibration_path(domain), calibration)
    else:
        notes.append("thresholds not calibrated (needs a tuned model and a validation split)")
    k = domain.config.retrieval.top_k
    first_set = next(iter(sets.values()))
    report = EvalReport(
        path=eval_dir(domain),
        conditions=results,
        retrieval=retrieval_metrics(retriever, first_set, k),
        calibration=calibration,
        general=general_scores,
        headline=_headline(results),
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
    )
    write_report(domain, report, rows)
    return report


def _calibrate(assistant: Assistant, items: list[Item], max_tokens: int, refusal: str) -> dict:
    if not items:
        return {}
    best = []
    for item in items:
        hits = assistant.retriever.search(item.question)
        best.append(max((h.dense_score for h in hits), default=0.0))
    answers, _ = _answer_all(assistant, items, "closed", max_tokens)
    confidences = [a.confidence or 0.0 for a in answers]
    correct = [
        i.answerable and m.is_correct(a.text, i.reference, refusal)
        for i, a in zip(items, answers, strict=True)
    ]
    return calibrate(best, [i.answerable for i in items], confidences, correct)


def _headline(results: dict[str, dict[str, dict]]) -> str:
    table = results.get("eval.yaml") or next(iter(results.values()))
    parts = []
    for name, metrics in table.items():
        accuracy = metrics["accuracy"]
        if accuracy is not None:
            parts.append(f"{name} {accuracy:.0%}")
    best = table.get("tuned, runtime policy") or table.get("base + retrieval") or {}
    refusals = best.get("refusal_accuracy")
    tail = f"; unanswerable refused {refusals:.0%}" if refusals is not None else ""
    return "accuracy: " + ", ".join(parts) + tail


def report_dict(report: EvalReport) -> dict:
    data = asdict(report)
    data["path"] = str(report.path)
    return data


def load_report(domain: Domain) -> dict | None:
    path = eval_dir(domain) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None
