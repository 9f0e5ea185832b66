"""Eval's metrics on hand-made answers: right, wrong and refused, spans, citations,
yes / no / maybe labels, faithfulness, and the headline's rounding."""

from __future__ import annotations

from domainkit.answer.answers import Answer, Source
from domainkit.config.loading import available_recipes, load_recipe
from domainkit.eval import metrics as m
from domainkit.eval.items import Item
from domainkit.eval.scoring import score

REFUSAL = "I'm sorry, the documents I have do not cover that."


def test_a_correct_a_wrong_and_a_refused_answer():
    reference = "Two years, from the date of delivery."
    correct = "Your Perch is covered for two years from delivery [1]."
    wrong = "The warranty lasts five years."
    refused = REFUSAL
    assert m.is_correct(correct, reference, REFUSAL)
    assert not m.is_correct(wrong, reference, REFUSAL)
    assert not m.is_correct(refused, reference, REFUSAL) and m.is_refusal(refused, REFUSAL)
    assert m.is_refusal("Sorry, I couldn't find that in the manuals.")
    assert not m.is_refusal(correct, REFUSAL)
    assert m.token_f1(correct, reference) > m.token_f1(wrong, reference)
    assert m.key_fact_recall(correct, reference) == 0.75  # two, years, delivery; not "date"
    assert m.key_fact_recall(wrong, reference) < 0.5


def test_a_documents_own_words_are_not_a_refusal():
    """A warranty corpus says "the warranty does not cover": an answer that quotes it is an
    answer (it was scored as a refusal, right or wrong, and counted as refusing when the
    question was unanswerable); a reply that says the documents do not cover it refuses."""
    quoted = (
        "Flat fees: Perch £49, Roost £119. [1] A product with damage the warranty does not "
        "cover, such as liquid damage, is repaired at the out-of-warranty price. [2]"
    )
    assert not m.is_refusal(quoted, REFUSAL)
    assert m.is_correct(quoted, "A flat fee of £119.", REFUSAL)
    assert not m.is_refusal("Accidental damage is not covered. Nor is wear. [1]", REFUSAL)
    assert not m.is_refusal("The Party Link does not say its name aloud. [1]", REFUSAL)
    for reply in (
        "The documents do not cover that.",
        "The provided context doesn't mention a CEO.",
        "I'm sorry, but the passages do not say how heavy the Roost is.",
        "That is not in the documents.",
        "I don't know.",
        "I couldn't find that in the manuals. Please ask support.",
    ):
        assert m.is_refusal(reply), reply
    assert m.is_refusal(f"{REFUSAL} This is general information, not advice.", REFUSAL)
    for name in available_recipes():  # each recipe's own refusal
        wording = load_recipe(name).refusal
        assert m.is_refusal(f"{wording} A disclaimer follows."), name


def test_yes_no_maybe_and_faithfulness():
    assert m.is_correct("Yes. The trial showed a benefit.", "yes")
    assert not m.is_correct("No, it did not.", "yes")
    assert m.label_of("The evidence is mixed, so maybe.") == "maybe"
    passage = "Opened soundbars carry a 15 percent restocking fee."
    assert m.support("Opened soundbars have a 15 percent restocking fee [1].", [passage]) >= 0.8
    assert m.support("Refunds arrive by carrier pigeon within a fortnight.", [passage]) < 0.3


def test_spans_median_words_and_citations():
    spans = ["time and storage"]
    assert m.is_correct("The two resources are time and storage [1].", "x", spans=spans)
    assert not m.is_correct("Time, and also storage.", "x", spans=spans)
    assert not m.is_correct("distime and storage", "x", spans=spans), "whole words only"
    items = [
        Item("How long is the warranty?", "two years", True),
        Item("Is there a gift card?", None, False),
    ]
    cited = [Source(1, "warranty.md", "", "", "c1", 0.5, text="A two-year warranty covers it.")]
    answers = [
        Answer("The warranty lasts two years from delivery [1].", "answer", cited),
        Answer(REFUSAL, "refusal"),
    ]
    row = score(items, answers, REFUSAL, seconds=0.5)
    assert row["accuracy"] == 1.0 and row["refusal_accuracy"] == 1.0
    assert row["median_words"] == 8 and row["citation_correct"] == 1.0
    wrong_citation = [Source(1, "faq.md", "", "", "c2", 0.5, text="Shipping takes 3 days.")]
    answers[0] = Answer("The warranty lasts two years from delivery [1].", "answer", wrong_citation)
    assert score(items, answers, REFUSAL, seconds=0.5)["citation_correct"] == 0.0


def test_the_headline_rounds_as_the_table_does():
    """21 of 40 right is 0.525: the table prints 0.53, so the headline says 53%, not 52%."""
    from domainkit.eval.runner import RUNTIME, _headline

    results = {"eval.yaml": {RUNTIME: {"accuracy": 21 / 40, "refusal_accuracy": 1 / 8}}}
    assert f"{21 / 40:.2f}" == "0.53" and f"{1 / 8:.2f}" == "0.12"
    assert _headline(results) == f"accuracy: {RUNTIME} 53%; unanswerable refused 12%"
