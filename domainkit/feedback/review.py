"""A reviewer's verdicts on logged exchanges, kept in the domain's ``validation.yaml``.

A verdict says what the answer to a user's question should have been: the answer was
right, this line of the documents answers it (picked from the evidence shown or found by
searching the documents), this text does, the documents do not answer it, or it is off
topic. Each becomes a question in ``validation.yaml``, the ``eval.yaml`` format, with the
line's text as its reference and span, the line's id and the exchange it came from; the
build then calibrates the gate on it, answers its repeats and writes it as a training sample
(``docs/concepts/reviewed-questions.md``). Verdicts are appended to the file as text, so whatever a
person wrote there stays byte for byte; a question marked again counts by its latest verdict.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml
from pydantic import ValidationError

from domainkit.answer.retrieve import search_query
from domainkit.config.evalset import EvalSet, load_eval_set
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.feedback.log import ConversationLog, Exchange
from domainkit.ingest import Chunk
from domainkit.ingest.lines import LineRef, line_id
from domainkit.prompting import readable
from domainkit.retrieval.units import text_units

VERDICTS = ("right", "line", "answer_text", "not_in_docs", "off_topic")
# Most lines one verdict may name: an answer, not a passage.
MAX_LINES = 4
_CITATION = re.compile(r"\s*\[\d{1,3}\]")
HEADER = (
    "# Validation questions: calibrate the answerability gate and answer repeats\n"
    "# (eval.yaml's format). `domainkit review` appends reviewed users' questions below;\n"
    "# hand-written questions are welcome too.\n"
)


class ReviewError(DomainkitError):
    """A verdict that cannot be recorded as given (nothing is written)."""


@dataclass(frozen=True)
class Verdict:
    """A reviewer's verdict on one exchange.

    Attributes:
        exchange: The exchange's id.
        kind: One of ``VERDICTS``.
        line: The answering line's id (``line``).
        text: The answer in the reviewer's words (``answer_text``).
        also: Further lines the answer needs, in order after ``line`` (``line``): an answer
            no single line holds, such as a rule and its exception.
    """

    exchange: str
    kind: str
    line: str | None = None
    text: str | None = None
    also: tuple[str, ...] = ()

    @property
    def lines(self) -> list[str]:
        """Every line of a ``line`` verdict, each once, in order."""
        return list(dict.fromkeys([self.line, *self.also])) if self.line else []


def record_verdict(
    domain: Domain, log: ConversationLog, verdict: Verdict, chunks: Sequence[Chunk]
) -> dict:
    """Append the verdict to ``validation.yaml`` as a question and mark the exchange
    reviewed; returns the question written.

    Args:
        chunks: The domain's indexed passages, to find a line that was not in the evidence.

    Raises:
        ReviewError: An unknown exchange or line, or a verdict missing its line or text.
    """
    exchange = log.get(verdict.exchange)
    if exchange is None:
        raise ReviewError(f"no exchange {verdict.exchange!r} in {domain.log_path}")
    entry = question_of(exchange, verdict, chunks, docs_dir=domain.config.docs_dir)
    append_question(domain.validation_path, entry)
    log.mark_reviewed(exchange.id, entry["verdict"])
    return entry


def question_of(
    exchange: Exchange, verdict: Verdict, chunks: Sequence[Chunk], docs_dir: str = "docs"
) -> dict:
    """The ``validation.yaml`` question a verdict makes of an exchange."""
    if verdict.kind not in VERDICTS:
        raise ReviewError(f"unknown verdict {verdict.kind!r}: expected one of {VERDICTS}")
    # A short follow-up is written as the runtime searched for it: it means nothing alone.
    entry: dict = {"question": search_query(exchange.question, exchange.history)}
    kind, line = verdict.kind, verdict.line
    if verdict.also and kind != "line":
        raise ReviewError(f"further lines go with a verdict of line, not {kind}")
    if kind == "right" and exchange.route == "refusal":
        entry["answerable"] = False  # rightly refused
    elif kind in ("not_in_docs", "off_topic"):
        entry["answerable"] = False
    elif kind == "answer_text":
        if not verdict.text or not verdict.text.strip():
            raise ReviewError("--answer-text needs the answer's text")
        entry["answer"] = " ".join(verdict.text.split())
    elif kind == "right":
        if not exchange.line:
            raise ReviewError(
                "the answer names no line to call right; mark the line that answers it"
            )
        document, _ = _line(exchange, exchange.line, chunks)
        # The answer as given was right: it is the reference, and its lines answer repeats.
        entry["answer"] = _CITATION.sub("", exchange.answer).strip()
        entry["source"] = f"{docs_dir.rstrip('/')}/{document}"
        entry["line"] = exchange.line
        entry["lines"] = list(exchange.lines or [exchange.line])
    else:
        if not line:
            raise ReviewError("--line needs a line id (from `domainkit review --json` or --search)")
        if len(verdict.lines) > MAX_LINES:
            raise ReviewError(f"at most {MAX_LINES} lines make one answer")
        found = [_line(exchange, x, chunks) for x in verdict.lines]
        texts = [readable(text) for _, text in found]
        # One line is the answer's span; several are its key facts (any one alone is not).
        entry |= {"answer": " ".join(texts)} | ({"spans": texts} if len(texts) == 1 else {})
        entry["source"] = f"{docs_dir.rstrip('/')}/{found[0][0]}"
        entry["line"] = line
        if len(verdict.lines) > 1:
            entry["lines"] = verdict.lines
    entry |= {
        "verdict": kind,
        "exchange": exchange.id,
        "reviewed": date.today().isoformat(),
    }
    return entry


def _line(exchange: Exchange, line: str, chunks: Sequence[Chunk]) -> tuple[str, str]:
    """(document, text) of a line: from the exchange's evidence, else the documents."""
    for shown in exchange.evidence:
        if shown.get("id") == line:
            return shown["document"], shown["text"]
    try:
        ref = LineRef.parse(line)
    except ValueError as e:
        raise ReviewError(str(e)) from None
    found = ref.find(chunks)
    if found is None:
        raise ReviewError(
            f"line {line} is not in the current documents (changed or gone); search again"
        )
    return ref.source, found[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer of ``path`` at a time (two reviewers appending together)."""
    import fcntl
    import hashlib
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives outside the user's domain folder, keyed by the file it guards.
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"domainkit-review-{key}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_question(path: Path, entry: dict) -> None:
    """Append one question to an eval.yaml-format file as text, leaving every byte
    already there as it was; the file is checked to parse to the old questions plus this
    one before it replaces the old (atomically).

    Raises:
        ReviewError: The file's ``questions`` list is not the last block, so text
            appended would not join it; the file is left as it was.
    """
    from domainkit.utils.atomic import atomic_write_text

    with _locked(path):
        old = path.read_text(encoding="utf-8") if path.is_file() else HEADER + "questions:\n"
        before = _questions(path, old)
        body = old if old.endswith("\n") else old + "\n"
        if "questions" not in (yaml.safe_load(old) or {}):
            body += "questions:\n"
        indent = _item_indent(body)
        block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=96)
        new = body + "".join(f"{indent}{line}\n" for line in block.splitlines())
        try:
            after = _questions(path, new)
        except ReviewError:
            after = []
        if after[:-1] != before or len(after) != len(before) + 1:
            raise ReviewError(
                f"{path}: a question appended at the end would not join its `questions:` "
                "list (is another key after it, or the list written inline?); nothing was "
                "written"
            )
        atomic_write_text(path, new)


def _questions(path: Path, text: str) -> list[dict]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ReviewError(f"{path}: not valid YAML ({e}); fix it before reviewing") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions") or [], list):
        raise ReviewError(f"{path}: expected a mapping with a `questions:` list")
    questions = list(data.get("questions") or [])
    try:
        EvalSet.model_validate({**data, "questions": questions})
    except ValidationError as e:
        raise ReviewError(f"{path}: not in eval.yaml's format ({e.errors()[0]['msg']})") from None
    return questions


def _item_indent(text: str) -> str:
    """The indentation of the ``questions`` list's own items, none when it has none."""
    root = yaml.compose(text)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "questions" and isinstance(value, yaml.SequenceNode) and value.value:
                return " " * value.start_mark.column
    return ""


def reviewed_questions(domain: Domain) -> list[dict]:
    """The reviewed questions of ``validation.yaml``, the latest verdict per exchange and
    per question (``EvalSet.current``)."""
    questions = load_eval_set(domain.validation_path).current()
    return [q.model_dump(exclude_none=True) for q in questions if q.exchange]


def export_reviews(domain: Domain, target: Path) -> int:
    """Copy the reviewed questions to a new eval.yaml-format file; how many."""
    if target.exists():
        raise ReviewError(f"{target} exists; export to a new file")
    questions = reviewed_questions(domain)
    from domainkit.utils.atomic import atomic_write_text

    text = yaml.safe_dump({"questions": questions}, sort_keys=False, allow_unicode=True)
    atomic_write_text(target, text)
    return len(questions)


def stale_reviews(domain: Domain, chunks: Sequence[Chunk]) -> list[dict]:
    """Reviewed questions with a line no longer in the documents as it was."""
    stale = []
    for q in reviewed_questions(domain):
        lines = q.get("lines") or ([q["line"]] if q.get("line") else [])
        if any(LineRef.parse(line).find(chunks) is None for line in lines):
            stale.append(q)
    return stale


def search_lines(retriever, query: str, passages: int = 3) -> list[dict]:
    """The lines of the passages that best match ``query``, each with its line id: what
    a reviewer picks from when the evidence shown did not hold the answer."""
    out = []
    for hit in retriever.search(query, k=passages):
        chunk = hit.chunk
        for unit in text_units(chunk.text):
            start, end = chunk.start + unit.start, chunk.start + unit.end
            out.append(
                {
                    "id": line_id(chunk, start, end),
                    "text": chunk.text[unit.start : unit.end],
                    "document": chunk.source,
                    "heading": " > ".join(chunk.headings),
                }
            )
    return out
