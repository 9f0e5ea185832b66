"""What a chat backend is: the requests it takes, the results it gives, and its registry.

One protocol serves everything in domainkit that asks a model for replies: the runtime's
answers, the synth teacher, the eval judge (the teacher) and preference tuning's rejected
replies. The built-ins are ``local`` (transformers in this process, ``backends.local``) and
``openai`` (any OpenAI-compatible endpoint, ``backends.endpoint``); others come as plug-ins
of the ``domainkit.backends`` entry-point group.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from domainkit.errors import DomainkitError
from domainkit.prompting import STOP_MARKERS, Message
from domainkit.registry import Registry

if TYPE_CHECKING:
    from domainkit.config.schema import RuntimeConfig, TeacherConfig


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
        top_p: Nucleus sampling threshold, when sampling.
        stop: Text at which the reply ends (not included). By default the prompt format's
            own block markers: a small model that writes one has started imitating the
            prompt. The teacher, whose replies may hold such lines, passes none.
    """

    messages: list[Message]
    max_new_tokens: int
    temperature: float = 0.0
    on_text: Callable[[str], None] | None = None
    choices: list[str] | None = None
    seed: int | None = None
    top_p: float = 0.95
    stop: tuple[str, ...] = STOP_MARKERS
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
    """A model that answers conversations: the built-ins ``local`` and ``openai``, or a
    plug-in's. A backend may also offer the optional capabilities below
    (``ScoresChoices``, ``JoinsRunningBatch``) by implementing their methods."""

    context_limit: int  # tokens of prompt + reply the model accepts

    def count_tokens(self, messages: list[Message]) -> int: ...

    def count_text(self, text: str) -> int: ...

    def generate(self, requests: list[GenRequest]) -> list[GenResult | Exception]:
        """One result per request, in order (an exception in a request's place fails that
        request only). A backend that can score ``choices`` returns their
        ``choice_logprobs``; one that cannot generates a reply, which the runtime checks."""
        ...


class BackendKind(Protocol):
    """What the ``BACKENDS`` registry holds: a class (or any factory) that builds a backend,
    registered by name; plug-ins register in the ``domainkit.backends`` entry-point group.
    The runtime builds one with ``from_runtime`` (chosen by ``runtime.backend``), the
    teacher with ``from_teacher``."""

    def from_runtime(
        self,
        settings: RuntimeConfig,
        *,
        student: str,
        adapter: Path | None,
        device: str,
        name: str,
    ) -> ChatBackend:
        """The backend for a domain: its runtime settings, its student model, the trained
        adapter (None: the base model), the device setting and the domain's name."""
        ...

    def from_teacher(self, settings: TeacherConfig) -> ChatBackend:
        """The backend for the synth teacher (``synth.teacher``)."""
        ...


@runtime_checkable
class ScoresChoices(Protocol):
    """Optional: the backend scores ``GenRequest.choices`` (the log-probability of each as
    the whole reply) rather than generating. The runtime then asks it to score requests one
    at a time, so each answer is delivered as soon as it is scored, and needs no check of a
    generated quote."""

    def score_choices(self, request: GenRequest) -> GenResult:
        """``request``'s choices scored: ``GenResult.choice_logprobs``, one per choice."""
        ...


class RunningBatch(Protocol):
    """Rows being generated together (``JoinsRunningBatch.decoder``); the scheduler adds
    rows while there is room and runs one decoding step at a time."""

    @property
    def free(self) -> int:
        """Rows that may still join."""
        ...

    def __len__(self) -> int: ...

    def add(self, row: object) -> None:
        """Queue a row made by ``JoinsRunningBatch.row``; it joins at a later step."""
        ...

    def step(self) -> None:
        """One decoding step of every row (a finished row leaves and reports its result)."""
        ...


@runtime_checkable
class JoinsRunningBatch(Protocol):
    """Optional: requests join a running batch between decoding steps and leave it when done
    (continuous batching, ``backends.decoding``). Without it, the scheduler hands waiting
    requests to ``generate`` together."""

    def decoder(self, max_rows: int, join_tokens: int | None = None) -> RunningBatch:
        """A batch that rows join and leave between decoding steps."""
        ...

    def row(self, request: GenRequest, done: Callable[[GenResult], None]) -> object | None:
        """``request`` as a row of a ``decoder`` batch; ``done`` receives its result. None
        when the request was answered at once (``done`` has been called)."""
        ...


BACKENDS: Registry[BackendKind] = Registry("chat backend", "domainkit.backends")
