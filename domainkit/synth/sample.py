"""A training sample in chat ``messages`` form, with its provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from domainkit.utils.hashing import json_hash


@dataclass
class Sample:
    """One instruction sample.

    Attributes:
        messages: Chat messages (system, user, assistant, ...).
        generator: What made it: self_chat, qa, raft, refusal or user.
        chunk_id: The chunk it was seeded from (decides its split); None for user data.
        source: The document of that chunk.
        teacher: The teacher that wrote it.
        scores: Filter scores (grounding, cosine, lexical, ...).
        meta: Anything else worth keeping (answer origin, passages shown, gold position).
    """

    messages: list[dict[str, str]]
    generator: str
    chunk_id: str | None
    source: str | None
    teacher: str
    scores: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return json_hash([self.generator, self.chunk_id, self.messages])

    @property
    def question(self) -> str:
        """The first user turn (for RAFT samples, just the question)."""
        return self.meta.get("question") or next(
            (m["content"] for m in self.messages if m["role"] == "user"), ""
        )

    @property
    def answers(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    def to_row(self) -> dict:
        return {
            "id": self.id,
            "messages": self.messages,
            "generator": self.generator,
            "chunk_id": self.chunk_id,
            "source": self.source,
            "teacher": self.teacher,
            "scores": json.dumps(self.scores, sort_keys=True),
            "meta": json.dumps(self.meta, sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_row(cls, row: dict) -> Sample:
        return cls(
            messages=row["messages"],
            generator=row["generator"],
            chunk_id=row["chunk_id"],
            source=row["source"],
            teacher=row["teacher"],
            scores=json.loads(row["scores"]),
            meta=json.loads(row["meta"]),
        )


@dataclass
class Rejection:
    """A candidate a filter removed, kept for inspection in rejected.jsonl."""

    filter: str
    generator: str
    chunk_id: str | None
    detail: str
    content: dict

    def to_row(self) -> dict:
        return {
            "filter": self.filter,
            "generator": self.generator,
            "chunk_id": self.chunk_id,
            "detail": self.detail,
            **self.content,
        }
