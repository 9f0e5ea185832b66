"""The generation queue and the local backend's continuous batch: rows joining and leaving,
cancellation, per-row sampling, failures, and scored requests one at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from domainkit.backends import GenRequest, GenResult
from domainkit.backends.scheduler import Scheduler

from .runtime_support import FakeGenerator, ask, with_settings


def test_concurrent_requests_are_batched_with_their_own_limits(assistant):
    closed = with_settings(assistant, policy="closed")
    batch = assistant.scheduler.batch
    rows: list[int] = []
    step = batch.step
    batch.step = lambda: rows.append(len(batch.running)) or step()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda n: closed.answer(ask(f"warranty {n}?"), max_tokens=n), range(1, 9))
            )
    finally:
        batch.step = step
    assert all(a.completion_tokens <= n for a, n in zip(answers, range(1, 9), strict=True))
    assert max(rows) > 1, "requests were decoded together"


def test_a_row_stops_where_the_model_starts_imitating_the_prompt():
    from domainkit.backends import GenRequest
    from domainkit.backends.decoding import Row, RowText

    from .tiny_lm import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    pieces: list[str] = []
    request = GenRequest([], max_new_tokens=100, on_text=pieces.append)
    teacher = GenRequest([], max_new_tokens=100, stop=())  # a teacher writes "Question:" lines
    text = RowText(tokenizer, eos_ids=set())
    rows = [Row(request, [1, 2, 3], print), Row(teacher, [1, 2, 3], print)]
    for token in tokenizer.encode("Two years.\nQuestion: and returns?\nAnswer"):
        for row in rows:
            if not row.finished:
                text.take(row, token)
    for row in rows:
        text.end(row)
    assert "".join(pieces) == "Two years." and [r.finished for r in rows] == [True, False]
    assert all("\n" not in p for p in pieces), "the marker's start was held back, not streamed"
    assert rows[1].text == "Two years.\nQuestion: and returns?\nAnswer"
    assert rows[0].result().finish_reason == "stop"


def test_a_cancelled_row_of_the_local_backend_stops_at_the_next_step(assistant):
    from domainkit.backends import GenRequest

    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "Tell me everything about the Perch."}]
    leaving = GenRequest(messages, max_new_tokens=40)
    leaving.on_text = lambda _: leaving.cancelled.set()  # hangs up after its first text
    staying = GenRequest(messages, max_new_tokens=40)
    gone, kept = generator.generate([leaving, staying])
    assert gone.completion_tokens <= 3 < kept.completion_tokens


def _decoded(generator, requests, chunk=8, steps_before=None):
    """Run ``requests`` through one continuous batch of ``generator``: each joins after
    the step count given in ``steps_before`` (all at once by default). Returns the results
    by request and, per step, (rows running, tokens each request has so far)."""
    batch = generator.decoder(max_rows=len(requests))
    batch.prefill_chunk = chunk
    steps_before = steps_before or [0] * len(requests)
    results: dict[int, object] = {}
    rows = [
        generator.row(r, lambda x, i=i: results.__setitem__(i, x)) for i, r in enumerate(requests)
    ]
    trace = []
    step = 0
    while len(results) < len(requests):
        for i, row in enumerate(rows):
            if steps_before[i] == step:
                batch.add(row)
        batch.step()
        step += 1
        trace.append((len(batch.running), [len(r.tokens) for r in rows]))
        assert step < 500, "the batch did not finish"
    assert len(batch) == 0
    return [results[i] for i in range(len(requests))], trace


def test_a_request_joins_a_running_batch_and_answers_as_it_would_alone(assistant):
    """Continuous batching: a request arriving while another is generating joins it between
    decoding steps (it does not wait for the first to finish); its prompt, longer than a
    prefill chunk, is prefilled a chunk per step while the first keeps streaming; each
    reply is the one it gets alone; a finished row leaves at once."""
    generator = assistant.scheduler.generator
    first = [{"role": "user", "content": "Tell me about the Perch."}]
    second = [{"role": "user", "content": "Tell me everything about the Kestrel " * 6}]
    prompt = len(generator.row(GenRequest(second, 1), print).prompt)
    chunk = prompt // 5 + 1  # the second's prompt takes 5 steps to prefill
    alone = [generator.generate([GenRequest(m, 40, stop=())])[0] for m in (first, second)]
    (one, two), trace = _decoded(
        generator,
        [GenRequest(first, 40, stop=()), GenRequest(second, 40, stop=())],
        chunk=chunk,
        steps_before=[0, 3],
    )
    assert (one.text, two.text) == (alone[0].text, alone[1].text)
    assert one.completion_tokens == alone[0].completion_tokens > 12
    assert abs(one.mean_logprob - alone[0].mean_logprob) < 1e-3
    second_started = next(s for s, (_, tokens) in enumerate(trace) if tokens[1] > 0)
    first_done = next(s for s, (_, tokens) in enumerate(trace) if tokens[0] == 40)
    assert second_started < first_done, "the second joined while the first was generating"
    assert second_started - 3 == 4, (
        "its prompt was prefilled a chunk per step (the 5th gives a token)"
    )
    streamed = trace[second_started][1][0] - trace[2][1][0]
    assert streamed == 5, "the first row got a token at every prefill step"
    assert max(n for n, _ in trace) == 2 and trace[-1][0] == 0


def test_prompts_joining_together_run_their_common_start_once_and_answer_as_alone(assistant):
    """A teacher's calls share a system prompt and worked examples: that start is run once
    for all the rows joining together, and each reply is still the one it gets alone."""
    from domainkit.backends import decoding

    generator = assistant.scheduler.generator
    system = {"role": "system", "content": "You answer questions about Kestrel speakers. " * 4}
    requests = [
        [system, {"role": "user", "content": text}]
        for text in ("Tell me about the Perch.", "And the Talon warranty?", "Returns?")
    ]
    alone = [generator.generate([GenRequest(m, 24, stop=())])[0] for m in requests]
    prompts = [generator.row(GenRequest(m, 1), print).prompt for m in requests]
    run_tokens: list[int] = []
    hook = generator.lm.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: run_tokens.append(args[0].numel())
    )
    try:
        together, _ = _decoded(generator, [GenRequest(m, 24, stop=()) for m in requests], 10**6)
    finally:
        hook.remove()
    shared = decoding._common_length(prompts)
    assert shared >= decoding.MIN_SHARED
    assert [r.text for r in together] == [r.text for r in alone]
    for mine, theirs in zip(together, alone, strict=True):
        assert abs(mine.mean_logprob - theirs.mean_logprob) < 1e-3
    width = max(len(p) for p in prompts) - shared
    assert run_tokens[:2] == [shared, len(prompts) * width], "the start once, then the rest"


def test_a_sliding_window_cache_falls_back_to_static_batching(tmp_path):
    """A model whose cache is not plain ``DynamicLayer``s (Mistral's sliding window) cannot
    take a newcomer's rows into its running cache: the newcomer waits until the batch is
    empty, then answers as it would alone."""
    from domainkit.backends.local import LocalBackend

    from .tiny_lm import save_tiny_model_with, tiny_tokenizer

    save_tiny_model_with(tiny_tokenizer(), tmp_path, sliding_window=16)
    generator = LocalBackend.load(str(tmp_path), device="cpu")
    first = [{"role": "user", "content": "Tell me about the Perch."}]
    second = [{"role": "user", "content": "And the Talon?"}]
    alone = [generator.generate([GenRequest(m, 20, stop=())])[0].text for m in (first, second)]
    (one, two), trace = _decoded(
        generator, [GenRequest(first, 20, stop=()), GenRequest(second, 20, stop=())], 512, [0, 3]
    )
    assert (one.text, two.text) == tuple(alone)
    second_started = next(s for s, (_, tokens) in enumerate(trace) if tokens[1] > 0)
    first_done = next(s for s, (_, tokens) in enumerate(trace) if tokens[0] == 20)
    assert second_started > first_done, "the newcomer waited for the batch to empty"
    assert max(n for n, _ in trace) == 1


def test_requests_arriving_together_start_streaming_a_few_at_a_time(assistant):
    """With ``join_tokens`` (the server's setting), requests that arrive together join in
    groups of that many prompt tokens: the first streams while the others are prefilled,
    instead of every one waiting for the prefill of all. Each reply is unchanged."""
    generator = assistant.scheduler.generator
    messages = [[{"role": "user", "content": f"Tell me about the Perch {i}."}] for i in range(3)]
    prompt = len(generator.row(GenRequest(messages[0], 1), print).prompt)
    batch = generator.decoder(max_rows=3, join_tokens=prompt)
    results: dict[int, object] = {}
    rows = [
        generator.row(GenRequest(m, 12, stop=()), lambda x, i=i: results.__setitem__(i, x))
        for i, m in enumerate(messages)
    ]
    for row in rows:
        batch.add(row)
    batch.step()
    assert [len(r.tokens) > 0 for r in rows] == [True, False, False], "one group of one"
    while len(batch):
        batch.step()
    alone = [generator.generate([GenRequest(m, 12, stop=())])[0].text for m in messages]
    assert [results[i].text for i in range(3)] == alone


def test_a_row_that_finishes_leaves_the_batch_and_its_columns_are_freed(assistant):
    generator = assistant.scheduler.generator
    long_prompt = [{"role": "user", "content": "Tell me everything about the Kestrel " * 8}]
    short_prompt = [{"role": "user", "content": "Hi"}]
    batch = generator.decoder(max_rows=2)
    done: list = []
    batch.add(generator.row(GenRequest(long_prompt, 2, stop=()), done.append))
    batch.add(generator.row(GenRequest(short_prompt, 40, stop=()), done.append))
    while not done:
        batch.step()
    remaining = batch.running[0]
    assert len(batch.running) == 1 and remaining.request.messages == short_prompt
    layer = batch._cache.layers[0]
    assert layer.keys.shape[0] == 1, "the finished row's cache went with it"
    assert layer.keys.shape[2] == len(remaining.prompt) + len(remaining.tokens) - 1
    while len(batch):
        batch.step()
    assert len(done) == 2 and done[1].completion_tokens > done[0].completion_tokens


def test_rows_sample_with_their_own_temperature_and_seed(assistant):
    """One batch holds greedy and sampled rows; a seeded row gives the same reply whatever
    its batch-mates, and other seeds give other replies."""
    generator = assistant.scheduler.generator
    messages = [{"role": "user", "content": "Tell me about the Perch."}]

    def row(temperature, seed=None):
        return GenRequest(messages, max_new_tokens=10, temperature=temperature, seed=seed)

    greedy = generator.generate([row(0.0)])[0].text
    first = generator.generate([row(1.0, seed=7), row(0.0)])
    second = generator.generate([row(0.5, seed=3), row(0.0), row(1.0, seed=7)])
    assert first[0].text == second[2].text, "the same seed, other batch-mates, the same reply"
    assert first[1].text == second[1].text == greedy, "greedy rows are untouched by sampling"
    replies = {generator.generate([row(1.0, seed=s)])[0].text for s in range(4)}
    assert len(replies) > 1, "other seeds sample other replies"


def test_a_backend_that_dies_fails_its_batch_and_the_queue_keeps_serving():
    """Even an exception that is not an ``Exception`` (a KeyboardInterrupt raised inside
    the backend) reaches the callers of its batch instead of leaving them waiting for
    ever, and the next request is served."""

    class Dies:
        context_limit = 4096
        calls = 0

        def generate(self, requests):
            Dies.calls += 1
            if Dies.calls == 1:
                raise KeyboardInterrupt("interrupted inside the backend")
            return [GenResult("fine", 1, 1, "stop") for _ in requests]

    scheduler = Scheduler(Dies(), max_batch=4)
    first = scheduler.submit(GenRequest([{"role": "user", "content": "a"}], 4))
    with pytest.raises(KeyboardInterrupt):
        first.result(10)
    later = scheduler.submit(GenRequest([{"role": "user", "content": "b"}], 4))
    assert later.result(10).text == "fine"


class ScoringFakeGenerator(FakeGenerator):
    """A fake backend that scores choices (``ScoresChoices``): the first choice wins."""

    def score_choices(self, request):
        assert self.gate.wait(30)
        return GenResult("", 10, 0, "stop", None, [0.0] + [-5.0] * (len(request.choices) - 1))


def _held_scheduler(scores_choices: bool = False):
    """A scheduler over a fake backend that records its calls, its worker held by a first
    request until ``generator.gate`` is set, so the next requests queue together."""
    generator = ScoringFakeGenerator() if scores_choices else FakeGenerator()
    batches: list = []
    original = generator.generate
    generator.generate = lambda requests: batches.append(requests) or original(requests)
    if scores_choices:
        score = generator.score_choices
        generator.score_choices = lambda request: batches.append([request]) or score(request)
    generator.gate.clear()
    scheduler = Scheduler(generator, max_batch=8, max_queue=8)
    first = scheduler.submit(GenRequest(ask("a"), 4))
    deadline = time.time() + 10
    while scheduler.running == 0 and time.time() < deadline:
        time.sleep(0.01)
    return generator, scheduler, batches, first


def test_the_scheduler_batches_requests_of_different_temperatures_together():
    generator, scheduler, batches, first = _held_scheduler()
    rest = [scheduler.submit(GenRequest(ask("b"), 4, temperature=t)) for t in (0.0, 0.9, 0.3)]
    generator.gate.set()
    for future in [first, *rest]:
        future.result(timeout=10)
    assert sorted(r.temperature for r in batches[-1]) == [0.0, 0.3, 0.9]


def test_scored_requests_are_answered_one_by_one_not_held_for_the_batch():
    """A backend that scores choices scores one request at a time anyway: grouping scored
    requests in one call only held each answer until the whole batch was scored (16
    clients waited twice as long for their first token). Each scored request is its own
    call, its answer delivered at once; generated requests are still batched together."""
    generator, scheduler, batches, first = _held_scheduler(scores_choices=True)
    scored = [GenRequest(ask(q), 4, choices=["x", "y"]) for q in ("s1", "s2", "s3")]
    generated = [GenRequest(ask(q), 4) for q in ("g1", "g2")]
    rest = [scheduler.submit(r) for r in (scored[0], generated[0], scored[1], *generated[1:])]
    rest.append(scheduler.submit(scored[2]))
    generator.gate.set()
    for future in [first, *rest]:
        future.result(timeout=10)
    sizes = [[r.messages[-1]["content"] for r in batch] for batch in batches[1:]]
    assert sizes == [["s1"], ["s2"], ["s3"], ["g1", "g2"]]


def test_a_scored_request_whose_caller_went_while_its_batch_was_scored_is_not_scored():
    """Scored requests of one batch are scored one by one; one whose caller has gone by its
    turn (an eval that stopped on an error, a client that disconnected) is skipped."""
    from concurrent.futures import CancelledError

    scored: list[str] = []
    hold = threading.Event()

    class Scoring:
        context_limit = 4096

        def generate(self, requests):
            return [self.score_choices(r) for r in requests]

        def score_choices(self, request):
            assert hold.wait(30)
            scored.append(request.messages[0]["content"])
            if request.messages[0]["content"] == "first":
                second.cancelled.set()  # the second's caller goes meanwhile
            return GenResult("", 1, 0, "stop", None, choice_logprobs=[0.0])

    scheduler = Scheduler(Scoring(), max_batch=4, max_queue=8)
    ask = [
        GenRequest([{"role": "user", "content": c}], 4, choices=["a"])
        for c in ("held", "first", "second", "third")
    ]
    second = ask[2]
    futures = [scheduler.submit(r) for r in ask]  # "held" blocks; the rest queue as one batch
    hold.set()
    assert futures[1].result(10).choice_logprobs and futures[3].result(10).choice_logprobs
    with pytest.raises(CancelledError):
        futures[2].result(10)
    assert "second" not in scored and scored[-1] == "third"
