"""The deployed assistant: the tuned model, retrieval when it helps, citations, refusal.

Policy ``auto`` (default) retrieves with the hybrid retriever. When the best passage's
cosine similarity reaches ``relevance_threshold``, the relevant passages go into the prompt
in exactly the RAFT format the student was trained on (``prompting.context_question``)
and are returned as sources. Otherwise the tuned model answers closed-book; if its
confidence (geometric mean of its answer tokens' probabilities) is below
``confidence_threshold`` the recipe's refusal is returned instead. ``rag`` always uses the
top passages and ``closed`` never retrieves; both exist for comparison.

Thresholds come from the recipe, overridden by ``BUILD/runtime/calibration.json`` when
``domainkit eval`` has calibrated them on the validation split.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

from domainkit.config.loading import Domain
from domainkit.config.schema import RuntimeConfig
from domainkit.errors import DomainkitError
from domainkit.prompting import Message, chat, context_question
from domainkit.runtime.generation import GENERATORS, GenRequest, GenResult, Scheduler

log = logging.getLogger(__name__)

POLICIES = ("auto", "rag", "closed")


class ConversationError(DomainkitError):
    """The conversation cannot be answered as given (HTTP 400/422)."""


@dataclass
class Source:
    """A passage an answer was given from; ``number`` is its citation, ``[number]``."""

    number: int
    document: str
    title: str
    heading: str
    chunk_id: str
    score: float  # cosine similarity of question and passage
    page: int | None = None
    text: str = ""


@dataclass
class Answer:
    text: str
    route: str  # rag, closed or refusal
    sources: list[Source] = field(default_factory=list)
    confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    seconds: float = 0.0
    trimmed_turns: int = 0  # earlier turns dropped to fit the context budget

    def to_dict(self) -> dict:
        return asdict(self)


def calibration_path(domain: Domain) -> Path:
    return domain.build_dir / "runtime" / "calibration.json"


def adapter_path(domain: Domain) -> Path:
    return domain.build_dir / "train" / "adapter"


def runtime_settings(domain: Domain) -> RuntimeConfig:
    """The recipe's runtime settings with calibrated thresholds, when there are any."""
    settings = domain.config.runtime
    path = calibration_path(domain)
    if path.is_file():
        calibrated = json.loads(path.read_text())
        keys = ("relevance_threshold", "confidence_threshold")
        settings = settings.model_copy(update={k: calibrated[k] for k in keys if k in calibrated})
    return settings


class PendingAnswer:
    """An answer being generated; ``result()`` waits for it."""

    def __init__(self, finish: Callable[[GenResult], Answer], future: Future):
        self._finish, self._future = finish, future
        self._answer: Answer | None = None

    def result(self, timeout: float | None = None) -> Answer:
        if self._answer is None:
            self._answer = self._finish(self._future.result(timeout))
        return self._answer


class Assistant:
    """Answers conversations for one domain.

    Args:
        config: The domain's configuration (system prompt, refusal, disclaimer).
        settings: Runtime settings (policy, thresholds, budgets).
        scheduler: Generation queue in front of a backend.
        retriever: The domain's retriever; None answers closed-book only.
        tuned: Whether the model carries the domain's adapter (reported, not used).
    """

    def __init__(self, config, settings: RuntimeConfig, scheduler: Scheduler, retriever, tuned):
        self.config, self.settings = config, settings
        self.scheduler, self.retriever, self.tuned = scheduler, retriever, tuned
        self.system = config.render_system_prompt()
        generator = scheduler.generator
        self.context_tokens = min(settings.context_tokens, generator.context_limit)

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
        """Load a built domain: base model + adapter (when trained), index and recipe.

        ``retriever`` shares an already opened retriever (eval opens one for all models).
        """
        settings = settings or runtime_settings(domain)
        adapter = adapter_path(domain) if tuned else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            log.warning("no trained adapter in %s; answering with the base model", adapter)
            adapter = None
        student = domain.config.train.student_model
        if settings.backend == "openai":
            generator = GENERATORS.get("openai")(
                model=settings.model or domain.config.name,
                base_url=settings.base_url,
                api_key_env=settings.api_key_env,
                tokenizer_model=student,
            )
        else:
            generator = GENERATORS.get("local")(student, adapter, domain.config.train.device)
        if retrieval and retriever is None:
            from domainkit.retrieval import open_retriever

            retriever = open_retriever(domain)
        scheduler = Scheduler(generator, max_batch=settings.max_batch, max_queue=max_queue)
        return cls(domain.config, settings, scheduler, retriever, adapter is not None)

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
        on_text: Callable[[str], None] | None = None,
    ) -> PendingAnswer:
        """Plan the answer (retrieval, route, prompt) and queue its generation.

        Raises ``BusyError`` at once when the queue is full. ``on_text`` receives the
        answer's text as it is generated; a closed-book answer under ``auto`` arrives in one
        piece once its confidence is known, since it may still become a refusal.
        """
        started = time.perf_counter()
        policy = policy or self.settings.policy
        if policy not in POLICIES:
            raise ConversationError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        question, history = _split(messages)
        max_tokens = max_tokens or self.settings.max_new_tokens
        temperature = self.settings.temperature if temperature is None else temperature

        hits = []
        if policy != "closed" and self.retriever is not None:
            hits = self.retriever.search(question)
            if policy == "auto":
                hits = [h for h in hits if h.dense_score >= self.settings.relevance_threshold]
        route = "rag" if hits else "closed"
        prompt, hits, trimmed = self._prompt(question, history, hits, max_tokens)
        gated = policy == "auto" and route == "closed"
        sources = [_source(i, h) for i, h in enumerate(hits, start=1)]

        def finish(result: GenResult) -> Answer:
            answer = Answer(
                text=result.text,
                route=route,
                sources=sources,
                confidence=result.confidence,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                finish_reason=result.finish_reason,
                trimmed_turns=trimmed,
            )
            if gated:
                threshold = self.settings.confidence_threshold
                if answer.confidence is None or answer.confidence < threshold:
                    answer.text, answer.route = self.config.refusal, "refusal"
                if on_text is not None:
                    on_text(answer.text)
            answer.seconds = time.perf_counter() - started
            return answer

        request = GenRequest(prompt, max_tokens, temperature, None if gated else on_text)
        return PendingAnswer(finish, self.scheduler.submit(request))

    def _prompt(self, question: str, history: list[Message], hits: list, max_tokens: int):
        """The prompt within the context budget: the oldest earlier turns go first, then the
        lowest-ranked passages; the latest question is always kept."""
        budget = self.context_tokens - max_tokens
        count = self.scheduler.generator.count_tokens
        trimmed = 0
        while True:
            user = context_question(question, [h.chunk for h in hits]) if hits else question
            prompt = chat(self.system, *((m["role"], m["content"]) for m in history))
            prompt.append({"role": "user", "content": user})
            if count(prompt) <= budget:
                return prompt, hits, trimmed
            if history:
                # Drop the oldest exchange (a user turn and the reply to it).
                cut = 2 if len(history) > 1 and history[1]["role"] == "assistant" else 1
                history, trimmed = history[cut:], trimmed + cut
            elif len(hits) > 1:
                hits = hits[:-1]
            else:
                raise ConversationError(
                    f"the question does not fit the context budget of {self.context_tokens} "
                    f"tokens with {max_tokens} for the answer; shorten it or lower max_tokens"
                )


def _split(messages: list[Message]) -> tuple[str, list[Message]]:
    """The latest user question and the earlier user/assistant turns (system messages are
    replaced by the domain's own system prompt, which the model was trained with)."""
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise ConversationError("the conversation must end with a user message")
    question = turns[-1]["content"].strip()
    if not question:
        raise ConversationError("the last user message is empty")
    return question, turns[:-1]


def _source(number: int, hit) -> Source:
    chunk = hit.chunk
    return Source(
        number=number,
        document=chunk.source,
        title=chunk.title,
        heading=" > ".join(chunk.headings),
        chunk_id=chunk.id,
        score=round(float(hit.dense_score), 4),
        page=chunk.page,
        text=chunk.text,
    )
