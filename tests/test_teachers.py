"""Teachers: the OpenAI-compatible one against a real HTTP server on loopback, the call
cache and resume, and batched local generation on a tiny model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from domainkit.config.schema import TeacherConfig
from domainkit.synth.teachers import CachedTeacher, CallCache, Sampling, TeacherError, make_teacher

from .tiny_lm import save_tiny_chat_model


class FakeEndpoint:
    """An OpenAI-compatible /v1/chat/completions server on 127.0.0.1 with scripted failures."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next = 0  # answer this many requests with HTTP 500
        self.fail_after = None  # answer 500 to every request after this many successes
        self.status_for_model = {}
        self.raw_reply = None  # answer 200 with this non-JSON body instead
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                status = endpoint.status_for_model.get(body["model"], 200)
                successes = sum(1 for r in endpoint.requests[:-1] if r.get("_ok"))
                if endpoint.fail_next > 0:
                    endpoint.fail_next -= 1
                    status = 500
                elif endpoint.fail_after is not None and successes >= endpoint.fail_after:
                    status = 500
                if status != 200:
                    self._send(status, {"error": {"message": "scripted failure", "type": "x"}})
                    return
                if endpoint.raw_reply is not None:
                    data = endpoint.raw_reply.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                body["_ok"] = True
                question = body["messages"][-1]["content"]
                self._send(
                    200,
                    {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"echo: {question}"},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = FakeEndpoint()
    yield server
    server.close()


def _teacher(url, **overrides):
    settings = {
        "backend": "openai",
        "model": "tiny",
        "base_url": url,
        "max_retries": 0,
        "concurrency": 2,
        "timeout": 10,
    } | overrides
    return make_teacher(TeacherConfig(**settings))


def _conversations(n):
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def test_openai_teacher_answers_through_the_official_client(endpoint):
    replies = _teacher(endpoint.url).generate(_conversations(5), Sampling(max_new_tokens=32))
    assert replies == [f"echo: question {i}" for i in range(5)]
    assert {r["max_tokens"] for r in endpoint.requests} == {32}


def test_openai_teacher_retries_a_500(endpoint):
    endpoint.fail_next = 1
    [reply] = _teacher(endpoint.url, max_retries=2).generate(_conversations(1), Sampling())
    assert reply == "echo: question 0"
    assert len(endpoint.requests) == 2, "one failure, one retry"


def test_openai_teacher_gives_up_with_a_clear_error(endpoint):
    endpoint.fail_next = 10
    with pytest.raises(TeacherError, match="HTTP 500 after 1 retries"):
        _teacher(endpoint.url, max_retries=1).generate(_conversations(1), Sampling())


def test_unreachable_endpoint_and_unknown_model_are_explained(endpoint):
    with pytest.raises(TeacherError, match="cannot reach the teacher endpoint"):
        _teacher("http://127.0.0.1:9/v1").generate(_conversations(1), Sampling())
    endpoint.status_for_model["missing"] = 404
    with pytest.raises(TeacherError, match="404 for model 'missing'"):
        _teacher(endpoint.url, model="missing").generate(_conversations(1), Sampling())


def test_interrupted_run_resumes_without_redoing_finished_calls(endpoint, tmp_path):
    conversations = _conversations(10)
    endpoint.fail_after = 4  # the endpoint dies after 4 answers
    cache = CallCache(tmp_path / "calls.sqlite")
    with pytest.raises(TeacherError):
        CachedTeacher(_teacher(endpoint.url), cache).generate(conversations, Sampling())
    saved = len(cache)
    assert saved == 4, "every finished batch is on disk"
    cache.close()

    endpoint.fail_after = None
    endpoint.requests.clear()
    resumed = CachedTeacher(_teacher(endpoint.url), CallCache(tmp_path / "calls.sqlite"))
    replies = resumed.generate(conversations, Sampling())
    assert replies == [f"echo: question {i}" for i in range(10)]
    assert len(endpoint.requests) == 10 - saved
    assert (resumed.calls_made, resumed.calls_cached) == (6, 4)


def test_cache_key_separates_teachers_and_sampling(tmp_path):
    conversation = _conversations(1)[0]
    keys = {
        CallCache.key("a", conversation, Sampling()),
        CallCache.key("b", conversation, Sampling()),
        CallCache.key("a", conversation, Sampling(temperature=0.1)),
        CallCache.key("a", conversation, Sampling(seed=1)),
    }
    assert len(keys) == 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_chat_model(tmp_path_factory.mktemp("tiny"))


def test_hf_teacher_batches_give_the_same_text_as_one_at_a_time(tiny_model):
    conversations = [
        [{"role": "user", "content": text}]
        for text in [
            "What is the warranty?",
            "Reset",
            "Hold the power button for ten seconds please",
        ]
    ]
    sampling = Sampling(temperature=0.0, max_new_tokens=8)
    batched = make_teacher(TeacherConfig(model=str(tiny_model), batch_size=3))
    single = make_teacher(TeacherConfig(model=str(tiny_model), batch_size=1))
    replies = batched.generate(conversations, sampling)
    assert any(replies), "the tiny model writes something, so the comparison means something"
    assert replies == single.generate(conversations, sampling)


def test_hf_teacher_samples_a_conversation_the_same_way_whatever_its_batch(tiny_model):
    """The local teacher is the runtime's ``local`` backend: each conversation sampled by a
    seed of its own (from the sampling seed and its text), so a resumed or re-batched run
    gives the same reply, while another sampling seed gives other replies."""
    conversations = [[{"role": "user", "content": f"Tell me about item {i}"}] for i in range(4)]
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=3)
    teacher = make_teacher(TeacherConfig(model=str(tiny_model), batch_size=4))
    together = teacher.generate(conversations, sampling)
    apart = [teacher.generate([c], sampling)[0] for c in reversed(conversations)][::-1]
    assert together == apart and len(set(together)) > 1
    other = teacher.generate(conversations, Sampling(**{**sampling.__dict__, "seed": 4}))
    assert other != together


def test_a_reply_that_is_not_a_chat_completion_is_a_clear_error(endpoint):
    endpoint.raw_reply = "<html>Welcome to nginx!</html>"
    with pytest.raises(TeacherError, match="something other than a chat completion"):
        _teacher(endpoint.url).generate(_conversations(1), Sampling())


def test_empty_replies_are_not_cached(tmp_path):
    from domainkit.synth.teachers.base import CachedTeacher, CallCache

    class Flaky:
        id, batch_size = "flaky", 4

        def __init__(self):
            self.calls = 0

        def generate(self, conversations, sampling):
            self.calls += 1
            return ["" if self.calls == 1 else "an answer" for _ in conversations]

    flaky = Flaky()
    cache = CallCache(tmp_path / "calls.sqlite")
    assert CachedTeacher(flaky, cache).generate(_conversations(2), Sampling()) == ["", ""]
    again = CachedTeacher(flaky, cache).generate(_conversations(2), Sampling())
    assert again == ["an answer"] * 2 and flaky.calls == 2
    assert CachedTeacher(flaky, cache).generate(_conversations(2), Sampling()) == again
    assert flaky.calls == 2, "a real answer is cached"


def test_documents_and_keys_go_only_to_hosts_the_user_approved(monkeypatch):
    from domainkit.backends.endpoint import EndpointBackend
    from domainkit.errors import ConfigError

    monkeypatch.delenv("DOMAINKIT_APPROVED_HOSTS", raising=False)
    with pytest.raises(ConfigError, match=r"evil\.example.*DOMAINKIT_APPROVED_HOSTS=evil\.example"):
        _teacher("https://evil.example/v1")
    with pytest.raises(ConfigError, match="runtime.base_url points at evil.example"):
        EndpointBackend(model="m", base_url="http://evil.example:8000/v1")
    for trusted in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1", None):
        _teacher(trusted)  # loopback servers and OpenAI itself need no approval
    with pytest.raises(ConfigError, match="must use https"):
        _teacher("http://api.openai.com/v1")
    monkeypatch.setenv("DOMAINKIT_APPROVED_HOSTS", "gpu-box.lan, evil.example")
    assert _teacher("https://evil.example/v1").id == "openai:https://evil.example/v1:tiny"


def test_a_backend_failure_is_a_teacher_error_whether_raised_or_returned():
    """Synth stops with a ``TeacherError`` saying what failed, however the backend reports
    it: an exception in one request's place, or the whole call raising."""
    from domainkit.backends import BackendError
    from domainkit.synth.teachers import BackendTeacher

    class Failing:
        def __init__(self, raises: bool):
            self.raises = raises

        def generate(self, requests):
            if self.raises:
                raise BackendError("the model could not be loaded")
            return [BackendError("request 1 was refused") for _ in requests]

    for raises, message in ((True, "could not be loaded"), (False, "request 1 was refused")):
        teacher = BackendTeacher("failing", 4, lambda r=raises: Failing(r))
        with pytest.raises(TeacherError, match=message):
            teacher.generate(_conversations(2), Sampling())
