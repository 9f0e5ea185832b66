"""Answer generation: the backend protocol, its registry, and the bounded queue that
batches requests.

A backend (``ChatBackend``) answers a batch of ``GenRequest``s, scoring choices where it
can. The built-in ones register by name when ``domainkit.runtime`` is imported: ``local``
(``runtime.local_backend``: transformers in this process, rows generated together) and
``openai`` (``runtime.openai_backend``: an OpenAI-compatible endpoint); others come as
plug-ins of the ``domainkit.backends`` entry-point group. Both report the mean
log-probability of the answer's tokens, the confidence the runtime policy uses for
closed-book answers.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from domainkit.errors import DomainkitError
from domainkit.prompting import Message
from domainkit.registry import Registry

if TYPE_CHECKING:
    from domainkit.config.schema import RuntimeConfig

log = logging.getLogger(__name__)


class BusyError(DomainkitError):
    """Too many requests are waiting; the caller should retry later (HTTP 503)."""


class BackendError(DomainkitError):
    """The generation backend failed (endpoint unreachable, bad model name ...)."""


@dataclass
class GenRequest:
    """One conversation to complete.

    Attributes:
        messages: The full prompt, system message included.
        max_new_tokens: Longest completion.
        temperature: 0 for greedy decoding.
        on_text: Called with each new piece of text as it is generated (streaming).
        choices: Replies to score instead of generating: the backend returns the
            log-probability of each as the whole reply (``GenResult.choice_logprobs``), when
            it can; a backend that cannot generates as usual.
        seed: Makes a sampled reply repeatable (its row's own random generator), whatever
            else shares its batch; None draws a fresh one.
    """

    messages: list[Message]
    max_new_tokens: int
    temperature: float = 0.0
    on_text: Callable[[str], None] | None = None
    choices: list[str] | None = None
    seed: int | None = None
    # Set when the client has gone: a queued request is skipped, a running row stops at
    # the next decoding step and frees its place in the batch.
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    mean_logprob: float | None = None  # None when the backend gives no log-probabilities
    choice_logprobs: list[float] | None = None  # one per request.choices, when scored

    @property
    def confidence(self) -> float | None:
        """Geometric mean of the answer's token probabilities, in (0, 1]."""
        return None if self.mean_logprob is None else math.exp(self.mean_logprob)


class ChatBackend(Protocol):
    """What the runtime needs of a backend that answers: the built-ins ``local`` and
    ``openai``, or a plug-in registered in the ``domainkit.backends`` entry-point group
    (chosen by ``runtime.backend``). A backend that scores ``choices`` one request at a
    time sets ``scores_choices = True``, so the scheduler hands it scored requests one by
    one and each answer is delivered as soon as it is scored."""

    context_limit: int  # tokens of prompt + reply the model accepts

    @classmethod
    def from_runtime(
        cls, settings: RuntimeConfig, *, student: str, adapter: Path | None, device: str, name: str
    ) -> ChatBackend:
        """The backend for a domain: its runtime settings, its student model, the trained
        adapter (None: the base model), the device setting and the domain's name."""
        ...

    def count_tokens(self, messages: list[Message]) -> int: ...

    def count_text(self, text: str) -> int: ...

    def generate(self, requests: list[GenRequest]) -> list[GenResult | Exception]:
        """One result per request, in order (an exception in a request's place fails that
        request only). A backend that can score ``choices`` returns their
        ``choice_logprobs``; one that cannot generates a reply, which the runtime checks."""
        ...


GENERATORS: Registry[type[ChatBackend]] = Registry("runtime backend", "domainkit.backends")


@dataclass
class _Job:
    request: GenRequest
    future: Future = field(default_factory=Future)


class Scheduler:
    """A bounded queue in front of a generator. One worker thread takes every waiting
    request (up to the generator's batch size) and generates them as one batch, each row
    with its own sampling settings; when ``max_queue`` requests are already waiting,
    ``submit`` raises ``BusyError`` at once instead of letting latency grow without bound.
    A request whose caller has gone (``GenRequest.cancelled``) is dropped from the queue, or
    stops within one decoding step when it is already generating.
    """

    def __init__(self, generator, max_batch: int = 8, max_queue: int = 64):
        self.generator = generator
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._running = 0
        self._worker = threading.Thread(target=self._run, name="domainkit-generate", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        """Requests queued, not yet generating."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Requests being generated now."""
        return self._running

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def submit(self, request: GenRequest) -> Future:
        job = _Job(request)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise BusyError(
                f"the server is busy ({self._queue.maxsize} requests waiting); retry shortly"
            ) from None
        return job.future

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._generate(jobs)

    def _generate(self, jobs: list[_Job]) -> None:
        live = []
        for job in jobs:
            if job.request.cancelled.is_set():
                job.future.cancel()
            if job.future.set_running_or_notify_cancel():
                live.append(job)
        if getattr(self.generator, "scores_choices", False):
            # A backend that scores choices scores one request at a time: in one call with
            # others, each answer would wait for the whole batch to be scored.
            for job in [j for j in live if j.request.choices]:
                self._call([job])
            live = [j for j in live if not j.request.choices]
        if live:
            self._call(live)

    def _call(self, live: list[_Job]) -> None:
        self._running = len(live)
        try:
            results = self.generator.generate([j.request for j in live])
        # Handed to the callers, whatever it is (a KeyboardInterrupt inside the backend
        # too: nobody else could catch it in this thread); the worker keeps serving.
        except BaseException as e:
            log.exception("generation failed")
            for job in live:
                job.future.set_exception(e)
            return
        finally:
            self._running = 0
        for job, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
