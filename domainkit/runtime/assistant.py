"""The deployed assistant: evidence first, a checked quote, or an honest refusal.

Policy ``auto`` (the default):

1. retrieve (hybrid) and select the evidence: the few sentences of the top passages that
   bear on the question (``retrieval.evidence``), each under its passage's number;
2. the tuned student reads the evidence block and quotes the line it relies on with its
   number, or refuses (the format it was trained on, ``prompting.evidence_question``);
   skipped when calibration found its reading could not change the answer
   (``reads_matter``);
3. the gate (``runtime.gate``) decides answer or refuse from the evidence's similarity,
   the question's names and figures the corpus never mentions, and the model's own
   probability of refusing, with thresholds calibrated by ``domainkit eval``;
4. the quote is verified against the evidence (``runtime.verify``); the answer is the
   quoted sentence with its lead-in and the best other lines by score, verbatim,
   with the citation. A quote that fails the check is replaced by the evidence's best
   sentence (route ``evidence``).

``rag`` is the same without the gate; ``closed`` never retrieves; ``naive`` is a
quick-start RAG pipeline (the top passages whole, "answer from the context", no checks)
and ``evidence`` answers with the selected evidence and no model at all. The last two
exist for ``eval``'s comparison; which policies an API client may choose is
``runtime.client_policies``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

from domainkit.backends import BACKENDS, GenRequest, GenResult
from domainkit.config.loading import Domain
from domainkit.config.schema import Policy, RuntimeConfig
from domainkit.prompting import (
    Message,
    context_question,
    evidence_question,
    parse_quote,
    quote_reply,
)
from domainkit.retrieval.answer_types import missing_type
from domainkit.runtime.answers import (
    Answer,
    ConversationError,
    PendingAnswer,
    Source,
    evidence_answer,
)
from domainkit.runtime.context import fit_prompt, split_conversation
from domainkit.runtime.gate import Gate, GateFeatures, reading_counts
from domainkit.runtime.scheduler import Scheduler
from domainkit.runtime.verify import match_quote

log = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = get_args(Policy)


# Before calibration the selector's ranking decides the line and the model's pick has no
# weight: every calibrated build so far (the four shipped corpora and the SQuAD 2.0
# article, full builds) fitted weight 0 on its validation questions, and on the support
# demo's eval questions the selector alone answered 0.72 right against 0.40 at weight 0.5.
# Calibration gives the model weight where, on a domain's own questions, its pick helps.
DEFAULT_READER_WEIGHT = 0.0


def load_calibration(domain: Domain) -> tuple[Gate, float]:
    """The calibrated gate and reader weight of a built domain, else the defaults."""
    path = domain.layout.calibration
    data = json.loads(path.read_text()) if path.is_file() else {}
    gate = Gate.from_dict(data["gate"]) if "gate" in data else Gate()
    return gate, float(data.get("reader_weight", DEFAULT_READER_WEIGHT))


@dataclass
class _Sampling:
    """A request's sampling settings: temperature (0 = greedy) and an optional seed."""

    temperature: float
    seed: int | None = None


@dataclass
class _Plan:
    """What to generate for one question and how to turn the reply into an answer."""

    prompt: list[Message]
    evidence: object = None  # retrieval.evidence.Evidence
    hits: list = field(default_factory=list)
    trimmed: int = 0


class Assistant:
    """Answers conversations for one domain.

    Args:
        config: The domain's configuration (system prompt, refusal, evidence settings).
        settings: Runtime settings (policy, budgets).
        scheduler: Generation queue in front of a backend.
        retriever: The domain's retriever; None answers closed-book only.
        tuned: Whether the model carries the domain's adapter.
        gate: The answerability gate (calibrated by ``domainkit eval``).
        reader_weight: How much the model's choice of line counts against the evidence
            selector's ranking, 0 to 1 (calibrated by ``domainkit eval``).
    """

    def __init__(
        self,
        config,
        settings: RuntimeConfig,
        scheduler: Scheduler,
        retriever,
        tuned,
        gate=None,
        reader_weight: float = DEFAULT_READER_WEIGHT,
    ):
        self.config, self.settings = config, settings
        self.scheduler, self.retriever, self.tuned = scheduler, retriever, tuned
        self.gate = gate or Gate()
        self.reader_weight = reader_weight
        self.system = config.render_system_prompt()
        generator = scheduler.generator
        self.context_tokens = min(settings.context_tokens, generator.context_limit)
        self.selector = None
        if retriever is not None:
            from domainkit.retrieval.evidence import EvidenceSelector

            self.selector = EvidenceSelector(
                retriever.embedder, retriever.vocabulary, config.evidence
            )

    @classmethod
    def from_domain(
        cls,
        domain: Domain,
        *,
        tuned: bool = True,
        retrieval: bool = True,
        settings: RuntimeConfig | None = None,
        max_queue: int = 64,
        retriever=None,
    ) -> Assistant:
        """Load a built domain: base model + adapter (when trained), index, recipe and the
        calibrated gate. ``retriever`` shares an already opened retriever (eval)."""
        settings = settings or domain.config.runtime
        adapter = domain.layout.adapter if tuned else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            log.warning("no trained adapter in %s; answering with the base model", adapter)
            adapter = None
        generator = BACKENDS.get(settings.backend).from_runtime(
            settings,
            student=domain.config.train.student_model,
            adapter=adapter,
            device=domain.config.train.device,
            name=domain.config.name,
        )
        if retrieval and retriever is None:
            from domainkit.retrieval import open_retriever

            retriever = open_retriever(domain)
        scheduler = Scheduler(generator, max_batch=settings.max_batch, max_queue=max_queue)
        gate, weight = load_calibration(domain)
        return cls(domain.config, settings, scheduler, retriever, adapter is not None, gate, weight)

    # -- answering -------------------------------------------------------------------------

    def answer(self, messages: list[Message], **options) -> Answer:
        """Answer the conversation's last user message; see ``submit`` for the options."""
        return self.submit(messages, **options).result()

    def submit(
        self,
        messages: list[Message],
        *,
        policy: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> PendingAnswer:
        """Plan the answer (retrieval, evidence, prompt) and queue its generation.

        Raises ``BusyError`` at once when the queue is full. ``on_text`` receives the
        answer's text: as it is generated for ``closed`` and ``naive``; in one piece once it
        is verified for ``auto`` and ``rag``, whose answer is checked before it is shown.
        """
        started = time.perf_counter()
        policy = policy or self.settings.policy
        if policy not in POLICIES:
            raise ConversationError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        question, history = split_conversation(messages)
        max_tokens = max_tokens or self.settings.max_new_tokens
        sampling = _Sampling(
            self.settings.temperature if temperature is None else temperature, seed
        )
        if self.retriever is None or policy == "closed":
            return self._closed(question, history, max_tokens, sampling, on_text, started)
        if policy == "naive":
            return self._naive(question, history, max_tokens, sampling, on_text, started)
        evidence = self._evidence(question, history)
        if policy == "evidence" or not evidence.sentences:
            return self._from_evidence(evidence, policy, on_text, started)
        plan = self._plan(question, history, evidence, max_tokens)

        def finish(result: GenResult | None) -> Answer:
            answer = self._checked(plan, result, gated=policy == "auto")
            answer.seconds = time.perf_counter() - started
            if on_text is not None:
                on_text(answer.text)
            return answer

        if policy == "auto" and not self.reads_matter():
            return PendingAnswer(finish, None)

        # The reply is one of the evidence lines or the refusal: scored as choices where the
        # backend can (always a valid quote), generated and checked where it cannot.
        choices = [quote_reply(s.text) for s in plan.evidence.sentences] + [self.config.refusal]
        request = GenRequest(
            plan.prompt, max_tokens, sampling.temperature, None, choices, sampling.seed
        )
        return PendingAnswer(finish, self.scheduler.submit(request), request)

    def reads_matter(self) -> bool:
        """Whether the model's reading can change an ``auto`` answer. With a backend that
        scores the lines it cannot when calibration gave the reader no weight (the
        selector's line is the answer) and the gate no weight on the model's refusal: then
        ``auto`` answers without running the model, the same answer in a fraction of the
        time. A backend that generates always counts: its quote is the pick and its refusal
        is final."""
        scores = getattr(self.scheduler.generator, "scores_choices", False)
        return not scores or reading_counts(self.reader_weight, self.gate.weights)

    # -- the evidence route ----------------------------------------------------------------

    def _evidence(self, question: str, history: list[Message]):
        """The evidence for the question; a short follow-up is searched together with the
        previous question, which usually names what it refers to."""
        query = question
        earlier = [m["content"] for m in history if m["role"] == "user"]
        if earlier and len(question.split()) <= 6:
            query = f"{earlier[-1]} {question}"
        hits = self.retriever.search(query, k=self.config.evidence.passages)
        return self.selector.select(question, [h.chunk for h in hits])

    def _plan(self, question: str, history: list[Message], evidence, max_tokens: int) -> _Plan:
        """The prompt within the context budget: the oldest earlier turns go first, then the
        lowest-ranked evidence sentences; the latest question is always kept."""
        prompt, evidence, trimmed = self._within_budget(
            history,
            evidence,
            lambda e: evidence_question(question, e.block()),
            lambda e: e.without(e.ranked[-1]) if len(e.ranked) > 1 else None,
            max_tokens,
        )
        return _Plan(prompt, evidence=evidence, trimmed=trimmed)

    def _checked(self, plan: _Plan, result: GenResult | None, gated: bool) -> Answer:
        """The model's reply, verified against the evidence, through the gate when ``gated``.
        With no reply (``result`` None: the model's reading would not count) the selector's
        best line is the answer and the gate does without the model's refusal."""
        evidence, read = plan.evidence, result
        if result is None:
            sentence, refusal, quote = evidence.best(), None, None
            result = GenResult("", 0, 0, "stop", None)
        else:
            sentence, refusal, quote = self._reading(evidence, result)
        # A generated reply that refuses (a backend that cannot score) is the model's own
        # decision; scored refusal probabilities go through the gate instead.
        refused = not result.choice_logprobs and refusal == 1.0
        answer = evidence_answer(evidence, self.settings.answer_words)
        answer.reading = (plan, read)
        answer.quote = quote
        answer.confidence = result.confidence
        answer.prompt_tokens = result.prompt_tokens
        answer.completion_tokens = result.completion_tokens
        answer.finish_reason, answer.trimmed_turns = result.finish_reason, plan.trimmed
        if sentence is not None:
            answer.text = evidence.answer_from(sentence, self.settings.answer_words)
            # "answer" only when the model's choice of line counted: unread, or read with no
            # weight, the line is the selector's and the user is told so.
            chose = read is not None and (not read.choice_logprobs or self.reader_weight > 0)
            answer.route = "answer" if chose else "evidence"
        vocabulary = self.retriever.vocabulary
        features = GateFeatures(
            dense=evidence.best_dense,
            coverage=evidence.best_coverage,
            unknown=len(vocabulary.unknown_specific_terms(evidence.question)),
            novel=round(vocabulary.novel_share(evidence.question), 4),
            model_refusal=refusal,
            missing_type=int(missing_type(evidence.question, answer.text)),
        )
        probability = self.gate.probability(features)
        answer.gate = {**features.to_dict(), "p_answerable": round(probability, 4)}
        if gated and (refused or probability < self.gate.threshold):
            answer.text, answer.route, answer.sources = self.config.refusal, "refusal", []
        if read is None or result.choice_logprobs:  # scored or not read: the reply is this text
            answer.completion_tokens = self.scheduler.generator.count_text(answer.text)
        return answer

    def _reading(self, evidence, result: GenResult):
        """(the answer's line or None, the model's probability of refusing, its own quote).

        Scored choices give the first two directly: the line that wins the selector's and
        the model's scores combined by the reader weight, and the refusal's share of the
        probability over all choices; the model's quote is its own best line. A generated
        reply is checked against the evidence (``verify.match_quote``); a refusal counts as
        probability 1."""
        if result.choice_logprobs:
            scores = result.choice_logprobs
            top = max(scores)
            weights = [math.exp(x - top) for x in scores]
            refusal = weights[-1] / sum(weights)
            lines = _softmax(scores[:-1])
            w = self.reader_weight
            # A lead-in ("The options are:", a table's header row) introduces facts without
            # stating them: never the answer's main line (``Evidence.best``).
            combined = [
                (s, (1 - w) * s.score + w * p)
                for s, p in zip(evidence.sentences, lines, strict=True)
            ]
            stated = [c for c in combined if not c[0].lead_in] or combined
            own = evidence.sentences[lines.index(max(lines))]
            pick = max(stated, key=lambda c: c[1])[0]
            return pick, round(refusal, 4), quote_reply(own.text)
        from domainkit.eval.metrics import is_refusal

        quoted = parse_quote(result.text)
        refused = quoted is None and is_refusal(result.text, self.config.refusal)
        matched = match_quote(quoted, evidence)
        quote = quote_reply(matched.text) if matched is not None else result.text or None
        return matched, (1.0 if refused else 0.0), quote

    def recheck(self, answer: Answer, gated: bool) -> Answer:
        """``answer`` made again from its reading with this assistant's current gate and
        reader weight (eval calibrates them after generating)."""
        if answer.reading is None:
            return answer
        plan, result = answer.reading
        again = self._checked(plan, result, gated)
        again.seconds = answer.seconds
        return again

    def _from_evidence(self, evidence, policy: str, on_text, started: float) -> PendingAnswer:
        """No model: the evidence's best sentence (``evidence``), or a refusal when there is
        no evidence at all."""

        def finish(_: None) -> Answer:
            if evidence.sentences:
                answer = evidence_answer(evidence, self.settings.answer_words)
            else:
                answer = Answer(self.config.refusal, "refusal")
            answer.seconds = time.perf_counter() - started
            if on_text is not None:
                on_text(answer.text)
            return answer

        return PendingAnswer(finish, None)

    # -- routes for comparison ---------------------------------------------------------------

    def _naive(self, question, history, max_tokens, sampling, on_text, started) -> PendingAnswer:
        hits = self.retriever.search(question, k=self.config.retrieval.top_k)
        prompt = self._fit(
            history, lambda h: context_question(question, [x.chunk for x in h]), hits, max_tokens
        )
        sources = [Source.of(i, h.chunk, h.dense_score) for i, h in enumerate(prompt.hits, start=1)]
        return self._generate(prompt, "rag", sources, max_tokens, sampling, on_text, started)

    def _closed(self, question, history, max_tokens, sampling, on_text, started) -> PendingAnswer:
        prompt = self._fit(history, lambda _: question, [], max_tokens)
        return self._generate(prompt, "closed", [], max_tokens, sampling, on_text, started)

    def _fit(self, history, user: Callable[[list], str], hits: list, max_tokens: int) -> _Plan:
        """The prompt within the context budget: the oldest turns go first, then the last
        passages."""
        prompt, hits, trimmed = self._within_budget(
            history, hits, user, lambda h: h[:-1] if len(h) > 1 else None, max_tokens
        )
        return _Plan(prompt, hits=hits, trimmed=trimmed)

    def _within_budget(self, history, extra, user, shrink, max_tokens):
        return fit_prompt(
            self.system,
            history,
            extra,
            user,
            shrink,
            count=self.scheduler.generator.count_tokens,
            context_tokens=self.context_tokens,
            max_tokens=max_tokens,
        )

    def _generate(self, plan, route, sources, max_tokens, sampling, on_text, started):
        def finish(result: GenResult) -> Answer:
            return Answer(
                text=result.text,
                route=route,
                sources=sources,
                confidence=result.confidence,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                finish_reason=result.finish_reason,
                seconds=time.perf_counter() - started,
                trimmed_turns=plan.trimmed,
            )

        request = GenRequest(
            plan.prompt, max_tokens, sampling.temperature, on_text, seed=sampling.seed
        )
        return PendingAnswer(finish, self.scheduler.submit(request), request)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]
