"""A killed evaluation resumes where it stopped.

Evaluation answers a few hundred questions under several conditions, twice over (base and
tuned models): on a CPU that is a quarter of a build. Every model reply it generates is kept
as soon as its batch returns, keyed by the model and the exact request, so a rerun after a
kill asks the model only for what is missing. The replies are the model's raw readings;
the gate and the reader weight are applied afresh, so a resumed run scores exactly what an
unbroken one does. ``domainkit eval`` deletes the store once the report is published (a
finished evaluation measures its timings anew next time); a build keeps it, pruned to the
replies of its run, so a rebuild whose model did not change (an edited document, the
adapter kept) asks the model only for the requests that changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from domainkit.backends.base import (
    ChatBackend,
    GenRequest,
    GenResult,
    JoinsRunningBatch,
    RunningBatch,
    ScoresChoices,
)
from domainkit.synth.teachers.base import CallCache
from domainkit.utils.hashing import file_hash, text_hash


def resuming(backend: ChatBackend, cache: CallCache, model_id: str) -> ResumingBackend:
    """``backend`` behind the store of replies, with the same optional capabilities."""
    bases: list[type] = []
    if isinstance(backend, ScoresChoices):
        bases.append(_ResumingScorer)
    if isinstance(backend, JoinsRunningBatch):
        bases.append(_ResumingRows)
    kind = type("Resuming" + type(backend).__name__, tuple(bases or [ResumingBackend]), {})
    return kind(backend, cache, model_id)


class ResumingBackend:
    """A chat backend whose finished replies are kept in ``cache`` under ``model_id``.

    Only deterministic requests are kept (greedy, as evaluation runs); anything else goes
    straight to the backend.
    """

    def __init__(self, backend: ChatBackend, cache: CallCache, model_id: str):
        self.backend, self.cache, self.model_id = backend, cache, model_id
        self.context_limit = backend.context_limit
        self.reused = 0  # replies from an earlier run (not those this run asked twice)
        self.used: set[str] = set()  # every key this run asked for
        self._written: set[str] = set()

    def count_tokens(self, messages) -> int:
        return self.backend.count_tokens(messages)

    def count_text(self, text: str) -> int:
        return self.backend.count_text(text)

    def _kept(self, key: str | None) -> GenResult | None:
        found = self.cache.get_many([key]) if key is not None else {}
        if key not in found:
            return None
        self.reused += key not in self._written
        return GenResult(**json.loads(found[key]))

    def _keep(self, key: str | None, result) -> None:
        if key is not None and isinstance(result, GenResult):
            self._put({key: json.dumps(asdict(result))})

    def _put(self, replies: dict[str, str]) -> None:
        self.cache.put_many(replies)
        self._written.update(replies)

    def generate(self, requests: list[GenRequest]) -> list[GenResult | Exception]:
        keys = [self._key(r) for r in requests]
        kept = self.cache.get_many([k for k in keys if k is not None])
        results: dict[int, GenResult | Exception] = {}
        for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
            if key is not None and key in kept:
                result = GenResult(**json.loads(kept[key]))
                results[i] = result
                self.reused += key not in self._written
                if request.on_text is not None:
                    request.on_text(result.text)
        missing = [i for i in range(len(requests)) if i not in results]
        if missing:
            fresh = self.backend.generate([requests[i] for i in missing])
            self._put(
                {
                    key: json.dumps(asdict(result))
                    for key, result in zip([keys[i] for i in missing], fresh, strict=True)
                    if key is not None and isinstance(result, GenResult)
                }
            )
            results.update(zip(missing, fresh, strict=True))
        return [results[i] for i in range(len(requests))]

    def _key(self, request: GenRequest) -> str | None:
        if request.temperature > 0:
            return None
        key = text_hash(json.dumps(self._payload(request), sort_keys=True), length=32)
        self.used.add(key)
        return key

    def _payload(self, request: GenRequest) -> list:
        return [
            self.model_id,
            request.messages,
            request.choices,
            request.max_new_tokens,
        ]


def model_id(student: str, adapter: Path | None, code: str) -> str:
    """What a reply depends on besides its request: the model, the adapter's files and the
    code that generates (a fix there must not be answered from the old run)."""
    parts = [student, code]
    if adapter is not None:
        parts += [file_hash(p) for p in sorted(adapter.iterdir()) if p.is_file()]
    return text_hash(*parts, length=32)


class _ResumingScorer(ResumingBackend):
    """Scored choices kept as well (``ScoresChoices``)."""

    def score_choices(self, request: GenRequest) -> GenResult:
        backend = self.backend
        assert isinstance(backend, ScoresChoices)
        key = self._key(request)
        result = self._kept(key)
        if result is None:
            result = backend.score_choices(request)
            self._keep(key, result)
        return result


class _ResumingRows(ResumingBackend):
    """Rows of the backend's running batch (``JoinsRunningBatch``), their results kept."""

    def decoder(self, max_rows: int, join_tokens: int | None = None) -> RunningBatch:
        backend = self.backend
        assert isinstance(backend, JoinsRunningBatch)
        return backend.decoder(max_rows, join_tokens=join_tokens)

    def row(self, request: GenRequest, done: Callable[[GenResult], None]) -> object | None:
        """``request`` as a row of the backend's continuous batch, its result kept when it
        is done; None when a kept reply answered it at once (``done`` has it)."""
        backend = self.backend
        assert isinstance(backend, JoinsRunningBatch)
        key = self._key(request)
        result = self._kept(key)
        if result is not None:
            if request.on_text is not None:
                request.on_text(result.text)
            done(result)
            return None

        def keep(result: GenResult) -> None:
            self._keep(key, result)
            done(result)

        return backend.row(request, keep)
