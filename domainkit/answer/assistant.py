"""The deployed assistant: evidence first, a checked quote, or an honest refusal.

``Assistant`` is built from typed parts (a scheduler in front of a chat backend, a
retriever, the calibrated gate and reader weight, the reviewed answers) and answers in
the order of this package's modules: a repeat of a reviewed question gets the reviewer's
line or refusal (``memory``); any other is retrieved, its evidence selected and read, the
model's quote verified, the answer worded, and gated. ``with_parts`` returns a new
assistant with some parts swapped, which is how eval applies a freshly calibrated gate
without touching the one it borrowed.

Policy ``auto`` (the default) is that whole path. ``rag`` is the same without the gate;
``closed`` never retrieves; ``naive`` is a quick-start RAG pipeline (the top passages
whole, "answer from the context", no checks) and ``evidence`` answers with the selected
evidence and no model at all. The last two exist for ``eval``'s comparison; which policies
an API client may choose is ``runtime.client_policies``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

from domainkit.answer import read
from domainkit.answer.answers import Answer, ConversationError, PendingAnswer, Source
from domainkit.answer.budget import fit_prompt
from domainkit.answer.compose import composed_lines, evidence_answer, word
from domainkit.answer.evidence import Evidence, EvidenceSelector
from domainkit.answer.gate import Gate, features_of, prior_gate, reading_counts
from domainkit.answer.memory import ReviewedAnswers
from domainkit.answer.retrieve import Retrieval, search_query, split_conversation
from domainkit.backends import BACKENDS, ChatBackend, GenRequest, GenResult, ScoresChoices
from domainkit.backends.scheduler import Scheduler
from domainkit.config.layout import adapter_config
from domainkit.config.loading import Domain
from domainkit.config.schema import DomainConfig, Policy, RuntimeConfig
from domainkit.ingest import Chunk
from domainkit.ingest.lines import LineRef
from domainkit.prompting import Message, context_question

log = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = get_args(Policy)

# Before calibration the selector's ranking decides the line and the model's pick has no
# weight (see docs/decisions.md, "reader weight 0 before calibration").
DEFAULT_READER_WEIGHT = 0.0


@dataclass(frozen=True)
class Calibration:
    """What ``domainkit eval`` fitted for the runtime: the gate and the reader weight."""

    gate: Gate = field(default_factory=Gate)
    reader_weight: float = DEFAULT_READER_WEIGHT

    @classmethod
    def of(cls, domain: Domain) -> Calibration:
        """The built domain's calibration, else the prior gate (``gate.prior_gate``)."""
        path = domain.layout.calibration
        data = json.loads(path.read_text()) if path.is_file() else {}
        gate = Gate.from_dict(data["gate"]) if "gate" in data else prior_of(domain)
        return cls(gate, float(data.get("reader_weight", DEFAULT_READER_WEIGHT)))


def prior_of(domain: Domain) -> Gate:
    """The gate before calibration for this domain's documents (``gate.prior_gate``)."""
    from domainkit.retrieval.store import docs_fingerprint

    return prior_gate(docs_fingerprint(domain.index_dir))


def load_backend(
    domain: Domain, settings: RuntimeConfig, tuned: bool = True
) -> tuple[ChatBackend, bool]:
    """The domain's chat backend (``runtime.backend``) with its trained adapter when ``tuned``
    and one exists; and whether the adapter is in it."""
    adapter = domain.layout.adapter if tuned else None
    if adapter is not None and not adapter_config(adapter).is_file():
        log.warning("no trained adapter in %s; answering with the base model", adapter)
        adapter = None
    backend = BACKENDS.get(settings.backend).from_runtime(
        settings,
        student=domain.config.train.student_model,
        adapter=adapter,
        device=domain.config.train.device,
        name=domain.config.name,
    )
    return backend, adapter is not None


@dataclass
class _Sampling:
    """A request's sampling settings: temperature (0 = greedy) and an optional seed."""

    temperature: float
    seed: int | None = None


@dataclass
class _Plan:
    """What to generate for one question and how to turn the reply into an answer."""

    prompt: list[Message]
    evidence: Evidence | None = None
    hits: list = field(default_factory=list)
    trimmed: int = 0


class Assistant:
    """Answers conversations for one domain.

    Args:
        config: The domain's configuration (system prompt, refusal, evidence settings).
        scheduler: Generation queue in front of a chat backend.
        settings: Runtime settings (policy, budgets); default ``config.runtime``.
        retriever: The domain's passages; None answers closed-book only.
        tuned: Whether the model carries the domain's adapter.
        gate: The answerability gate (calibrated by ``domainkit eval``).
        reader_weight: How much the model's choice of line counts against the evidence
            selector's ranking, 0 to 1 (calibrated by ``domainkit eval``).
        memory: Reviewed questions whose repeats get the reviewer's verdict (``auto``).
    """

    def __init__(
        self,
        config: DomainConfig,
        scheduler: Scheduler,
        *,
        settings: RuntimeConfig | None = None,
        retriever: Retrieval | None = None,
        tuned: bool = False,
        gate: Gate | None = None,
        reader_weight: float = DEFAULT_READER_WEIGHT,
        memory: ReviewedAnswers | None = None,
    ):
        self.config = config
        self.memory = memory
        self.settings: RuntimeConfig = settings or config.runtime
        self.scheduler = scheduler
        self.retriever = retriever
        self.tuned = tuned
        self.gate: Gate = gate or Gate()
        self.reader_weight = reader_weight
        self.system = config.render_system_prompt()
        self.context_tokens = min(self.settings.context_tokens, scheduler.generator.context_limit)
        self.selector: EvidenceSelector | None = None
        if retriever is not None:
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
        retriever: Retrieval | None = None,
        backend: tuple[ChatBackend, bool] | None = None,
    ) -> Assistant:
        """Load a built domain: base model + adapter (when trained), index, recipe and the
        calibrated gate. ``retriever`` shares an already opened retriever and ``backend``
        an already loaded one (``load_backend``'s pair), as eval does."""
        settings = settings or domain.config.runtime
        generator, has_adapter = backend or load_backend(domain, settings, tuned)
        if retrieval and retriever is None:
            from domainkit.retrieval import open_retriever

            retriever = open_retriever(domain)
        calibration = Calibration.of(domain)
        return cls(
            domain.config,
            Scheduler(generator, max_batch=settings.max_batch, max_queue=max_queue),
            settings=settings,
            retriever=retriever if retrieval else None,
            tuned=has_adapter,
            gate=calibration.gate,
            reader_weight=calibration.reader_weight,
            memory=ReviewedAnswers.load(domain.layout.reviewed),
        )

    def with_parts(
        self,
        *,
        scheduler: Scheduler | None = None,
        settings: RuntimeConfig | None = None,
        retriever: Retrieval | None = None,
        gate: Gate | None = None,
        reader_weight: float | None = None,
    ) -> Assistant:
        """A new assistant with the given parts swapped (None keeps a part). It shares the
        rest with this one, and its evidence selector while the retriever's embedder and
        vocabulary are the same."""
        other = Assistant(
            self.config,
            scheduler or self.scheduler,
            settings=settings or self.settings,
            retriever=retriever or self.retriever,
            tuned=self.tuned,
            gate=gate or self.gate,
            reader_weight=self.reader_weight if reader_weight is None else reader_weight,
            memory=self.memory,
        )
        if other.retriever is not None and self.retriever is not None:
            mine, theirs = self.retriever, other.retriever
            if (mine.embedder, mine.vocabulary) == (theirs.embedder, theirs.vocabulary):
                other.selector = self.selector
        return other

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
        if self.retriever is None or self.selector is None or policy == "closed":
            return self._closed(question, history, max_tokens, sampling, on_text, started)
        if policy == "naive":
            return self._naive(question, history, max_tokens, sampling, on_text, started)
        hits = self._retrieve(question, history)
        evidence = self.selector.select(question, [h.chunk for h in hits])
        # A short follow-up means what the conversation says it means, not what it says alone.
        alone = search_query(question, history) == question
        recalled = self.recall(question, evidence, hits) if policy == "auto" and alone else None
        if recalled is not None:
            return self._ready(recalled, on_text, started)
        if policy == "evidence" or not evidence.sentences:
            return self._from_evidence(evidence, on_text, started)
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
        request = GenRequest(
            plan.prompt,
            max_tokens,
            sampling.temperature,
            None,
            read.choices(evidence, self.config.refusal),
            sampling.seed,
        )
        return PendingAnswer(finish, self.scheduler.submit(request), request)

    def recall(
        self, question: str, evidence: Evidence | None = None, hits: list | None = None
    ) -> Answer | None:
        """The reviewer's answer when ``question`` repeats a reviewed one (route
        ``reviewed``): the reviewed lines worded and cited as any answer is, or the refusal.
        ``evidence`` and ``hits`` are the question's own, when already found."""
        if self.memory is None or self.retriever is None or self.selector is None:
            return None
        if hits is None:
            hits = self._retrieve(question, [])
        if evidence is None:
            evidence = self.selector.select(question, [h.chunk for h in hits])
        vector = self.retriever.embedder.embed([question])[0]
        found = self.memory.recall(
            question,
            vector,
            self.retriever.vocabulary,
            retrieved={h.chunk.id for h in hits},
            dense=evidence.best_dense if evidence.sentences else None,
            closest=max(evidence.sentences, key=lambda s: s.dense).id
            if evidence.sentences
            else None,
        )
        if found is None:
            return None
        entry = found.reviewed
        trace = {"reviewed": entry.question, "similarity": round(found.similarity, 4)}
        if entry.verdict != "line" or not entry.lines or entry.line is None:
            return Answer(self.config.refusal, "reviewed", gate=trace)
        chunks = {c["id"]: Chunk.from_dict(c) for c in entry.chunks}
        spans = []
        for line_id in entry.lines:
            ref = LineRef.parse(line_id)
            chunk = next(c for c in chunks.values() if ref.find([c]) is not None)
            spans.append((chunk, ref.start - chunk.start, ref.end - chunk.start))
        evidence = self.selector.select(
            question, list(chunks.values()), query_vector=vector, required=spans
        )
        kept = {s.id: s for s in evidence.sentences}
        if not all(line_id in kept for line_id in entry.lines):
            return None  # the selector could not keep them all: answer as if never reviewed
        chosen = [kept[line_id] for line_id in entry.lines]
        answer = evidence_answer(evidence, self.settings.answer_words)
        answer.text = word(evidence, chosen, kept[entry.line])
        answer.route, answer.line, answer.lines = "reviewed", entry.line, list(entry.lines)
        answer.gate = trace
        return answer

    def _ready(self, answer: Answer, on_text, started: float) -> PendingAnswer:
        def finish(_: GenResult | None) -> Answer:
            answer.seconds = time.perf_counter() - started
            answer.completion_tokens = self.scheduler.generator.count_text(answer.text)
            if on_text is not None:
                on_text(answer.text)
            return answer

        return PendingAnswer(finish, None)

    def reads_matter(self) -> bool:
        """Whether the model's reading can change an ``auto`` answer. With a backend that
        scores the lines it cannot when calibration gave the reader no weight (the
        selector's line is the answer) and the gate no weight on the model's refusal: then
        ``auto`` answers without running the model, the same answer in a fraction of the
        time. A backend that generates always counts: its quote is the pick and its refusal
        is final."""
        scores = isinstance(self.scheduler.generator, ScoresChoices)
        return not scores or reading_counts(self.reader_weight, self.gate.weights)

    def recheck(self, answer: Answer, gated: bool) -> Answer:
        """``answer`` made again from its reading with this assistant's gate and reader
        weight (eval calibrates them after generating)."""
        if answer.reading is None:
            return answer
        plan, result = answer.reading
        again = self._checked(plan, result, gated)
        again.seconds = answer.seconds
        return again

    # -- the evidence route ----------------------------------------------------------------

    def _retrieve(self, question: str, history: list[Message]) -> list:
        """The passages searched for the question (``retrieve.search_query``)."""
        assert self.retriever is not None
        return self.retriever.search(
            search_query(question, history), k=self.config.evidence.passages
        )

    def _evidence(self, question: str, history: list[Message]) -> Evidence:
        """Retrieve, then select the evidence for the question."""
        assert self.selector is not None
        hits = self._retrieve(question, history)
        return self.selector.select(question, [h.chunk for h in hits])

    def _plan(
        self, question: str, history: list[Message], evidence: Evidence, max_tokens: int
    ) -> _Plan:
        """The prompt within the context budget: the oldest earlier turns go first, then the
        lowest-ranked evidence sentences; the latest question is always kept."""
        prompt, evidence, trimmed = self._within_budget(
            history,
            evidence,
            lambda e: read.prompt_text(question, e),
            lambda e: e.without(e.ranked[-1]) if len(e.ranked) > 1 else None,
            max_tokens,
        )
        return _Plan(prompt, evidence=evidence, trimmed=trimmed)

    def _read(self, evidence: Evidence, result: GenResult | None) -> read.Reading:
        if result is None:
            return read.unread(evidence)
        if result.choice_logprobs:
            return read.read_scores(evidence, result.choice_logprobs, self.reader_weight)
        return read.read_reply(evidence, result.text, self.config.refusal)

    def _checked(self, plan: _Plan, result: GenResult | None, gated: bool) -> Answer:
        """The answer from the model's reading (verified), worded from the evidence, through
        the gate when ``gated``. With no reply (``result`` None: the model's reading would
        not count) the selector's best line is the answer and the gate does without the
        model's refusal."""
        evidence = plan.evidence
        assert evidence is not None and self.retriever is not None
        reading = self._read(evidence, result)
        answer = evidence_answer(evidence, self.settings.answer_words)
        answer.reading = (plan, result)
        answer.quote = reading.quote
        if result is not None:
            answer.confidence = result.confidence
            answer.prompt_tokens = result.prompt_tokens
            answer.completion_tokens = result.completion_tokens
            answer.finish_reason = result.finish_reason
        answer.trimmed_turns = plan.trimmed
        if reading.line is not None:
            words = self.settings.answer_words
            answer.text, answer.lines = composed_lines(evidence, reading.line, words)
            answer.line = reading.line.id
            # "answer" only when the model's choice of line counted: unread, or read with no
            # weight, the line is the selector's and the user is told so.
            chose = result is not None and (not result.choice_logprobs or self.reader_weight > 0)
            answer.route = "answer" if chose else "evidence"
        features = features_of(evidence, self.retriever.vocabulary, answer.text, reading.refusal)
        probability = self.gate.probability(features)
        answer.gate = {
            **features.to_dict(),
            "p_answerable": round(probability, 4),
            "threshold": round(self.gate.threshold, 4),
        }
        # A generated reply that refuses (a backend that cannot score) is the model's own
        # decision; scored refusal probabilities go through the gate instead.
        refused = result is not None and not result.choice_logprobs and reading.refusal == 1.0
        if gated and (refused or probability < self.gate.threshold):
            answer.text, answer.route, answer.sources = self.config.refusal, "refusal", []
            answer.line, answer.lines = None, []
        if result is None or result.choice_logprobs:  # scored or unread: the reply is this text
            answer.completion_tokens = self.scheduler.generator.count_text(answer.text)
        return answer

    def _from_evidence(self, evidence: Evidence, on_text, started: float) -> PendingAnswer:
        """No model: the evidence's best sentence (``evidence``), or a refusal when there is
        no evidence at all."""

        def finish(_: GenResult | None) -> Answer:
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
        assert self.retriever is not None
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
