"""Evidence selection: sentence units of passages, and the sentences chosen for a question."""

from __future__ import annotations

from domainkit.config.schema import EvidenceConfig
from domainkit.ingest import Chunk
from domainkit.retrieval.evidence import EvidenceSelector, text_units
from domainkit.retrieval.terms import CorpusVocabulary, specific_terms
from tests.conftest import HashEmbedder


def _chunk(text: str, source: str = "doc.md", headings=("Warranty",), start: int = 0) -> Chunk:
    return Chunk(
        id=f"{source}:{start}",
        text=text,
        source=source,
        title=source,
        headings=tuple(headings),
        start=start,
        end=start + len(text),
    )


def _texts(text: str) -> list[str]:
    return [" ".join(text[u.start : u.end].split()) for u in text_units(text)]


def test_units_are_sentences_and_list_lines_with_their_lead_in():
    text = (
        "## Returns\n\nYou can return a speaker within 30 days. Refunds take 5 days.\n"
        "You cannot return it if:\n- it was engraved;\n- it is damaged.\n"
    )
    units = text_units(text)
    assert _texts(text) == [
        "You can return a speaker within 30 days.",
        "Refunds take 5 days.",
        "You cannot return it if:",
        "- it was engraved;",
        "- it is damaged.",
    ]
    assert units[3].lead == 2 and units[4].lead == 2  # both items depend on the lead-in
    assert units[0].lead is None


def test_unrelated_items_and_other_sections_are_not_lead_ins():
    text = (
        "## Delivery\n\nExpress delivery takes 1 day. It costs 5 pounds.\n"
        "- Standard delivery is free.\n- Collection is free.\n\n"
        "## Returns\n\nThis policy covers returns. The answer is no. See no. 5 for more.\n"
    )
    units = text_units(text)
    leads = {_texts(text)[i]: u.lead for i, u in enumerate(units)}
    assert leads["It costs 5 pounds."] == 0, "'It' refers to the sentence before"
    assert leads["- Collection is free."] is None, "items without a lead-in stand alone"
    assert leads["This policy covers returns."] is None, "a heading ends what can be referred to"
    assert "The answer is no." in leads and "See no. 5 for more." in leads


def test_hard_wrapped_lines_join_back_into_their_sentence():
    text = (
        "If the problem is only on your own computer or internet connection,\n"
        "the deadline does not move. Email your file to your module leader\n"
        "before 14:00 as evidence that it was finished on time.\n"
    )
    assert _texts(text) == [
        "If the problem is only on your own computer or internet connection, the deadline "
        "does not move.",
        "Email your file to your module leader before 14:00 as evidence that it was finished "
        "on time.",
    ]


def test_table_rows_depend_on_the_header_and_abbreviations_do_not_split():
    text = "| Plan | Price |\n| Plus | £4.99 a month, e.g. billed monthly |\n"
    units = text_units(text)
    assert len(units) == 2 and units[1].lead == 0
    assert _texts("Dr. Smith sees patients on Mondays. Book online.") == [
        "Dr. Smith sees patients on Mondays.",
        "Book online.",
    ]


def _selector(chunks, **settings) -> EvidenceSelector:
    vocabulary = CorpusVocabulary([c.embed_text for c in chunks])
    return EvidenceSelector(HashEmbedder(), vocabulary, EvidenceConfig(**settings))


WARRANTY = _chunk(
    "Register your speaker in the app. The Talon warranty lasts two years from delivery. "
    "Keep your receipt safe. Accessories are covered for one year.",
    source="warranty.md",
)
REPAIRS = _chunk(
    "Repairs usually take 7 to 10 business days. We send a prepaid box for the speaker.",
    source="repairs.md",
    headings=("Repairs",),
)


def test_the_fact_bearing_sentence_wins_and_keeps_its_citation_and_span():
    selector = _selector([WARRANTY, REPAIRS])
    evidence = selector.select("How long is the Talon warranty?", [REPAIRS, WARRANTY])
    best = evidence.best()
    assert best.text == "The Talon warranty lasts two years from delivery."
    assert best.chunk is WARRANTY and evidence.passages[best.number - 1] is WARRANTY
    assert WARRANTY.text[best.start - WARRANTY.start : best.end - WARRANTY.start] == best.text
    assert "[1] warranty.md > Warranty" in evidence.block()  # best passage is cited first


def test_budget_duplicates_and_required_sentences():
    overlap = _chunk(
        "Keep your receipt safe. Accessories are covered for one year.",
        source="warranty.md",
        start=100,
    )
    selector = _selector([WARRANTY, REPAIRS, overlap], max_sentences=2, max_words=40)
    evidence = selector.select("warranty receipt accessories", [WARRANTY, overlap, REPAIRS])
    texts = [s.text for s in evidence.sentences]
    assert len(texts) == 2 and len(set(texts)) == 2
    forced = selector.select(
        "warranty receipt accessories",
        [WARRANTY, REPAIRS],
        required=[(REPAIRS, 0, REPAIRS.text.index(".") + 1)],
    )
    assert "Repairs usually take 7 to 10 business days." in [s.text for s in forced.sentences]


def test_conversational_words_are_not_names():
    assert specific_terms("Hi, I'm wondering how long delivery takes?") == []
    assert specific_terms("Thanks. Does the Talon float? Great. Can I swim?") == ["Talon"]


def test_unknown_names_and_codes_of_a_question():
    vocabulary = CorpusVocabulary(["The Talon KP-200 speaker has a 2-year warranty."])
    assert specific_terms("How long is the warranty on the Falcon KP-900?") == ["Falcon", "KP-900"]
    assert vocabulary.unknown_specific_terms("Is the Talon KP-200 waterproof?") == []
    assert vocabulary.unknown_specific_terms("Is the Falcon KP-900 waterproof?") == [
        "Falcon",
        "KP-900",
    ]
