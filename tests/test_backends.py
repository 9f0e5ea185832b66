"""Chat backends: the ``openai`` backend against a domainkit server and its errors, a
backend plug-in chosen by name, and the local backend's precision."""

from __future__ import annotations

import httpx
import pytest
import torch

from domainkit.backends import GenRequest, GenResult
from domainkit.backends.scheduler import Scheduler
from domainkit.runtime import Assistant

from .runtime_support import WARRANTY_Q, ask


def test_openai_backend_against_a_domainkit_server(runtime_domain, server_url):
    """The `openai` generation backend, pointed at a running OpenAI-compatible server (here
    another domainkit server on loopback, as vLLM would be in production). An endpoint
    cannot score the evidence lines, so the reply is generated and checked: this one is the
    remote server's own composed answer, not a quote, so the evidence answers."""
    settings = runtime_domain.config.runtime.model_copy(
        update={"backend": "openai", "base_url": f"{server_url}/v1", "model": "kestrel-test"}
    )
    remote = Assistant.from_domain(runtime_domain, settings=settings)
    answer = remote.answer(ask(WARRANTY_Q), max_tokens=6, policy="rag")
    assert answer.route == "evidence" and answer.sources and answer.prompt_tokens > 0
    pieces: list[str] = []
    closed = remote.answer(ask(WARRANTY_Q), max_tokens=6, policy="closed", on_text=pieces.append)
    assert closed.route == "closed" and "".join(pieces).strip() == closed.text


def test_openai_backend_errors_stay_with_their_own_request(monkeypatch):
    import openai

    from domainkit.backends.endpoint import EndpointBackend

    generator = EndpointBackend(model="m", base_url="http://127.0.0.1:9/v1")

    def one(request):
        if "too long" in request.messages[-1]["content"]:
            response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1:9"))
            raise openai.BadRequestError("context length exceeded", response=response, body=None)
        return GenResult("fine", 5, 1, "stop", None)

    monkeypatch.setattr(generator, "_one", one)
    scheduler = Scheduler(generator, max_batch=4)
    jobs = [
        scheduler.submit(GenRequest([{"role": "user", "content": text}], 8))
        for text in ("a", "this is too long", "b")
    ]
    assert jobs[0].result(10).text == "fine" and jobs[2].result(10).text == "fine"
    with pytest.raises(openai.BadRequestError):
        jobs[1].result(10)


def test_a_runtime_endpoint_that_fails_says_what_to_check_as_the_teacher_does(monkeypatch):
    """The runtime's and the teacher's endpoints share one client and one wording of
    failures: an unreachable server, a refused key."""
    import httpx
    import openai

    from domainkit.backends import BackendError
    from domainkit.backends.endpoint import EndpointBackend

    monkeypatch.setenv("MY_KEY", "k")
    generator = EndpointBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY")
    request = GenRequest([{"role": "user", "content": "hi"}], 8)
    unreachable = generator.generate([request])[0]
    assert isinstance(unreachable, BackendError)
    assert "cannot reach the runtime endpoint http://127.0.0.1:9/v1" in str(unreachable)
    assert "is the server running" in str(unreachable)

    def refused(**kwargs):
        response = httpx.Response(401, request=httpx.Request("POST", "http://127.0.0.1:9"))
        raise openai.AuthenticationError("bad key", response=response, body=None)

    monkeypatch.setattr(generator.client.chat.completions, "create", refused)
    [failure] = generator.generate([request])
    assert "rejected the API key; set $MY_KEY" in str(failure)


def test_an_installed_backend_plug_in_answers_by_its_name(runtime_domain, monkeypatch, tmp_path):
    """A package offering a backend in the ``domainkit.backends`` group is chosen by
    ``runtime.backend`` alone; it is built from the runtime settings (student, adapter,
    device), and the runtime checks its replies like any other. An unknown name is a clear
    error naming the backends there are."""
    from domainkit import registry
    from domainkit.backends import base
    from domainkit.config.schema import TeacherConfig
    from domainkit.errors import UnknownNameError
    from domainkit.prompting import quote_reply
    from domainkit.registry import Registry
    from domainkit.synth.teachers import Sampling, make_teacher

    class QuotingBackend:
        """Replies with the first line of the evidence block, as a quote."""

        context_limit = 4096
        built: dict = {}

        @classmethod
        def from_runtime(cls, settings, *, student, adapter, device, name):
            cls.built = {"student": student, "adapter": adapter, "device": device, "name": name}
            return cls()

        @classmethod
        def from_teacher(cls, settings):
            cls.built = {"teacher": settings.model}
            return cls()

        def count_tokens(self, messages):
            return sum(len(m["content"].split()) for m in messages)

        def count_text(self, text):
            return len(text.split())

        def generate(self, requests):
            replies = []
            for r in requests:
                evidence = r.messages[-1]["content"].split("\n")
                line = next(x for x in evidence[1:] if x and not x.startswith("["))
                text = quote_reply(line)
                replies.append(GenResult(text, 7, len(text.split()), "stop", None))
            return replies

    class _EntryPoint:
        name, value = "quoting", "quoting_plugin:QuotingBackend"

        def load(self):
            return QuotingBackend

    groups = {"domainkit.backends": [_EntryPoint()]}
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: groups.get(group, []))
    backends = Registry("chat backend", "domainkit.backends")
    backends._items = dict(base.BACKENDS._items)
    monkeypatch.setattr(base, "BACKENDS", backends)
    monkeypatch.setattr("domainkit.answer.assistant.BACKENDS", backends)
    monkeypatch.setattr("domainkit.synth.teachers.base.BACKENDS", backends)

    settings = runtime_domain.config.runtime.model_copy(update={"backend": "quoting"})
    assistant = Assistant.from_domain(runtime_domain, settings=settings, tuned=False)
    assert QuotingBackend.built == {
        "student": runtime_domain.config.train.student_model,
        "adapter": None,
        "device": runtime_domain.config.train.device,
        "name": runtime_domain.config.name,
    }
    answer = assistant.answer(ask(WARRANTY_Q), policy="rag")
    assert answer.route == "answer" and answer.quote and answer.completion_tokens > 0
    assert any(answer.quote.removeprefix("Quote: ") in e.text for e in answer.evidence)

    unknown = runtime_domain.config.runtime.model_copy(update={"backend": "vllm-typo"})
    with pytest.raises(UnknownNameError, match="local, openai, quoting"):
        Assistant.from_domain(runtime_domain, settings=unknown)

    # The same plug-in writes synth data as the teacher, by its name alone.
    teacher = make_teacher(TeacherConfig(backend="quoting", model="q-1"))
    conversation = [{"role": "user", "content": "Evidence:\n[1] Doc\nA line.\n\nQuestion: ?"}]
    assert teacher.generate([conversation], Sampling()) == ["Quote: A line."]
    assert QuotingBackend.built == {"teacher": "q-1"} and teacher.id == "quoting:q-1"
    with pytest.raises(
        UnknownNameError, match="teacher .vllm-typo.; available: hf, local, openai, quoting"
    ):
        make_teacher(TeacherConfig(backend="vllm-typo"))


@pytest.mark.parametrize(
    ("precision", "bf16_env", "dtype"),
    [("fp32", "1", torch.float32), ("bf16", "0", torch.bfloat16), ("auto", "0", torch.float32)],
)
def test_runtime_precision_sets_the_local_models_weights(
    tmp_path, monkeypatch, precision, bf16_env, dtype
):
    from domainkit.backends.local import LocalBackend
    from domainkit.utils.device import CPU_BF16_ENV

    from .tiny_lm import save_tiny_model_with, tiny_tokenizer

    monkeypatch.setenv(CPU_BF16_ENV, bf16_env)
    save_tiny_model_with(tiny_tokenizer(), tmp_path)
    backend = LocalBackend.load(str(tmp_path), device="cpu", precision=precision)
    assert {p.dtype for p in backend.lm.model.parameters()} == {dtype}
