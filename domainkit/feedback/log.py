"""The conversation log: every exchange ``serve``, ``chat`` and ``ask`` answer, with the
feedback users give and the reviewers' verdicts.

It lives under the domain folder, outside the build folder, so rebuilds keep it. Anything
a user wrote (the question, earlier turns, a comment) and the answer are masked for
personal data before they are written (``utils.pii``); the evidence lines are the
documents' own text. ``ConversationLog`` is the small interface the rest of domainkit uses;
``SqliteLog`` is the one-machine implementation: SQLite in WAL mode, each write its own
transaction, so a server killed at any moment loses no row it acknowledged and leaves a
database that opens cleanly.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from domainkit.answer.answers import Answer
from domainkit.config.loading import Domain
from domainkit.prompting import Message
from domainkit.utils.pii import mask_pii

RATINGS = ("up", "down")
# Why an answer got a thumbs down: the web page's choices and the API's ``reason`` values.
REASONS = {
    "wrong_answer": "wrong answer",
    "should_refuse": "should have said it does not know",
    "should_answer": "should have answered",
    "wrong_source": "wrong source",
}
MAX_COMMENT_CHARS = 2000
# Feedback rows one exchange may have: a client re-rating in a loop cannot grow the log.
MAX_FEEDBACK_PER_EXCHANGE = 20
# Earlier turns kept with an exchange: what a follow-up depends on, not a whole chat.
HISTORY_TURNS = 6


@dataclass
class Exchange:
    """One answered question.

    Attributes:
        id: The chat completion's id (``chatcmpl-...``); feedback names it.
        created: When it was answered (ISO 8601, UTC).
        source: ``serve``, ``chat`` or ``ask``.
        build: The build that answered (``BUILD/build.json``'s last fingerprint).
        question: The question, personal data masked.
        history: The earlier turns it may depend on, masked.
        answer: The answer's text, masked.
        route: How it was answered (``answer``, ``evidence``, ``refusal``, ``reviewed`` ...).
        policy: The policy it was answered under.
        line: The id of the line the answer opened with.
        lines: The ids of all the lines the answer was made of.
        sources: The cited passages (number, document, heading, chunk id, page).
        evidence: The evidence lines, each with its line id.
        gate: The gate's features, probability and threshold.
        seconds: How long answering took.
        rating: The latest feedback on it, when there is any (``up`` or ``down``), its
            reason and comment.
        reviewed: The reviewer's verdict, once there is one.
    """

    id: str
    created: str
    source: str
    build: str
    question: str
    history: list[Message]
    answer: str
    route: str
    policy: str
    line: str | None
    lines: list[str]
    sources: list[dict]
    evidence: list[dict]
    gate: dict | None
    seconds: float
    rating: str | None = None
    reason: str | None = None
    comment: str | None = None
    reviewed: str | None = None
    feedback_at: str | None = field(default=None, repr=False)

    @property
    def margin(self) -> float | None:
        """How far the gate's probability was from its threshold (None without a gate)."""
        gate = self.gate or {}
        if "p_answerable" not in gate or "threshold" not in gate:
            return None
        return float(gate["p_answerable"]) - float(gate["threshold"])

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("feedback_at")
        data["margin"] = self.margin
        return data


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def exchange_of(
    ident: str,
    messages: Sequence[Message],
    answer: Answer,
    *,
    source: str,
    build: str,
    policy: str,
) -> Exchange:
    """The log's record of ``answer`` to the conversation ``messages``, masked."""
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    question = turns[-1]["content"] if turns else ""
    history = [
        {"role": m["role"], "content": mask_pii(m["content"])} for m in turns[:-1][-HISTORY_TURNS:]
    ]
    return Exchange(
        id=ident,
        created=now(),
        source=source,
        build=build,
        question=mask_pii(question.strip()),
        history=history,
        answer=mask_pii(answer.text),
        route=answer.route,
        policy=policy,
        line=answer.line,
        lines=list(answer.lines),
        sources=[
            {
                "number": s.number,
                "document": s.document,
                "heading": s.heading,
                "chunk_id": s.chunk_id,
                "page": s.page,
            }
            for s in answer.sources
        ],
        evidence=[
            {"id": e.id, "number": e.number, "text": e.text, "document": e.document}
            for e in answer.evidence
        ],
        gate=answer.gate,
        seconds=round(answer.seconds, 3),
    )


class UnknownExchange(KeyError):
    """No exchange has the id given."""


class TooMuchFeedback(ValueError):
    """An exchange has as many feedback rows as it may have."""


class ConversationLog(Protocol):
    """Where exchanges, feedback and verdicts are kept. ``SqliteLog`` is one; a server
    database can be another."""

    def record(self, exchange: Exchange) -> None:
        """Keep an exchange (its id is new)."""
        ...

    def feedback(self, ident: str, rating: str, reason: str | None, comment: str | None) -> int:
        """Keep feedback on an exchange; the number of feedback rows it now has.

        Raises:
            UnknownExchange: No exchange has that id.
            TooMuchFeedback: It has ``MAX_FEEDBACK_PER_EXCHANGE`` already.
        """
        ...

    def get(self, ident: str) -> Exchange | None: ...

    def pending(self, limit: int = 100) -> list[Exchange]:
        """Exchanges not reviewed yet, in review order: a thumbs down first, then those
        the gate was least sure of, then the rest, newest first."""
        ...

    def mark_reviewed(self, ident: str, verdict: str) -> None: ...

    def purge_before(self, when: datetime) -> int:
        """Delete exchanges (with their feedback) answered before ``when``; how many."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    record TEXT NOT NULL,
    margin REAL,
    reviewed TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_created ON exchanges(created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL REFERENCES exchanges(id) ON DELETE CASCADE,
    created TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    reason TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_exchange ON feedback(exchange);
"""


class SqliteLog:
    """The conversation log in one SQLite file (WAL mode, each write one transaction).

    Args:
        path: The database file; its folder is created.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable through a process kill
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def record(self, exchange: Exchange) -> None:
        payload = json.dumps(exchange.to_dict(), ensure_ascii=False)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO exchanges (id, created, record, margin) VALUES (?, ?, ?, ?)",
                (exchange.id, exchange.created, payload, exchange.margin),
            )

    def feedback(self, ident: str, rating: str, reason: str | None, comment: str | None) -> int:
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {', '.join(RATINGS)}")
        comment = mask_pii(comment.strip())[:MAX_COMMENT_CHARS] if comment else None
        with self._lock, self._db:
            if (
                self._db.execute("SELECT 1 FROM exchanges WHERE id = ?", (ident,)).fetchone()
                is None
            ):
                raise UnknownExchange(ident)
            (given,) = self._db.execute(
                "SELECT COUNT(*) FROM feedback WHERE exchange = ?", (ident,)
            ).fetchone()
            if given >= MAX_FEEDBACK_PER_EXCHANGE:
                raise TooMuchFeedback(
                    f"answer {ident} has {given} ratings already; no more are kept"
                )
            self._db.execute(
                "INSERT INTO feedback (exchange, created, rating, reason, comment) "
                "VALUES (?, ?, ?, ?, ?)",
                (ident, now(), rating, reason, comment),
            )
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM feedback WHERE exchange = ?", (ident,)
            ).fetchone()
        return int(count)

    def get(self, ident: str) -> Exchange | None:
        rows = self._select("WHERE e.id = ?", (ident,))
        return rows[0] if rows else None

    def pending(self, limit: int = 100) -> list[Exchange]:
        rows = self._select("WHERE e.reviewed IS NULL", ())
        down = [r for r in rows if r.rating == "down"]
        unsure = [r for r in rows if r.rating != "down" and r.margin is not None]
        rest = [r for r in rows if r.rating != "down" and r.margin is None]
        down.sort(key=lambda r: r.feedback_at or "", reverse=True)
        unsure.sort(key=lambda r: abs(r.margin or 0.0))
        rest.sort(key=lambda r: r.created, reverse=True)
        return (down + unsure + rest)[:limit]

    def mark_reviewed(self, ident: str, verdict: str) -> None:
        with self._lock, self._db:
            done = self._db.execute(
                "UPDATE exchanges SET reviewed = ? WHERE id = ?", (verdict, ident)
            )
            if done.rowcount == 0:
                raise UnknownExchange(ident)

    def purge_before(self, when: datetime) -> int:
        cutoff = when.astimezone(timezone.utc).isoformat(timespec="seconds")
        with self._lock, self._db:
            done = self._db.execute("DELETE FROM exchanges WHERE created < ?", (cutoff,))
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # deleted text leaves the WAL
            self._db.execute("VACUUM")  # and the free pages of the file
        return done.rowcount

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM exchanges").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select(self, where: str, args: tuple) -> list[Exchange]:
        query = (
            "SELECT e.record, e.reviewed, f.rating, f.reason, f.comment, f.created "
            "FROM exchanges e LEFT JOIN feedback f ON f.id = "
            "(SELECT MAX(id) FROM feedback WHERE exchange = e.id) " + where
        )
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        out = []
        for record, reviewed, rating, reason, comment, at in rows:
            data = json.loads(record)
            data.pop("margin", None)
            data.setdefault("lines", [data["line"]] if data.get("line") else [])
            data |= {"reviewed": reviewed, "rating": rating, "reason": reason}
            data |= {"comment": comment, "feedback_at": at}
            out.append(Exchange(**data))
        return out


def open_log(domain: Domain) -> SqliteLog | None:
    """The domain's conversation log, or None when ``runtime.log`` turns it off."""
    if not domain.config.runtime.log:
        return None
    return SqliteLog(domain.log_path)


def build_id(domain: Domain) -> str:
    """Which build answered: the last stage's fingerprint in ``build.json``, else ``-``."""
    path = domain.layout.build_record
    try:
        stages = json.loads(path.read_text(encoding="utf-8")).get("stages", {})
    except (OSError, ValueError):
        return "-"
    finished = [s for s in stages.values() if "fingerprint" in s]
    if not finished:
        return "-"
    last = max(finished, key=lambda s: s.get("finished", ""))
    return str(last["fingerprint"])


def new_id() -> str:
    """An exchange id in the chat completions' format."""
    import uuid

    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def parse_date(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (expected YYYY-MM-DD)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


__all__ = [
    "REASONS",
    "ConversationLog",
    "Exchange",
    "SqliteLog",
    "TooMuchFeedback",
    "UnknownExchange",
    "build_id",
    "exchange_of",
    "new_id",
    "open_log",
    "parse_date",
]
