"""Learning from use, below the HTTP layer: the conversation log (masking, feedback, review
order, purge), verdicts appended to validation.yaml without touching what is there, stale
lines, and answers to repeats of reviewed questions."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import yaml

from domainkit.answer.answers import Answer, EvidenceLine, Source
from domainkit.config import load_domain
from domainkit.eval.items import validation_items
from domainkit.feedback.log import SqliteLog, TooMuchFeedback, UnknownExchange, exchange_of
from domainkit.feedback.review import (
    ReviewError,
    Verdict,
    append_question,
    export_reviews,
    record_verdict,
    stale_reviews,
)
from domainkit.ingest.lines import LineRef
from domainkit.retrieval import build_index, open_retriever

from .conftest import SUPPORT_DOCS, HashEmbedder, write_domain

WARRANTY_LINE = "Every Perch speaker has a two-year limited warranty."
BITCOIN_REFUSED = {
    "question": "Can I pay for my order with Bitcoin?",
    "answerable": False,
    "verdict": "not_in_docs",
    "exchange": "e2",
}


@pytest.fixture
def domain(tmp_path):
    root = write_domain(tmp_path / "support", SUPPORT_DOCS)
    loaded = load_domain(root)
    build_index(loaded, HashEmbedder(), progress=False)
    return loaded


def _line_of(domain, text: str) -> EvidenceLine:
    """The evidence line of the indexed documents whose text is ``text``."""
    from domainkit.feedback.review import search_lines

    found = next(x for x in search_lines(open_retriever(domain), text) if x["text"] == text)
    ref = LineRef.parse(found["id"])
    return EvidenceLine(1, text, ref.source, ref.start, ref.end, 0.9, found["id"])


def _line_review(question: str, line: EvidenceLine) -> dict:
    """A reviewed question whose answer is ``line``, as validation.yaml holds it."""
    return {
        "question": question,
        "answer": line.text,
        "line": line.id,
        "verdict": "line",
        "exchange": "e1",
    }


def _write_reviews(domain, *questions: dict) -> None:
    domain.validation_path.write_text(yaml.safe_dump({"questions": list(questions)}))


def _answer(text: str, route: str = "evidence", line: EvidenceLine | None = None, p=0.9):
    source = Source(1, "warranty.md", "Warranty", "Warranty", "c1", 0.8)
    return Answer(
        text,
        route,
        sources=[source] if line else [],
        evidence=[line] if line else [],
        line=line.id if line else None,
        gate={"dense": 0.5, "p_answerable": p, "threshold": 0.5},
    )


def _with_memory(domain, retriever):
    """An assistant (a fake model) that answers repeats from the build's reviewed answers."""
    from domainkit.answer.memory import ReviewedAnswers
    from domainkit.backends.scheduler import Scheduler
    from domainkit.runtime import Assistant

    from .runtime_support import FakeGenerator

    return Assistant(
        domain.config,
        Scheduler(FakeGenerator(), max_batch=1, max_queue=4),
        retriever=retriever,
        tuned=True,
        memory=ReviewedAnswers.load(domain.layout.reviewed),
    )


def _logged(log, ident, question, answer, history=()):
    messages = [*history, {"role": "user", "content": question}]
    log.record(exchange_of(ident, messages, answer, source="serve", build="b1", policy="auto"))


def test_the_log_masks_personal_data_and_keeps_what_review_needs(tmp_path):
    log = SqliteLog(tmp_path / "log.sqlite")
    history = [
        {"role": "user", "content": "I am jo@example.com, card 4111 1111 1111 1111"},
        {"role": "assistant", "content": "Hello."},
    ]
    line = EvidenceLine(1, WARRANTY_LINE, "warranty.md", 12, 64, 0.9, "warranty.md#12-64@abcd1234")
    answer = _answer(f"{WARRANTY_LINE} [1]", line=line)
    _logged(log, "chatcmpl-1", "Refund to IBAN GB82 WEST 1234 5698 7654 32?", answer, history)
    log.feedback("chatcmpl-1", "down", "wrong_answer", "call me on +44 20 7946 0958")
    got = log.get("chatcmpl-1")
    assert got.question == "Refund to IBAN [IBAN]?"
    assert "[EMAIL]" in got.history[0]["content"] and "[CARD]" in got.history[0]["content"]
    assert got.comment == "call me on [PHONE]" and got.rating == "down"
    assert got.line == line.id and got.evidence[0]["id"] == line.id and got.build == "b1"
    raw = (tmp_path / "log.sqlite").read_bytes() + (tmp_path / "log.sqlite-wal").read_bytes()
    for secret in (b"jo@example.com", b"4111 1111", b"GB82", b"7946"):
        assert secret not in raw, "no personal data reaches the database file"
    with pytest.raises(UnknownExchange):
        log.feedback("chatcmpl-nope", "up", None, None)


def test_review_order_is_thumbs_down_then_least_sure_then_the_rest(tmp_path):
    log = SqliteLog(tmp_path / "log.sqlite")
    _logged(log, "sure", "q sure", _answer("a", p=0.99))
    _logged(log, "unsure", "q unsure", _answer("a", p=0.52))
    _logged(log, "disliked", "q disliked", _answer("a", p=0.99))
    log.record(
        exchange_of(
            "closed",
            [{"role": "user", "content": "q closed"}],
            Answer("x", "closed"),
            source="chat",
            build="b1",
            policy="closed",
        )
    )
    log.feedback("disliked", "down", "should_answer", None)
    log.feedback("sure", "up", None, None)
    assert [e.id for e in log.pending()] == ["disliked", "unsure", "sure", "closed"]
    log.mark_reviewed("disliked", "line")
    assert [e.id for e in log.pending()] == ["unsure", "sure", "closed"]


def test_the_review_list_shows_a_question_asked_many_times_once_and_not_once_reviewed(domain):
    """A support bot is asked the same thing all day: the reviewer sees it once, with how
    often it was asked, and not again once it has a verdict, unless a user disliked an
    answer to it since. A short follow-up is grouped with the same follow-up of the same
    question, not with its words asked elsewhere."""
    from domainkit.feedback.desk import ReviewDesk

    log = SqliteLog(domain.log_path)
    line = _line_of(domain, WARRANTY_LINE)
    warranty = "How long is the Perch warranty?"
    _logged(log, "w1", warranty, _answer("a", line=line, p=0.9))
    _logged(log, "w2", "  how long is the PERCH warranty? ", _answer("a", line=line, p=0.6))
    _logged(log, "w3", warranty, _answer("a", line=line, p=0.95))
    _logged(log, "bitcoin", "Can I pay with Bitcoin?", _answer("a", p=0.99))
    earlier = [{"role": "user", "content": warranty}, {"role": "assistant", "content": "2 y"}]
    _logged(log, "f1", "And the Talon?", _answer("a", p=0.7), history=earlier)
    _logged(log, "f2", "And the Talon?", _answer("a", p=0.7))
    desk = ReviewDesk(domain, log)
    listed = {e["id"]: e for e in desk.pending()}
    assert set(listed) == {"w2", "bitcoin", "f1", "f2"}, "the least sure of the three first"
    assert listed["w2"]["asked"] == 3 and sorted(listed["w2"]["same_question"]) == ["w1", "w3"]
    assert listed["bitcoin"]["asked"] == 1 and listed["f1"]["asked"] == 1
    assert listed["f1"]["follows"] == warranty and listed["f2"]["follows"] is None

    desk.mark(Verdict("w2", "line", line.id))
    assert {e["id"] for e in desk.pending()} == {"bitcoin", "f1", "f2"}
    log.feedback("w3", "down", "wrong_answer", "it is three years now")
    assert {e["id"] for e in desk.pending()} == {"w3", "bitcoin", "f1", "f2"}
    desk.mark(Verdict("f1", "not_in_docs"))
    _logged(log, "f3", "and the talon?", _answer("a", p=0.7), history=earlier)
    assert {e["id"] for e in desk.pending()} == {"w3", "bitcoin", "f2"}


def test_feedback_per_exchange_is_capped(tmp_path):
    log = SqliteLog(tmp_path / "log.sqlite")
    _logged(log, "x", "q", _answer("a"))
    for _ in range(20):
        log.feedback("x", "up", None, None)
    with pytest.raises(TooMuchFeedback):
        log.feedback("x", "down", None, None)


def test_purge_deletes_old_exchanges_and_their_feedback(tmp_path):
    log = SqliteLog(tmp_path / "log.sqlite")
    _logged(log, "old", "q old", _answer("a"))
    log.feedback("old", "down", None, "was here")
    log._db.execute("UPDATE exchanges SET created = '2020-01-01T00:00:00+00:00' WHERE id='old'")
    log._db.commit()
    _logged(log, "new", "q new", _answer("a"))
    assert log.purge_before(datetime.now(timezone.utc) - timedelta(days=1)) == 1
    assert log.get("old") is None and log.get("new") is not None
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_log_that_is_off_keeps_nothing(tmp_path):
    from domainkit.feedback.log import open_log

    root = write_domain(tmp_path / "quiet", SUPPORT_DOCS, runtime={"log": False})
    assert open_log(load_domain(root)) is None


def test_verdicts_append_to_validation_yaml_and_leave_hand_edits_as_they_were(domain):
    hand = (
        "# my questions; keep this comment\n"
        "questions:\n"
        "  - question: Can I pay with Bitcoin?   # asked at the shop\n"
        "    answerable: false\n"
    )
    domain.validation_path.write_text(hand)
    log = SqliteLog(domain.log_path)
    line = _line_of(domain, WARRANTY_LINE)
    _logged(log, "e1", "How long is a Perch covered?", _answer("Something else", line=None))
    _logged(log, "e2", "What colour is the Osprey?", _answer(f"{WARRANTY_LINE} [1]", line=line))
    chunks = open_retriever(domain).index.chunks
    entry = record_verdict(domain, log, Verdict("e1", "line", line.id), chunks)
    assert entry["answer"] == WARRANTY_LINE and entry["spans"] == [WARRANTY_LINE]
    assert entry["source"] == "docs/warranty.md" and entry["exchange"] == "e1"
    record_verdict(domain, log, Verdict("e2", "not_in_docs"), chunks)
    text = domain.validation_path.read_text()
    assert text.startswith(hand), "what was there is kept byte for byte"
    items = validation_items(domain)
    assert [(i.question, i.answerable) for i in items] == [
        ("Can I pay with Bitcoin?", False),
        ("How long is a Perch covered?", True),
        ("What colour is the Osprey?", False),
    ]
    assert items[1].line == line.id and items[1].spans == [WARRANTY_LINE]
    # Marked again: the latest verdict counts.
    record_verdict(domain, log, Verdict("e2", "off_topic"), chunks)
    assert len(validation_items(domain)) == 3
    assert log.get("e2").reviewed == "off_topic"


def test_a_verdict_that_cannot_be_recorded_writes_nothing(domain):
    log = SqliteLog(domain.log_path)
    _logged(log, "e1", "How long is a Perch covered?", _answer("x"))
    chunks = open_retriever(domain).index.chunks
    for verdict, message in (
        (Verdict("nope", "right"), "no exchange"),
        (Verdict("e1", "line", "not-a-line-id"), "not a line id"),
        (Verdict("e1", "line", "warranty.md#0-10@00000000"), "not in the current documents"),
        (Verdict("e1", "answer_text", text=" "), "needs the answer"),
        (Verdict("e1", "right"), "names no line"),
        (Verdict("e1", "sideways"), "unknown verdict"),
    ):
        with pytest.raises(ReviewError, match=message):
            record_verdict(domain, log, verdict, chunks)
    assert not domain.validation_path.exists() and log.get("e1").reviewed is None
    # A list written inline cannot take a block item: refused, and the file left as it was.
    odd = "questions: [{question: 'Is it raining?', answerable: false}]\n"
    domain.validation_path.write_text(odd)
    with pytest.raises(ReviewError, match="would not join"):
        append_question(domain.validation_path, {"question": "Hello there?", "answerable": False})
    assert domain.validation_path.read_text() == odd


def test_right_on_a_refusal_means_rightly_refused_and_a_line_found_by_search_counts(domain):
    log = SqliteLog(domain.log_path)
    _logged(log, "r", "Do you sell gift cards?", Answer("I'm sorry.", "refusal"))
    _logged(log, "s", "What is the fee on an opened soundbar?", _answer("Something"))
    chunks = open_retriever(domain).index.chunks
    assert record_verdict(domain, log, Verdict("r", "right"), chunks)["answerable"] is False
    fee = _line_of(domain, "Opened soundbars carry a 15 percent restocking fee.")
    entry = record_verdict(domain, log, Verdict("s", "line", fee.id), chunks)
    assert entry["answer"].startswith("Opened soundbars") and entry["line"] == fee.id


def test_a_reviewed_short_follow_up_is_written_with_the_question_it_follows(domain):
    """ "And the soundbar?" means nothing alone: validation.yaml gets it as the runtime
    searched for it, so the gate, the repeats and the samples see what the user meant, and
    the same follow-up after another question is another question."""
    log = SqliteLog(domain.log_path)
    line = _line_of(domain, WARRANTY_LINE)
    perch = [
        {"role": "user", "content": "How long is a Perch covered?"},
        {"role": "assistant", "content": "Two years."},
    ]
    fee = [
        {"role": "user", "content": "What is the restocking fee?"},
        {"role": "assistant", "content": "15 percent."},
    ]
    _logged(log, "f1", "And the soundbar?", _answer("x"), history=perch)
    _logged(log, "f2", "And the soundbar?", _answer("x"), history=fee)
    long = "Does that warranty also cover a Perch I bought second-hand?"
    _logged(log, "f3", long, _answer("x"), history=perch)
    chunks = open_retriever(domain).index.chunks
    entry = record_verdict(domain, log, Verdict("f1", "line", line.id), chunks)
    assert entry["question"] == "How long is a Perch covered? And the soundbar?"
    record_verdict(domain, log, Verdict("f2", "not_in_docs"), chunks)
    record_verdict(domain, log, Verdict("f3", "line", line.id), chunks)
    assert [(i.question, i.answerable) for i in validation_items(domain)] == [
        ("How long is a Perch covered? And the soundbar?", True),
        ("What is the restocking fee? And the soundbar?", False),
        (long, True),  # long enough to stand alone, as the runtime takes it
    ]


def test_a_reviewed_line_the_documents_no_longer_hold_is_stale(domain, tmp_path):
    log = SqliteLog(domain.log_path)
    line = _line_of(domain, WARRANTY_LINE)
    _logged(log, "e1", "How long is a Perch covered?", _answer(f"{WARRANTY_LINE} [1]", line=line))
    record_verdict(domain, log, Verdict("e1", "right"), open_retriever(domain).index.chunks)
    assert stale_reviews(domain, open_retriever(domain).index.chunks) == []
    doc = domain.docs_dir / "warranty.md"
    doc.write_text(doc.read_text().replace("two-year", "three-year"))
    build_index(domain, HashEmbedder(), progress=False)
    stale = stale_reviews(domain, open_retriever(domain).index.chunks)
    assert [q["line"] for q in stale] == [line.id]
    out = tmp_path / "reviewed.yaml"
    assert export_reviews(domain, out) == 1
    assert yaml.safe_load(out.read_text())["questions"][0]["exchange"] == "e1"
    with pytest.raises(ReviewError, match="exists"):
        export_reviews(domain, out)


def test_repeats_of_reviewed_questions_get_the_reviewed_line_or_refusal(domain):
    """A repeat names the same things; the same question about another product, however
    similar, is not one. A review whose line changed answers nothing."""
    from domainkit.answer.memory import ReviewedAnswers
    from domainkit.feedback.repeats import build_repeats

    retriever = open_retriever(domain)
    line = _line_of(domain, WARRANTY_LINE)
    _write_reviews(
        domain,
        _line_review("How long is the warranty on a Perch speaker?", line),
        BITCOIN_REFUSED,
    )
    report = build_repeats(domain, retriever)
    assert (report.entries, report.answers, report.refusals) == (2, 1, 1)
    memory = ReviewedAnswers.load(domain.layout.reviewed)
    vocabulary = retriever.vocabulary

    def recalled(question):
        vector = retriever.embedder.embed([question])[0]
        found = memory.recall(question, vector, vocabulary)
        return found.reviewed.verdict if found else None

    assert recalled("How long is the warranty on a Perch speaker?") == "line"
    assert recalled("how long is the warranty on a perch speaker") == "line"
    assert recalled("How long is the warranty on a Talon speaker?") is None, "another name"
    assert recalled("Can I pay for my order with Bitcoin?") == "not_in_docs"
    assert recalled("Where is the nearest Perch shop?") is None, "not similar enough"

    doc = domain.docs_dir / "warranty.md"
    doc.write_text(doc.read_text().replace("two-year", "three-year"))
    build_index(domain, HashEmbedder(), progress=False)
    report = build_repeats(domain, open_retriever(domain))
    assert report.stale == [line.id] and report.answers == 0


def test_reviewed_questions_become_samples_in_the_runtimes_format(domain):
    """A line verdict: the runtime's evidence block for the question with the reviewed line
    in it, and a reply quoting that line; a "not in the documents" verdict: the refusal;
    an answer in the reviewer's words: no sample."""
    from domainkit.feedback.repeats import build_repeats
    from domainkit.prompting import parse_quote
    from domainkit.synth.sample import Sample
    from domainkit.utils.atomic import read_jsonl

    retriever = open_retriever(domain)
    line = _line_of(domain, WARRANTY_LINE)
    _write_reviews(
        domain,
        _line_review("Is there any guarantee if it breaks?", line),
        BITCOIN_REFUSED,
        {"question": "Do you ship to Mars?", "answer": "No.", "exchange": "e3"},
    )
    report = build_repeats(domain, retriever)
    samples = [Sample.from_row(r) for r in read_jsonl(domain.layout.reviewed_samples)]
    assert report.samples == len(samples) == 2
    quoted, refused = samples
    system, user, reply = quoted.messages
    assert system["content"] == domain.config.render_system_prompt()
    assert user["content"].startswith("Evidence:\n[1]")
    assert "Question: Is there any guarantee if it breaks?" in user["content"]
    assert WARRANTY_LINE in user["content"], "the reviewed line is in the evidence"
    quote = parse_quote(reply["content"])
    assert quote is not None and quote.text == WARRANTY_LINE
    assert quoted.generator == "reviewed" and quoted.source == "warranty.md"
    assert quoted.meta["line"] == line.id and quoted.chunk_id in quoted.meta["passages"]
    assert refused.messages[-1]["content"] == domain.config.refusal
    assert refused.messages[1]["content"].startswith("Evidence:")
    assert refused.meta["verdict"] == "not_in_docs" and refused.chunk_id is None

    from domainkit.eval.report import _learning_lines
    from domainkit.eval.runner import _learning

    report_lines = _learning_lines(_learning(domain, [], {}))
    assert any(x.startswith("- training samples: 2 ") for x in report_lines), report_lines


def test_a_later_verdict_on_the_same_question_replaces_the_earlier_one(domain, tmp_path):
    """The same question asked twice and reviewed twice (a reviewer correcting themselves):
    the later verdict is the one repeats, the gate's validation and --export use, and the
    two are not a pair of questions that must not match (that pair, at similarity 1, would
    push the repeat cut to its ceiling)."""
    from domainkit.answer.memory import ReviewedAnswers
    from domainkit.feedback.repeats import _threshold, build_repeats

    retriever = open_retriever(domain)
    line = _line_of(domain, WARRANTY_LINE)
    question = "How long is the warranty on a Perch speaker?"
    refused = {"question": question, "answerable": False, "verdict": "not_in_docs"}
    _write_reviews(
        domain,
        {**refused, "exchange": "e1"},
        {**_line_review(f"  {question.lower()} ", line), "exchange": "e2"},
        {**refused, "question": "Can I pay with Bitcoin?", "exchange": "e3"},
    )
    report = build_repeats(domain, retriever)
    assert (report.entries, report.answers, report.refusals) == (2, 1, 1)
    memory = ReviewedAnswers.load(domain.layout.reviewed)
    vector = retriever.embedder.embed([question])[0]
    found = memory.recall(question, vector, retriever.vocabulary)
    assert found is not None and found.reviewed.verdict == "line"
    assert _threshold(domain, retriever, memory.entries, memory.vectors)[1].startswith("0 pairs")
    reviewed = [i for i in validation_items(domain) if "warranty" in i.question.lower()]
    assert [i.answerable for i in reviewed] == [True]
    assert export_reviews(domain, tmp_path / "out.yaml") == 2

    # Hand-written questions (no exchange) are the user's own: never merged or dropped.
    text = domain.validation_path.read_text()
    hand = {"question": question, "answer": "Two years.", "answerable": True}
    data = yaml.safe_load(text)
    data["questions"].insert(0, hand)
    domain.validation_path.write_text(yaml.safe_dump(data))
    assert len([i for i in validation_items(domain) if "warranty" in i.question.lower()]) == 2


def test_a_plural_names_the_same_thing_but_a_figure_must_match_as_written():
    from domainkit.answer.memory import same_things

    assert same_things(
        "Is there anyone to talk to on the phone on a Sunday?",
        "Can I ring customer support on Sundays?",
    )
    assert same_things("How many Talons can I link?", "How many Talon speakers can I link?")
    assert not same_things("How many Talons can I link?", "How many Perch speakers can I link?")
    assert not same_things("Is the KR-500 loud?", "Is the KR-500s loud?")
    assert same_things("Do you ship to Swiss addresses?", "Do you ship to Swiss homes?")


def test_a_rewording_is_answered_from_the_review_but_a_short_follow_up_is_not(domain):
    """A reviewed question asked again on its own gets the reviewed line; asked as a short
    follow-up it leans on the conversation, so it is answered as if never reviewed."""
    from domainkit.feedback.repeats import build_repeats

    retriever = open_retriever(domain)
    line = _line_of(domain, WARRANTY_LINE)
    _write_reviews(domain, _line_review("How long is the warranty?", line))
    build_repeats(domain, retriever)
    assistant = _with_memory(domain, retriever)
    question = {"role": "user", "content": "How long is the warranty?"}
    alone = assistant.answer([question])
    assert alone.route == "reviewed" and alone.text.startswith(WARRANTY_LINE)
    history = [
        {"role": "user", "content": "Tell me about the Talon speaker."},
        {"role": "assistant", "content": "The Talon is a portable speaker."},
    ]
    assert assistant.answer([*history, question]).route != "reviewed"


def test_a_verdict_of_several_lines_is_one_answer_and_a_repeat_gets_them_all(domain):
    """An answer no single line holds (a rule here, its exception there) is marked with each
    of its lines; a repeat is answered with all of them, in the order given, each cited."""
    from domainkit.feedback.repeats import build_repeats

    log = SqliteLog(domain.log_path)
    rule = _line_of(domain, "You can return any product within 30 days for a full refund.")
    fee = _line_of(domain, "Opened soundbars carry a 15 percent restocking fee.")
    question = "Do I get all my money back if I return an opened soundbar?"
    _logged(log, "e1", question, _answer("Something else"))
    chunks = open_retriever(domain).index.chunks
    entry = record_verdict(
        domain, log, Verdict("e1", "line", rule.id, also=(fee.id, rule.id)), chunks
    )
    assert entry["line"] == rule.id and entry["lines"] == [rule.id, fee.id]
    assert entry["answer"] == f"{rule.text} {fee.text}" and "spans" not in entry
    [item] = validation_items(domain)
    assert item.reference == entry["answer"] and not item.spans
    too_many = Verdict("e1", "line", rule.id, also=("a", "b", "c", "d"))
    with pytest.raises(ReviewError, match="at most 4 lines"):
        record_verdict(domain, log, too_many, chunks)
    with pytest.raises(ReviewError, match="not a line id"):
        record_verdict(domain, log, Verdict("e1", "line", rule.id, also=("nope",)), chunks)
    with pytest.raises(ReviewError, match="further lines go with a verdict of line"):
        record_verdict(domain, log, Verdict("e1", "not_in_docs", also=(fee.id,)), chunks)
    assert len(validation_items(domain)) == 1, "a refused verdict writes nothing"

    retriever = open_retriever(domain)
    report = build_repeats(domain, retriever)
    assert (report.answers, report.text_only) == (1, 0)
    assistant = _with_memory(domain, retriever)
    answer = assistant.answer([{"role": "user", "content": question}])
    assert answer.route == "reviewed" and answer.lines == [rule.id, fee.id]
    assert rule.text in answer.text and fee.text in answer.text
    assert answer.text.index(rule.text) < answer.text.index(fee.text)
    assert {s.document for s in answer.sources} == {"returns.md"}


def test_below_the_sure_similarity_a_repeat_needs_its_own_retrieval_to_agree(domain):
    """Between the calibrated cut and ``SURE``, a line answers a repeat only if its search
    found the line's passage, and a refusal repeats only if its evidence is no better; at
    ``SURE`` or above, similarity alone decides."""
    import numpy as np

    from domainkit.answer.memory import SURE, Reviewed, ReviewedAnswers

    line = _line_of(domain, WARRANTY_LINE)
    passage = next(c for c in open_retriever(domain).index.chunks if line.text in c.text)
    entries = [
        Reviewed("How long is the warranty?", "line", line.id, [line.id], [passage.to_dict()]),
        Reviewed("Can I pay with Bitcoin?", "not_in_docs", dense=0.30),
    ]
    memory = ReviewedAnswers(entries, np.eye(2, 4, dtype=np.float32), threshold=0.70)
    vocabulary = open_retriever(domain).vocabulary

    def recalled(row: int, similarity: float, **found) -> str | None:
        vector = np.zeros(4, dtype=np.float32)
        vector[row], vector[3] = similarity, np.sqrt(1 - similarity**2)
        question = entries[row].question
        hit = memory.recall(question, vector, vocabulary, **found)
        return hit.reviewed.verdict if hit else None

    middle, sure = (0.70 + SURE) / 2, min(1.0, SURE + 0.02)
    assert recalled(0, middle, retrieved={"another"}) is None
    assert recalled(0, middle, retrieved={passage.id}) == "line"
    assert recalled(0, sure, retrieved={"another"}) == "line"
    assert recalled(1, middle, dense=0.60) is None, "its evidence is much better"
    assert recalled(1, middle, dense=0.32) == "not_in_docs"
    assert recalled(1, sure, dense=0.60) == "not_in_docs"


def test_below_the_sure_similarity_any_passage_of_a_reviewed_answer_confirms_a_repeat(domain):
    """A reviewed answer of several lines is confirmed by the repeat's own search finding any
    of their passages, not only the opening line's."""
    import numpy as np

    from domainkit.answer.memory import SURE, Reviewed, ReviewedAnswers

    chunks = open_retriever(domain).index.chunks
    rule = _line_of(domain, "You can return any product within 30 days for a full refund.")
    fee = _line_of(domain, "Opened soundbars carry a 15 percent restocking fee.")
    passages = [next(c for c in chunks if x.text in c.text) for x in (rule, fee)]
    assert passages[0].id != passages[1].id
    question = "Can I return an opened soundbar for a full refund?"
    entry = Reviewed(question, "line", rule.id, [rule.id, fee.id], [c.to_dict() for c in passages])
    memory = ReviewedAnswers([entry], np.eye(1, 2, dtype=np.float32), threshold=0.70)
    middle = (0.70 + SURE) / 2
    vector = np.array([middle, np.sqrt(1 - middle**2)], dtype=np.float32)
    vocabulary = open_retriever(domain).vocabulary

    def recalled(retrieved):
        return memory.recall(question, vector, vocabulary, retrieved=retrieved) is not None

    assert recalled({passages[1].id}), "the exception's passage was found"
    assert recalled({passages[0].id})
    assert not recalled({"another"})


def test_a_refusal_repeats_when_the_closest_line_is_one_the_reviewer_saw(domain):
    """A reworded question can find the same lines closer than the reviewed one did; those
    lines were in front of the reviewer who said the documents do not answer it, so the
    refusal repeats. A closer line the reviewer did not see may answer it: no repeat."""
    import numpy as np

    from domainkit.answer.memory import Reviewed, ReviewedAnswers
    from domainkit.feedback.repeats import build_repeats

    retriever = open_retriever(domain)
    question = "Does the Perch speaker come with a carrying case?"
    _write_reviews(
        domain,
        {"question": question, "answerable": False, "verdict": "not_in_docs", "exchange": "e"},
    )
    build_repeats(domain, retriever)
    [entry] = ReviewedAnswers.load(domain.layout.reviewed).entries
    assert WARRANTY_LINE in {x.text for x in _lines_of(domain, entry.seen)}, "what it was shown"

    memory = ReviewedAnswers([entry], np.eye(1, 2, dtype=np.float32), threshold=0.70)
    vector = np.array([0.8, 0.6], dtype=np.float32)  # between the cut and SURE
    vocabulary = retriever.vocabulary
    others = (
        "You can return any product within 30 days for a full refund.",
        "Opened soundbars carry a 15 percent restocking fee.",
        "Hold the power button for ten seconds and retry the update.",
    )
    seen = entry.seen[0]
    unseen = next(
        x.id for x in map(lambda t: _line_of(domain, t), others) if x.id not in entry.seen
    )
    better = entry.dense + 0.2

    def recalled(closest):
        hit = memory.recall(question, vector, vocabulary, dense=better, closest=closest)
        return hit.reviewed.verdict if hit else None

    assert recalled(seen) == "not_in_docs"
    assert recalled(unseen) is None
    assert recalled(None) is None
    old = Reviewed(question, "not_in_docs", dense=entry.dense)  # a build from before `seen`
    assert (
        ReviewedAnswers([old], memory.vectors, 0.70).recall(
            question, vector, vocabulary, dense=better, closest=seen
        )
        is None
    )


def _lines_of(domain, ids):
    chunks = open_retriever(domain).index.chunks
    return [EvidenceLine(1, LineRef.parse(i).find(chunks)[1], "", 0, 0, 0.0, i) for i in ids]


def test_a_refusal_repeats_for_a_name_the_documents_never_mention_but_a_line_does_not(domain):
    """ "ATM" where the reviewed question said "cash machine": a name the corpus never mentions
    cannot make a refused question answerable, so the refusal repeats; a name it does mention
    can, and a reviewed line never answers a question about something it does not know."""
    import numpy as np

    from domainkit.answer.memory import Reviewed, ReviewedAnswers

    line = _line_of(domain, WARRANTY_LINE)
    passage = next(c for c in open_retriever(domain).index.chunks if line.text in c.text)
    entries = [
        Reviewed("Is there a cash machine in the shop?", "not_in_docs", dense=0.30),
        Reviewed("How long is the warranty?", "line", line.id, [line.id], [passage.to_dict()]),
    ]
    memory = ReviewedAnswers(entries, np.eye(2, 4, dtype=np.float32), threshold=0.70)
    vocabulary = open_retriever(domain).vocabulary

    def recalled(row: int, question: str) -> str | None:
        vector = np.zeros(4, dtype=np.float32)
        vector[row], vector[3] = 0.9, np.sqrt(1 - 0.9**2)
        hit = memory.recall(question, vector, vocabulary, retrieved={passage.id}, dense=0.3)
        return hit.reviewed.verdict if hit else None

    assert recalled(0, "Is there an ATM in the shop?") == "not_in_docs"
    assert recalled(0, "Is there a cash machine in the Zephyr shop?") == "not_in_docs"
    assert recalled(0, "Is there a Perch in the shop?") is None, "the corpus knows the Perch"
    assert recalled(1, "How long is the warranty on a Zephyr?") is None
    assert recalled(1, "How long is the warranty, please?") == "line"


def test_the_repeat_cut_rests_on_all_must_not_match_pairs_not_the_top_two():
    from domainkit.feedback.repeats import BOUNDS, DEFAULT_THRESHOLD, MIN_PAIRS, repeat_cut

    rng = np.random.default_rng(0)
    typical = list(rng.normal(0.35, 0.12, 67))
    # Two near-paraphrases among 69 decide the empirical 98th percentile on their own.
    cut, how = repeat_cut(typical + [0.874, 0.937])
    assert np.quantile(typical + [0.874, 0.937], 0.98) > 0.75
    assert BOUNDS[0] <= cut < 0.72 and "69 pairs" in how
    # Pairs that are often close give a cut above them; too few pairs keep the default.
    assert repeat_cut(list(rng.normal(0.75, 0.05, 60)))[0] > 0.83
    assert repeat_cut([0.9] * (MIN_PAIRS - 1))[0] == DEFAULT_THRESHOLD
    assert repeat_cut([0.5] * MIN_PAIRS)[0] == BOUNDS[0]
