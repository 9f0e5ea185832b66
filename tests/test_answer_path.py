"""The answer path through the assistant: policy routes, the checked quote, the gate, history
trimming within the context budget, usage and confidence."""

from __future__ import annotations

import pytest

from domainkit.answer.gate import Gate
from domainkit.backends import GenRequest
from domainkit.backends.scheduler import Scheduler
from domainkit.runtime import Assistant

from .runtime_support import NAMES_ONLY, WARRANTY_Q, FakeGenerator, ask, model_calls, with_settings


def test_the_answer_is_a_checked_quote_from_the_evidence_with_its_citation(assistant):
    pieces: list[str] = []
    answer = assistant.answer(ask(WARRANTY_Q), policy="rag", on_text=pieces.append)
    assert answer.route == "answer"
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert answer.evidence and all(e.document and e.end > e.start for e in answer.evidence)
    quoted = answer.quote.removeprefix("Quote: ")
    assert any(quoted == " ".join(e.text.split()) for e in answer.evidence)
    import re

    for words, cited in re.findall(r"(.+?) \[(\d+)\](?: |$)", answer.text):
        passage = " ".join(answer.sources[int(cited) - 1].text.split())
        for sentence in words.split(". "):
            assert sentence.rstrip(".") in passage, "only the cited passage's own words"
    assert "".join(pieces) == answer.text, "a checked answer arrives in one piece"
    assert set(answer.gate) >= {"dense", "unknown", "model_refusal", "p_answerable"}


def test_usage_counts_the_tokens_of_the_answer_a_client_receives(assistant):
    """A scored reply generates no tokens, but the client receives the composed answer (or
    the refusal): usage counts its tokens, as the billing of any OpenAI client expects."""
    tokenizer = assistant.scheduler.generator.tokenizer
    for gate in (NAMES_ONLY, Gate(weights=NAMES_ONLY.weights, bias=-50.0)):
        answer = with_settings(assistant, gate=gate).answer(ask(WARRANTY_Q), policy="auto")
        expected = len(tokenizer(answer.text, add_special_tokens=False)["input_ids"])
        assert answer.prompt_tokens > 0 and answer.completion_tokens == expected > 0
    assert answer.route == "refusal"


def test_the_gate_refuses_a_near_miss_with_an_unknown_name(assistant):
    gated = with_settings(assistant, gate=NAMES_ONLY)
    miss = gated.answer(ask("How long is the warranty on a Falcon speaker?"))
    assert miss.route == "refusal" and miss.text == assistant.config.refusal
    assert miss.sources == [] and miss.gate["unknown"] == 1
    hit = gated.answer(ask(WARRANTY_Q))
    assert hit.route in ("answer", "evidence") and hit.sources


def test_the_gate_refuses_an_answer_without_the_kind_of_value_asked_for(assistant):
    """The Talon's battery sentences are on topic, but none gives a weight: the answer would
    be a playing time, so the gate refuses, while the same gate answers the playing time."""
    gated = with_settings(
        assistant, gate=Gate(weights={**NAMES_ONLY.weights, "missing_type": -10.0}, bias=5.0)
    )
    miss = gated.answer(ask("How heavy is the Talon portable speaker?"))
    assert miss.gate["missing_type"] == 1 and miss.route == "refusal"
    hit = gated.answer(ask("How long does the Talon portable speaker play on a charge?"))
    assert hit.gate["missing_type"] == 0 and hit.route != "refusal"


def test_auto_runs_no_model_when_its_reading_cannot_change_the_answer(assistant):
    """Calibrated to the selector's line (reader weight 0) and a gate without the model's
    refusal, ``auto`` answers without the model, exactly as when it reads."""

    def made(gate):
        made = with_settings(assistant, gate=gate)
        made.reader_weight = 0.0
        return made

    reads = Gate(weights={**NAMES_ONLY.weights, "model_refusal": -1e-9}, bias=5.0)
    with model_calls(assistant) as calls:
        for question in (WARRANTY_Q, "How long is the warranty on a Falcon speaker?"):
            read = made(reads).answer(ask(question))
            assert calls, "a gate that weighs the model's refusal reads"
            calls.clear()
            unread = made(NAMES_ONLY)
            assert not unread.reads_matter()
            answer = unread.answer(ask(question))
            assert calls == [], "no model call"
            assert (answer.text, answer.route, answer.sources) == (
                read.text,
                read.route,
                read.sources,
            )
            assert answer.gate["p_answerable"] == pytest.approx(read.gate["p_answerable"])
            if question == WARRANTY_Q:
                # The line is the selector's, not the model's: the user is told so, and no
                # model quote is shown for a model that was never asked.
                assert answer.route == "evidence" and answer.quote is None
                assert read.route == "evidence" and read.quote, "read: the model's own quote"
        assert answer.route == "refusal"
        assert made(NAMES_ONLY).recheck(answer, gated=True).text == answer.text
    # A backend that generates (an endpoint) is always read: its quote is the pick and its
    # refusal is final, whatever the reader weight.
    refusing = FakeGenerator(reply=assistant.config.refusal)
    endpoint = Assistant(
        assistant.config,
        Scheduler(refusing, max_batch=1, max_queue=4),
        settings=assistant.settings,
        retriever=assistant.retriever,
        tuned=True,
        gate=NAMES_ONLY,
        reader_weight=0.0,
    )
    assert endpoint.reads_matter()
    assert endpoint.answer(ask(WARRANTY_Q)).route == "refusal"


def test_evidence_policy_uses_no_model_and_other_policies(assistant):
    with model_calls(assistant) as calls:
        evidence = assistant.answer(ask(WARRANTY_Q), policy="evidence")
        assert calls == [] and evidence.route == "evidence"
        assert "Every Perch speaker has a two-year limited warranty." in evidence.text
        naive = assistant.answer(ask("zebra opera quantum"), policy="naive")
        assert naive.route == "rag" and len(naive.sources) == 2, "naive uses the top passages"
        closed = assistant.answer(ask(WARRANTY_Q), policy="closed")
        assert closed.route == "closed" and closed.sources == []
    assert len(calls) == 2


def test_a_generated_quote_that_does_not_check_out_is_replaced_by_the_evidence(runtime_domain):
    """A backend that cannot score choices generates the reply; a fabricated figure in it
    never reaches the user: the evidence's best sentence does."""
    from domainkit.retrieval import open_retriever

    config = runtime_domain.config
    generator = FakeGenerator(reply="Quote: Every Perch speaker has a ten-year limited warranty.")
    scheduler = Scheduler(generator, max_batch=1, max_queue=4)
    assistant = Assistant(config, scheduler, retriever=open_retriever(runtime_domain), tuned=True)
    answer = assistant.answer(ask(WARRANTY_Q), policy="rag")
    assert answer.route == "evidence" and "ten-year" not in answer.text
    assert answer.text.startswith("Every Perch speaker has a two-year limited warranty.")
    generator.reply = "Quote: Every Perch speaker has a two-year limited warranty"
    assert assistant.answer(ask(WARRANTY_Q), policy="rag").route == "answer"


def test_history_is_trimmed_oldest_first_and_the_evidence_is_kept(assistant):
    sent: list[list[dict]] = []
    generator = assistant.scheduler.generator
    original = generator.score_choices

    def spy(request):
        sent.append(request.messages)
        return original(request)

    history = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me about the speaker " * 8},
            {"role": "assistant", "content": f"Reply {i}: " + "it plays music well " * 8},
        ]
    messages = history + ask(WARRANTY_Q)
    evidence = assistant._evidence(WARRANTY_Q, history)
    newest_two = assistant._plan(WARRANTY_Q, history[-4:], evidence, 12).prompt
    budget = generator.count_tokens(newest_two) + 12  # room for exactly the 2 newest turns
    tight = with_settings(assistant, context_tokens=budget)
    generator.score_choices = spy
    try:
        answer = tight.answer(messages, max_tokens=12, policy="rag")
    finally:
        generator.score_choices = original
    assert answer.route == "answer" and answer.trimmed_turns == 8
    prompt = sent[-1]
    assert prompt == newest_two
    assert prompt[-1]["content"].startswith("Evidence:") and WARRANTY_Q in prompt[-1]["content"]
    assert "Question 5" in prompt[-3]["content"], "the newest turns are kept"
    assert not any("Question 0" in m["content"] for m in prompt), "the oldest turn went first"
    assert generator.count_tokens(prompt) + 12 <= budget


def test_a_long_history_is_trimmed_with_a_few_token_counts_not_one_per_turn(assistant):
    """Trimming once re-tokenized the whole prompt for every turn it dropped, holding the
    tokenizer the generator needs: 64 turns meant 64 counts of up to a megabyte."""
    generator = assistant.scheduler.generator
    history = []
    for i in range(32):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me about the speaker " * 8},
            {"role": "assistant", "content": f"Reply {i}: " + "it plays music well " * 8},
        ]
    evidence = assistant._evidence(WARRANTY_Q, history)
    newest = assistant._plan(WARRANTY_Q, history[-4:], evidence, 12).prompt
    tight = with_settings(assistant, context_tokens=generator.count_tokens(newest) + 12)
    counts = []
    original = generator.count_tokens
    generator.count_tokens = lambda messages: counts.append(1) or original(messages)
    try:
        plan = tight._plan(WARRANTY_Q, history, evidence, 12)
    finally:
        generator.count_tokens = original
    assert plan.prompt == newest and plan.trimmed == 60
    assert len(counts) <= 8, f"{len(counts)} token counts for 32 turns"


def test_a_question_that_cannot_fit_is_an_error(assistant):
    from domainkit.answer.answers import ConversationError

    with pytest.raises(ConversationError, match="context budget"):
        with_settings(assistant, context_tokens=256).answer(ask("speaker " * 400), policy="closed")


def test_confidence_is_the_mean_log_probability_of_the_kept_tokens(assistant):
    """Computed step by step from the chosen tokens (no batch x steps x vocabulary logits
    history), and equal to scoring the same tokens in one forward pass."""
    import torch

    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "How long is the warranty?"}]
    short = GenRequest(messages, max_new_tokens=3)
    longer = GenRequest([{"role": "user", "content": "Hello there, what is a Perch?"}], 9)
    result, other = generator.generate([short, longer])
    prompt = generator._ids(messages)
    model = generator.lm.model
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=result.completion_tokens,
            do_sample=False,
            pad_token_id=generator.tokenizer.pad_token_id,
        )
        new = out[0, len(prompt) :]
        logits = model(out[:, :-1]).logits[0, len(prompt) - 1 :].float().log_softmax(-1)
    expected = float(logits.gather(-1, new[:, None]).mean())
    assert result.completion_tokens == 3 and other.completion_tokens <= 9
    assert result.mean_logprob == pytest.approx(expected, abs=1e-3)
