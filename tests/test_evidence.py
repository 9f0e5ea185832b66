"""Evidence selection: sentence units of passages, and the sentences chosen for a question."""

from __future__ import annotations

from dataclasses import replace

import pytest

from domainkit.answer.answer_types import asks_for_figure, expected_types, missing_type
from domainkit.answer.compose import compose
from domainkit.answer.evidence import Evidence, EvidenceSelector
from domainkit.config.schema import EvidenceConfig
from domainkit.ingest import Chunk
from domainkit.retrieval.terms import CorpusVocabulary, specific_terms
from domainkit.retrieval.units import text_units
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


def _select(question: str, *passages: Chunk) -> Evidence:
    """The evidence for ``question`` from ``passages`` (in retrieval order)."""
    return _selector(list(passages)).select(question, list(passages))


def _one_passage(text: str, question: str, **chunk) -> Evidence:
    """The evidence for ``question`` from one passage of ``text``."""
    return _select(question, _chunk(text, **chunk))


def test_how_long_asks_for_a_duration_not_for_the_word_long():
    """ "long" in "How long ..." names the kind of value asked for; a line that happens to say
    "for as long as" is not the better match for it."""
    plus = _chunk(
        "With Plus the warranty on speakers is extended for as long as you subscribe.",
        source="plus.md",
    )
    talon = _chunk("Talon is covered by a 2-year limited warranty.", source="talon.md")
    others = [
        _chunk(f"Topic {i} is long and covered elsewhere.", source=f"o{i}.md") for i in range(4)
    ]
    selector = _selector([plus, talon, *others], dense_weight=0.0)
    evidence = selector.select("How long is the warranty on the Talon speaker?", [plus, talon])
    assert evidence.best().text.startswith("Talon is covered")


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


def test_a_users_own_figures_and_plurals_are_not_unknown_terms():
    # "I got 37 overall" or "arrive at 7am" describe the user's case, not a thing the
    # documents must name (a near miss never swaps a figure: "within 45 days" when the
    # documents say 30 has an answer, "no"); "Sundays" is the corpus's "Sunday".
    vocabulary = CorpusVocabulary(
        ["The library opens on Sunday during exams. Pass mark: 40. Model KP-200 only."]
    )
    assert vocabulary.unknown_specific_terms("I got 37 overall. Do I have to resit?") == []
    assert vocabulary.unknown_specific_terms("I arrive at 7am and wrote 2,150 words.") == []
    assert vocabulary.unknown_specific_terms("Is the library open on Sundays?") == []
    assert vocabulary.unknown_specific_terms("Are the KP-200's buttons lit?") == []
    # Codes and names still count, in the plural too.
    assert vocabulary.unknown_specific_terms("Does the KP-900 work? Do Falcons?") == [
        "KP-900",
        "Falcons",
    ]
    assert vocabulary.unknown_specific_terms("What does error E401 mean?") == ["E401"]


def test_title_lines_are_context_not_evidence():
    # A PDF's numbered section title and a web page's breadcrumb state nothing: they are
    # left out of the units and kept as the topic of the lines under them.
    text = (
        "Current students › Exams › Regulations\n"
        "3. What you may bring to your desk\n"
        "- A calculator, only if the exam paper allows one. The only permitted models are "
        "the Casio fx-83GTX and fx-85GTX.\n"
        "Opening hours: 9 to 5\n"
        "Settings > Privacy > Download my data.\n"
    )
    units = text_units(text)
    assert _texts(text) == [
        "- A calculator, only if the exam paper allows one.",
        "The only permitted models are the Casio fx-83GTX and fx-85GTX.",
        "Opening hours: 9 to 5",  # a "label: value" line states something
        "Settings > Privacy > Download my data.",  # a sentence, not a breadcrumb
    ]
    title = text[units[1].heading[0] : units[1].heading[1]]
    assert title == "3. What you may bring to your desk"


def test_a_title_gives_its_sentences_their_topic():
    # Without its title, "Only the Casio ... models" shares nothing with the question.
    exams = _chunk(
        "3. What you may bring to your desk\nPens and a ruler.\n"
        "Only the Casio fx-83GTX and fx-85GTX models are permitted.\n"
        "4. Leaving early\nYou may not leave in the first 30 minutes.\n",
        source="exams.pdf",
        headings=(),
    )
    selector = _selector([exams], dense_weight=0.0)
    evidence = selector.select("What can I bring to my desk in the exam?", [exams])
    assert evidence.best().text in (
        "Pens and a ruler.",
        "Only the Casio fx-83GTX and fx-85GTX models are permitted.",
    )


def test_a_lead_in_or_table_header_is_never_the_answer():
    evidence = _one_passage(
        "| Period | Opening hours |\n| Term time | 08:00 to 22:00 |\n"
        "| Holidays | 09:00 to 17:00 |\n",
        "Library opening hours period",
        source="library.md",
        headings=("Library opening hours",),
    )
    assert evidence.ranked[0].text.startswith("| Period"), "the header scores best lexically"
    assert evidence.best().text.startswith(("| Term time", "| Holidays"))
    assert compose(evidence, evidence.best(), 40).startswith("Period | Opening hours.")
    # Nor the runtime's pick, whatever weight the model's choice has: here the model
    # scores the header highest and the selector ranks it first.
    from domainkit.answer.read import read_scores

    header = [s.lead_in for s in evidence.sentences].index(True)
    logprobs = [-1.0 if i == header else -5.0 for i in range(len(evidence.sentences))]
    for weight in (0.0, 0.5, 1.0):
        line = read_scores(evidence, [*logprobs, -9.0], weight).line
        assert not line.lead_in and line.text.startswith(("| Term time", "| Holidays"))


def test_a_sentence_that_a_later_one_refers_back_to_can_be_the_answer():
    """ "This makes ..." depends on the sentence before it, which states a fact of its own:
    it is the answer when it scores best (it was once passed over for any other line)."""
    text = (
        "Upper and lower bounds are usually stated using the big O notation. "
        "This makes the bounds independent of the computational model used. "
        "Bounds can be proved for the time an algorithm takes."
    )
    chunk = _chunk(text, source="complexity.md", headings=("Bounds",))
    evidence = _selector([chunk]).select("What notation states upper and lower bounds?", [chunk])
    fact = evidence.ranked[0]
    assert fact.text.startswith("Upper and lower bounds"), "the fact scores best"
    assert any(s.lead == (fact.start, fact.end) for s in evidence.sentences), "it is a lead"
    assert evidence.best() is fact
    assert compose(evidence, fact, 40).startswith("Upper and lower bounds")


def test_a_question_asking_for_a_figure_prefers_a_sentence_that_gives_one():
    policy = _chunk(
        "The returns window applies to all speakers bought online. "
        "The returns window is 30 days from delivery.",
        source="returns.md",
        headings=("Returns",),
    )
    question = "How long is the returns window for speakers?"
    plain = _selector([policy], figure_weight=0.0).select(question, [policy])
    typed = _selector([policy], figure_weight=0.3)
    assert plain.best().text.startswith("The returns window applies")
    assert (
        typed.select(question, [policy]).best().text
        == "The returns window is 30 days from delivery."
    )
    untyped = typed.select("Which speakers does the returns window apply to?", [policy])
    assert untyped.best().text.startswith("The returns window applies"), "no figure asked for"
    assert asks_for_figure("What does the family plan cost?")
    assert asks_for_figure("When does the library close?")
    assert not asks_for_figure("Can I return an engraved speaker?")


def test_an_answer_adds_a_second_passages_line_only_when_nearly_as_relevant():
    fees = _chunk(
        "A return within 30 days is free. Opened soundbars carry a 15 percent restocking fee.",
        source="returns.md",
        headings=("Returns",),
    )
    boxes = _chunk(
        "We send a prepaid box for the speaker. Boxes are recycled.",
        source="boxes.md",
        headings=("Boxes",),
    )
    evidence = _select("What does a return of an opened soundbar cost?", fees, boxes)
    best = evidence.best()
    text = compose(evidence, best, 40)
    assert text.startswith(best.text.rstrip(".")) or best.text in text
    assert text.endswith(f"[{best.number}]") and "Boxes are recycled" not in text
    close = [s for s in evidence.ranked if s.chunk is boxes]
    for sentence in close:  # made as relevant as the best line, it joins with its citation
        evidence.ranked[evidence.ranked.index(sentence)] = replace(sentence, score=best.score)
    joined = compose(evidence, best, 40)
    number = evidence.passages.index(boxes) + 1
    assert f"[{best.number}] " in joined and joined.endswith(f"[{number}]")


def test_a_second_passages_close_line_comes_before_the_main_lines_weak_neighbours():
    """Within the word budget, lines join by score: a line of another passage scored just
    under the main one gets in ahead of the main line's barely relevant neighbours, which
    used to take all the words first."""
    main = _chunk(
        "Babai and Luks found the best known algorithm for graph isomorphism. "
        + " ".join(
            f"Remark {n} concerns unrelated matters of notation and history." for n in range(6)
        ),
        source="iso.md",
        headings=("Isomorphism",),
    )
    other = _chunk(
        "Its running time is quasi-polynomial in the number of vertices.",
        source="time.md",
        headings=("Running time",),
    )
    evidence = _select("Who found the best graph isomorphism algorithm?", main, other)
    best = evidence.best()
    assert best.chunk is main
    close = next(s for s in evidence.ranked + evidence.pool if s.chunk is other)
    weak = [s for s in evidence.ranked + evidence.pool if s.chunk is main and s is not best]
    rescored = replace(close, score=0.95 * best.score)
    evidence.ranked = [best, rescored] + [
        replace(s, score=0.3 * best.score) for s in weak if s in evidence.ranked
    ]
    evidence.pool = [replace(s, score=0.3 * best.score) for s in weak if s in evidence.pool]
    text = compose(evidence, best, 25)
    assert "quasi-polynomial" in text, text
    assert text.startswith("Babai and Luks") and text.count("Remark") <= 1


def test_the_answer_opens_with_its_main_line_not_the_lists_first():
    evidence = _one_passage(
        "- Perch: plugged in, hold Microphone and Volume for 15 seconds.\n"
        "- Roost: unplug, hold Play and plug back in.\n"
        "- Talon: hold Power and Volume for 12 seconds.\n",
        "How do I factory reset my Talon?",
        source="faq.md",
        headings=("How do I factory reset my speaker?",),
    )
    best = evidence.best()
    assert best.text.startswith("- Talon")
    text = compose(evidence, best, 40)
    assert text.startswith("Talon: hold Power"), text
    assert text.index("Perch") < text.index("Roost"), "the rest keep the document's order"


@pytest.mark.parametrize(
    ("question", "text", "missing"),
    [
        ("How heavy is the Roost soundbar?", "In the box: Power cable (2 m).", True),
        ("How heavy is the Roost soundbar?", "The Roost weighs 3.2 kg.", False),
        ("How loud can the Talon get, in decibels?", "It plays for 18 hours.", True),
        ("How loud can the Talon get, in decibels?", "Up to 96 dB at 1 m.", False),
        ("What is the battery capacity in mAh?", "It keeps 80% of its capacity.", True),
        ("What does the family plan cost?", "The family plan is Cr 150 a year.", False),
        ("What does the family plan cost?", "The family plan covers six people.", True),
        ("Is there a fee to return it?", "Returns are accepted within 30 days.", False),
        ("How long is the warranty?", "Every Perch has a two-year limited warranty.", False),
        ("How long is the warranty?", "Warranty claims need the order number.", True),
        ("How far ahead must my landlord warn me?", "At least 90 days' written notice.", False),
        ("How many speakers fit in a group?", "Up to twelve speakers.", False),
        # Any of a multi-part question's kinds will do: the answer gives part of it.
        ("What does registration cost, and how long does it last?", "It lasts 3 years.", False),
        # No kind asked for: a yes/no or how-to question never misses one.
        ("Can I return an engraved speaker?", "Engraved items cannot be returned.", False),
    ],
)
def test_an_answer_missing_the_kind_of_value_asked_for_is_recognized(question, text, missing):
    assert missing_type(question, text) is missing


def test_only_unambiguous_phrases_give_a_question_an_expected_type():
    assert [t.name for t in expected_types("How heavy is it?")] == ["weight"]
    for question in (
        "How much ibuprofen can I give for a temperature?",  # a dose, not a temperature
        "Why does the light blink green?",
        "How do I reset the speaker?",
    ):
        assert expected_types(question) == [], question
