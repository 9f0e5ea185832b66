"""``domainkit eval``: what tuning, retrieval and the runtime's checks each bring.

Conditions, each on the hand-written ``eval.yaml`` and on the validation questions (the
synth validation split, plus a domain's own ``validation.yaml`` when it has one):

- base closed-book, and *naive RAG*: the base model given the top passages whole with a
  plain "answer from the context" prompt, what a LangChain or LlamaIndex quick start gives;
- *evidence only*: no model, the selected evidence's best sentence (the runtime's fallback);
- tuned closed-book, tuned + evidence (the ``rag`` policy: quote checked, no gate) and the
  tuned model under the runtime policy (``auto``: the gate, then the checked quote).

The gate is calibrated on the validation questions only (never on eval.yaml) and written
to ``BUILD/runtime/calibration.json``, where the runtime reads it. ``auto`` differs from
``rag`` only by the gate, so its answers are ``rag``'s with the gate applied (no second
generation). A small general-knowledge set, asked closed-book of base and tuned, shows
forgetting. All answers are greedy, generated in batches through the runtime's own
``Assistant``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from domainkit.answer.answers import Answer
from domainkit.answer.assistant import Assistant, load_backend, prior_of
from domainkit.config.layout import adapter_config
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.eval.items import Item, eval_items, validation_items, with_passages
from domainkit.eval.resume import ResumingBackend, model_id, resuming
from domainkit.eval.scoring import (
    answered_right,
    judge_accuracy,
    make_judge,
    retrieval_metrics,
    score,
)
from domainkit.synth.teachers.base import CallCache
from domainkit.utils.atomic import atomic_write_json, read_jsonl
from domainkit.utils.hashing import code_hash

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
class Condition:
    """One row of the table: the model it runs (base or tuned), the policy, and whether it
    is a comparison (run on request, ``eval.comparison``) or what the runtime is."""

    name: str
    tuned: bool
    policy: str
    compare: bool = False


CONDITIONS = [
    Condition("base closed-book", False, "closed", compare=True),
    Condition("naive RAG (base)", False, "naive", compare=True),
    Condition("evidence only", False, "evidence"),
    Condition("tuned closed-book", True, "closed", compare=True),
    Condition("tuned + evidence", True, "rag"),
    Condition("tuned, runtime policy", True, "auto"),
]
RUNTIME = "tuned, runtime policy"


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
    learning: dict = field(default_factory=dict)


class _MemoRetriever:
    """The retriever with each query's results kept: every condition, the prompt-length
    ordering and calibration ask the same questions, and each is embedded once."""

    def __init__(self, retriever):
        self.retriever, self.settings = retriever, retriever.settings
        self.embedder, self.vocabulary = retriever.embedder, retriever.vocabulary
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
    try:
        for i in order:
            answers[i] = pending[i].result()
            if bar is not None:
                bar.update(1)
    except BaseException:
        # The run stops here: the questions still queued must not go on generating in the
        # scheduler's thread (in a process that carries on, e.g. a resumed run's).
        for answer in pending.values():
            answer.cancel()
        raise
    return [answers[i] for i in range(len(items))], (time.perf_counter() - started) / max(
        1, len(items)
    )


def _prompt_chars(assistant: Assistant, item: Item, policy: str) -> int:
    if policy != "naive" or assistant.retriever is None:
        return len(item.question)
    return len(item.question) + sum(
        len(h.chunk.text)
        for h in assistant.retriever.search(item.question, k=assistant.config.retrieval.top_k)
    )


def run_eval(
    domain: Domain,
    *,
    limit: int | None = None,
    progress: bool = True,
    compare: bool = False,
    keep_replies: bool = False,
) -> EvalReport:
    """Evaluate the runtime (and, with ``compare`` or ``eval.compare: on``, the comparison
    conditions) and write the report. ``keep_replies`` keeps the model's replies for the next
    run (a build's), which then asks only for the requests that changed."""
    from domainkit.eval import comparison
    from domainkit.eval.report import write_report
    from domainkit.retrieval import open_retriever

    started = time.perf_counter()
    sets = _question_sets(domain, limit)
    mode = "on" if compare else domain.config.eval.compare
    tuned_available = adapter_config(domain.layout.adapter).is_file()
    wanted = [c for c in CONDITIONS if mode == "on" or not c.compare]
    conditions = [c for c in wanted if tuned_available or not c.tuned]
    general = (
        [Item(q, a, True) for q, a in GENERAL]
        if domain.config.eval.general_knowledge and mode == "on"
        else []
    )
    # Evidence only reads no model: it runs once, in the tuned model's pass when there is one.
    base = [
        c for c in conditions if not c.tuned and (c.policy != "evidence" or not tuned_available)
    ]
    tuned = [c for c in conditions if c.tuned or (c.policy == "evidence" and tuned_available)]
    passes = ([(False, base)] if base else []) + ([(True, tuned)] if tuned_available else [])
    total = _answers_to_make(passes, sets, general)
    bar = tqdm(total=total, desc="Evaluating", unit="answer", disable=not progress)
    run = _Run(domain, _MemoRetriever(open_retriever(domain)), bar, sets, general)
    for with_adapter, run_conditions in passes:
        run.evaluate_model(with_adapter, run_conditions)
    bar.close()
    if mode == "on":
        comparison.save(domain, sets, run.results, run.rows)
    elif mode == "auto":
        run.reuse(comparison.load_reused(domain, sets))
    if "reader_weight" in run.calibration:
        run.calibration["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(domain.layout.calibration, run.calibration)
    report = EvalReport(
        path=domain.layout.eval,
        conditions=run.results,
        retrieval=retrieval_metrics(
            run.retriever, next(iter(sets.values())), domain.config.retrieval.top_k
        ),
        calibration=run.calibration,
        general=run.general_scores,
        headline=_headline(run.results),
        seconds=round(time.perf_counter() - started, 1),
        notes=run.notes(tuned_available),
        learning=_learning(domain, sets.get("validation", []), run.calibration),
    )
    write_report(domain, report, run.rows)
    run.finish_replies(keep_replies)
    return report


def _answers_to_make(passes: list[tuple[bool, list[Condition]]], sets: dict, general: list) -> int:
    """The answers the passes make, for the progress bar: per question one per policy of
    each pass (the runtime policy reuses the tuned model's evidence reading), and the
    general-knowledge questions once per pass."""
    policies = sum(
        len({"rag" if c.policy == "auto" else c.policy for c in conditions})
        for _, conditions in passes
    )
    return sum(len(v) for v in sets.values()) * policies + len(general) * len(passes)


def _question_sets(domain: Domain, limit: int | None) -> dict[str, list[Item]]:
    sets = {"eval.yaml": eval_items(domain, limit), "validation": validation_items(domain, limit)}
    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        raise DomainkitError(
            f"nothing to evaluate: {domain.eval_path} has no questions and there is no synth "
            "validation split"
        )
    return sets


class _Run:
    """One evaluation's state: the question sets, the answers already generated (the
    runtime policy reuses the ``rag`` answers and applies the gate), the judge, the store of
    model replies that lets a killed run resume, and the results as they come."""

    def __init__(self, domain: Domain, retriever, bar, sets: dict, general: list[Item]):
        self.domain, self.retriever, self.bar = domain, retriever, bar
        self.sets, self.general = sets, general
        # Greedy, local and batched: base and tuned are compared on this machine's models.
        self.settings = domain.config.runtime.model_copy(
            update={"temperature": 0.0, "backend": "local", "max_batch": 16}
        )
        self.max_tokens = domain.config.eval.max_new_tokens
        self.refusal = domain.config.refusal
        self.judge = make_judge(domain)
        self._rag: dict[tuple[bool, str], tuple[list[Answer], float]] = {}
        self.replies = CallCache(domain.layout.eval_resume)
        self.backends: list[ResumingBackend] = []
        self.results: dict[str, dict[str, dict]] = {name: {} for name in sets}
        self.rows: list[dict] = []
        self.general_scores: dict = {}
        self.calibration: dict = {}
        self.reused_from: str | None = None

    def evaluate_model(self, tuned: bool, conditions: list[Condition]) -> None:
        """The base or tuned model: general knowledge, calibration (tuned), then each of
        its conditions on each question set."""
        assistant = self._assistant(tuned)
        if self.general:
            answers, _ = _answer_all(assistant, self.general, "closed", self.max_tokens, self.bar)
            self.general_scores["tuned" if tuned else "base"] = _share(
                answered_right(i, a, "") for i, a in zip(self.general, answers, strict=True)
            )
        if tuned:
            assistant = self.calibrate(assistant, self.sets.get("validation", []))
        for condition in conditions:
            for set_name, items in self.sets.items():
                answers, seconds = self.answers(assistant, condition, set_name, items)
                metrics = score(items, answers, self.refusal, seconds)
                metrics["judge"] = judge_accuracy(self.judge, items, answers)
                self.results[set_name][condition.name] = metrics
                self.rows += [
                    _row(set_name, condition.name, i, a)
                    for i, a in zip(items, answers, strict=True)
                ]

    def _assistant(self, tuned: bool) -> Assistant:
        """The base or tuned assistant, its model behind the store of this evaluation's
        replies (a killed run resumes)."""
        # The base model stands for what a user would otherwise run: transformers' default
        # fp32 (bf16 costs its free answers a few points; docs/decisions.md).
        settings = (
            self.settings if tuned else self.settings.model_copy(update={"precision": "fp32"})
        )
        backend, has_adapter = load_backend(self.domain, settings, tuned)
        adapter = self.domain.layout.adapter if has_adapter else None
        student = self.domain.config.train.student_model
        identity = model_id(student, adapter, code_hash("answer") + settings.precision)
        kept = resuming(backend, self.replies, identity)
        self.backends.append(kept)
        return Assistant.from_domain(
            self.domain,
            settings=self.settings,
            max_queue=1 << 16,
            retriever=self.retriever,
            backend=(kept, has_adapter),
        )

    def reuse(self, kept: dict[str, dict]) -> None:
        """Put the base model's comparison rows kept from an earlier run in the table."""
        for set_name, earlier in kept.items():
            self.results[set_name] = {**earlier["results"], **self.results[set_name]}
            self.rows += earlier["rows"]
            self.reused_from = earlier["written"]

    def notes(self, tuned_available: bool) -> list[str]:
        notes = [] if tuned_available else ["no trained adapter: tuned conditions skipped"]
        if self.reused_from:
            notes.append(
                f"base closed-book and naive RAG reused from the run of {self.reused_from} "
                "(same base model, questions, index and settings)"
            )
        if reused := sum(b.reused for b in self.backends):
            notes.append(
                f"{reused} model replies came from an earlier run of the same model on the "
                "same requests (an interrupted one, or the last build's), so s/answer counts "
                "only the rest"
            )
        calibration = self.calibration
        if "note" in calibration or not calibration.get("gate"):
            notes.append(calibration.get("note", "not calibrated (needs a tuned model)"))
        if calibration.get("gate") and "validation" in self.sets:
            notes.append(
                "the validation rows of the tuned evidence conditions are in-sample: the "
                "reader weight and the gate were fitted on those questions"
            )
        return notes

    def finish_replies(self, keep: bool) -> None:
        """Once the report is written: keep only this run's replies for the next, or delete
        the store."""
        if keep:
            self.replies.retain(set().union(*(b.used for b in self.backends)))
            self.replies.close()
            return
        self.replies.close()
        store = self.domain.layout.eval_resume
        for path in store.parent.glob(f"{store.name}*"):
            path.unlink(missing_ok=True)  # the store and its write-ahead log

    def answers(self, assistant: Assistant, condition: Condition, set_name: str, items: list[Item]):
        if condition.policy == "rag":
            answers, seconds = self._rag_answers(assistant, set_name, items)
            return [assistant.recheck(a, gated=False) for a in answers], seconds
        if condition.policy == "auto":  # repeats of reviewed questions first, as the runtime
            answers, seconds = self._rag_answers(assistant, set_name, items)
            return [
                assistant.recall(i.question) or assistant.recheck(a, gated=True)
                for i, a in zip(items, answers, strict=True)
            ], seconds
        return _answer_all(assistant, items, condition.policy, self.max_tokens, self.bar)

    def _rag_answers(
        self, assistant: Assistant, set_name: str, items: list[Item], read: bool = False
    ):
        """The model's reading of each item's evidence, once per model and set. Unless
        ``read`` (calibration needs the model's scores), once the calibrated assistant
        would not read (reader weight 0, no weight on the model's refusal), the selector's
        reading, as the runtime answers: the same answers without scoring every question."""
        key = (assistant.tuned, set_name)
        if key not in self._rag:
            policy = "rag" if read or assistant.reads_matter() else "auto"
            self._rag[key] = _answer_all(assistant, items, policy, self.max_tokens, self.bar)
        return self._rag[key]

    def calibrate(self, assistant: Assistant, items: list[Item]) -> Assistant:
        """Fit the reader weight and the gate on the validation questions and their
        gold-absent twins (``eval.calibration``); the assistant with both."""
        from domainkit.eval.calibration import (
            HidingRetriever,
            calibrate_assistant,
            gold_absent_twins,
        )

        if not items:
            self.calibration = {"note": "not calibrated: no validation questions"}
            return assistant
        answers, _ = self._rag_answers(assistant, "validation", items, read=True)
        chunks = self.retriever.retriever.index.chunks
        twins, hidden = gold_absent_twins(with_passages(items, chunks), self.retriever)
        hiding = assistant.with_parts(retriever=HidingRetriever(self.retriever, hidden))
        twin_answers, _ = _answer_all(hiding, twins, "rag", self.max_tokens)
        calibration, self.calibration = calibrate_assistant(
            assistant,
            answers,
            items,
            twin_answers,
            twins,
            lambda i, a: answered_right(i, a, self.refusal),
            self.domain.config.runtime.max_false_refusals,
            prior=prior_of(self.domain),
        )
        return assistant.with_parts(gate=calibration.gate, reader_weight=calibration.reader_weight)


def _learning(domain: Domain, items: list[Item], calibration: dict) -> dict:
    """What the users' reviewed questions changed in this build, for the report."""
    from domainkit.answer.gate import prior_fit
    from domainkit.retrieval.store import docs_fingerprint

    users = [i for i in items if not i.synthetic]
    out: dict = {
        "users_questions": {
            "answerable": sum(i.answerable for i in users),
            "unanswerable": sum(not i.answerable for i in users),
            "with_line": sum(i.line is not None for i in users),
        },
        "gate": "calibrated" if calibration.get("gate") else "prior",
        "guarded_questions": calibration.get("guarded_questions"),
        "prior": prior_fit(docs_fingerprint(domain.index_dir))[0],
    }
    if domain.layout.reviewed.is_file():
        reviewed = json.loads(domain.layout.reviewed.read_text(encoding="utf-8"))
        entries = reviewed["entries"]
        out["repeats"] = {
            "answers": sum(e["verdict"] == "line" for e in entries),
            "refusals": sum(e["verdict"] != "line" for e in entries),
            "threshold": reviewed["threshold"],
        }
    if domain.layout.reviewed_samples.is_file():
        out["samples"] = len(read_jsonl(domain.layout.reviewed_samples))
    return out


def _row(set_name: str, condition: str, item: Item, answer: Answer) -> dict:
    return {
        "set": set_name,
        "condition": condition,
        "question": item.question,
        "reference": item.reference,
        "answer": answer.text,
        "route": answer.route,
        "quote": answer.quote,
        "gate": answer.gate,
        "confidence": answer.confidence,
        "sources": [s.document for s in answer.sources],
    }


def _share(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


def _headline(results: dict[str, dict[str, dict]]) -> str:
    table = results.get("eval.yaml") or next(iter(results.values()))
    parts = []
    for name, metrics in table.items():
        accuracy = metrics["accuracy"]
        if accuracy is not None:
            parts.append(f"{name} {_percent(accuracy)}")
    best = table.get(RUNTIME) or table.get("evidence only") or {}
    refusals = best.get("refusal_accuracy")
    tail = f"; unanswerable refused {_percent(refusals)}" if refusals is not None else ""
    return "accuracy: " + ", ".join(parts) + tail


def _percent(share: float) -> str:
    """A share as the tables round it (two decimals), in percent: 0.525 prints as 0.53 in
    the table, so 53% here (formatting 0.525 with ``.0%`` would give 52%)."""
    return f"{round(float(f'{share:.2f}') * 100)}%"


def load_report(domain: Domain) -> dict | None:
    path = domain.layout.eval_report_json
    return json.loads(path.read_text()) if path.is_file() else None
