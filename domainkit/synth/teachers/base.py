"""The teacher interface, its registry, teachers that are chat backends, and the on-disk
call cache."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from domainkit.backends import BACKENDS, BackendError, ChatBackend, GenRequest
from domainkit.config.schema import TeacherConfig
from domainkit.errors import DomainkitError, UnknownNameError
from domainkit.registry import Registry
from domainkit.utils.hashing import text_hash

Conversation = list[dict[str, str]]


class TeacherError(DomainkitError):
    """The teacher cannot be used: endpoint down, wrong model, bad key."""


@dataclass(frozen=True)
class Sampling:
    """How one request is sampled; part of the cache key."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 192
    seed: int = 0


class Teacher(Protocol):
    """Writes replies to chat conversations, many at a time."""

    id: str  # identifies backend and model; part of the cache key
    batch_size: int  # conversations worth sending in one ``generate`` call

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[str]: ...


TEACHERS: Registry[Callable[[TeacherConfig], Teacher]] = Registry("teacher", "domainkit.teachers")


def make_teacher(settings: TeacherConfig) -> Teacher:
    """The teacher ``synth.teacher.backend`` names: a registered teacher (``hf``, ``openai``
    or a plug-in of ``domainkit.teachers``), else any chat backend of that name (a plug-in
    of ``domainkit.backends`` serves as teacher too, through its ``from_teacher``)."""
    name = settings.backend
    if name in TEACHERS or TEACHERS.failure(name):
        return TEACHERS.get(name)(settings)
    if name in BACKENDS or BACKENDS.failure(name):
        backend = BACKENDS.get(name)
        return BackendTeacher(
            f"{name}:{settings.model}", settings.batch_size, lambda: backend.from_teacher(settings)
        )
    names = sorted(set(TEACHERS.names()) | set(BACKENDS.names()))
    raise UnknownNameError(f"unknown teacher {name!r}; available: {', '.join(names)}")


class BackendTeacher:
    """A teacher that is a chat backend.

    Args:
        id: Names backend and model; part of the call cache's key.
        batch_size: Conversations sent to the backend in one call.
        backend: Makes the backend, on first use (a local model is loaded only when a
            reply is not in the cache).
    """

    def __init__(self, id: str, batch_size: int, backend: Callable[[], ChatBackend]):
        self.id, self.batch_size, self._make = id, batch_size, backend

    @cached_property
    def backend(self) -> ChatBackend:
        return self._make()

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        replies: list[str] = []
        step = max(1, self.batch_size)
        for start in range(0, len(conversations), step):
            requests = [_request(c, sampling) for c in conversations[start : start + step]]
            try:
                results = self.backend.generate(requests)
            except BackendError as e:  # the whole call failed, not one request
                raise TeacherError(str(e)) from e
            for result in results:
                if isinstance(result, BackendError):
                    raise TeacherError(str(result)) from result
                if isinstance(result, Exception):
                    raise result
                replies.append(result.text)
        return replies


def _request(conversation: Conversation, sampling: Sampling) -> GenRequest:
    """A teacher call as a backend request: no stop markers (a teacher writes "Question:"
    lines), and a seed of its own from the sampling seed and the conversation, so that a
    reply does not depend on what else shares its batch."""
    seed = int(text_hash(json.dumps([sampling.seed, conversation]), length=8), 16) % 2**31
    return GenRequest(
        messages=conversation,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=seed,
        stop=(),
    )


class CallCache:
    """Finished teacher calls keyed by (teacher, conversation, sampling), in SQLite.

    Every reply is committed as soon as its batch returns, so an interrupted run loses at most
    the batch in flight and a rerun asks the teacher only for what is missing.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, reply TEXT)")
        self._lock = threading.Lock()

    @staticmethod
    def key(teacher_id: str, conversation: Conversation, sampling: Sampling) -> str:
        payload = json.dumps([teacher_id, conversation, asdict(sampling)], sort_keys=True)
        return text_hash(payload, length=32)

    def get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, reply FROM calls WHERE key IN ({marks})", part
                )
                found.update(rows.fetchall())
        return found

    def put_many(self, items: dict[str, str]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?)", items.items())

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def retain(self, keys: set[str]) -> int:
        """Delete every call but ``keys``; how many went."""
        with self._lock, self._db:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM kept")
            self._db.executemany("INSERT INTO kept VALUES (?)", ((k,) for k in keys))
            sql = "DELETE FROM calls WHERE key NOT IN (SELECT key FROM kept)"
            return self._db.execute(sql).rowcount

    def close(self) -> None:
        self._db.close()


class CachedTeacher:
    """A teacher behind the call cache, reporting progress as batches finish.

    Args:
        teacher: The backend.
        cache: Where finished calls are kept.
        on_progress: Called with the number of conversations just answered or found cached.
    """

    def __init__(
        self, teacher: Teacher, cache: CallCache, on_progress: Callable[[int], None] | None = None
    ):
        self.teacher = teacher
        self.cache = cache
        self.on_progress = on_progress or (lambda n: None)
        self.calls_made = 0
        self.calls_cached = 0

    @property
    def id(self) -> str:
        return self.teacher.id

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        keys = [CallCache.key(self.teacher.id, c, sampling) for c in conversations]
        replies = self.cache.get_many(list(dict.fromkeys(keys)))
        self.calls_cached += sum(1 for k in keys if k in replies)
        self.on_progress(sum(1 for k in keys if k in replies))
        missing = list({k: i for i, k in enumerate(keys) if k not in replies}.values())
        step = max(1, self.teacher.batch_size)
        for start in range(0, len(missing), step):
            rows = missing[start : start + step]
            fresh = self.teacher.generate([conversations[i] for i in rows], sampling)
            new = {keys[i]: reply for i, reply in zip(rows, fresh, strict=True)}
            # An empty reply is a failure worth retrying next run, not an answer to keep.
            self.cache.put_many({k: reply for k, reply in new.items() if reply.strip()})
            replies.update(new)
            self.calls_made += len(rows)
            self.on_progress(len(rows))
        return [replies[k] for k in keys]
