"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp,
Ollama, domainkit itself), one request per call, a request's error failing that request only.

The runtime streams (each answer's text as it comes, with log-probabilities for the
closed-book confidence); the teacher asks for whole replies, which every such endpoint
serves. The official client retries 408/409/429/5xx and timeouts with backoff; what still
fails becomes a ``BackendError`` that says what to check.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from domainkit.backends.base import BACKENDS, BackendError, GenRequest, GenResult
from domainkit.prompting import Message
from domainkit.utils.endpoints import endpoint_failure, openai_client

log = logging.getLogger(__name__)


RETRIES = 2  # the runtime's: the client's own, with backoff, for 408/409/429/5xx and timeouts


@BACKENDS.register("openai")
class EndpointBackend:
    """Any OpenAI-compatible chat endpoint, up to ``concurrency`` requests in flight at once.

    Args:
        model: The endpoint's model name.
        base_url: The endpoint (usually ending in /v1); its host must be approved
            (``utils.endpoints``).
        api_key_env: Environment variable holding the key.
        timeout: Seconds before a request is retried.
        max_retries: Retries of a request, with backoff.
        tokenizer_model: A local tokenizer for counting tokens (history trimming); a
            character estimate without one.
        stream: Stream replies (the runtime) or ask for whole ones (the teacher).
        concurrency: Requests in flight at once (None: every request of a call).
        what: The endpoint's name in messages, with the setting that names it.
    """

    @classmethod
    def from_runtime(cls, settings, *, student, adapter, device, name) -> EndpointBackend:
        return cls(
            model=settings.model or name,
            base_url=settings.base_url,
            api_key_env=settings.api_key_env,
            tokenizer_model=student,
        )

    @classmethod
    def from_teacher(cls, settings) -> EndpointBackend:
        return cls(
            model=settings.model,
            base_url=settings.base_url or "https://api.openai.com/v1",
            api_key_env=settings.api_key_env,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            stream=False,
            concurrency=settings.concurrency,
            what=("teacher endpoint", "synth.teacher.base_url"),
        )

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "DOMAINKIT_BACKEND_API_KEY",
        timeout: float = 120.0,
        max_retries: int = RETRIES,
        tokenizer_model: str | None = None,
        stream: bool = True,
        concurrency: int | None = None,
        what: tuple[str, str] = ("runtime endpoint", "runtime.base_url"),
    ):
        self.what, setting = what
        if not base_url:
            raise BackendError(f"{setting} is not set (the backend is openai)")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.stream, self.concurrency = stream, concurrency
        self.client = openai_client(
            base_url, setting, api_key_env, timeout=timeout, max_retries=max_retries
        )
        self.context_limit = 1 << 30
        self._tokenizer = None
        if tokenizer_model:  # for history trimming; a character estimate otherwise
            from transformers import AutoTokenizer

            from domainkit.models import resolve_causal_lm

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_causal_lm(tokenizer_model))
            self.context_limit = self._tokenizer.model_max_length
        self.logprobs = stream  # the runtime's confidence; the teacher has no use for them

    def count_tokens(self, messages: list[Message]) -> int:
        if self._tokenizer is None:
            return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)
        return len(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def count_text(self, text: str) -> int:
        if self._tokenizer is None:
            return len(text) // 3
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: list[GenRequest]) -> list[GenResult | Exception]:
        """Each request on its own connection; a request's error (its context is too long,
        the endpoint refused it) is returned in its place and fails that request only."""
        workers = min(self.concurrency or len(requests), max(1, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._one_or_error, requests))

    def _one_or_error(self, request: GenRequest) -> GenResult | Exception:
        try:
            return self._one(request)
        except Exception as e:  # noqa: BLE001 - handed to that request's caller
            return e

    def _one(self, request: GenRequest) -> GenResult:
        import openai

        try:
            response = self._create(request)
        except openai.BadRequestError as e:
            if not self.logprobs or "logprob" not in str(e).lower():
                raise BackendError(f"{self.base_url}: {e}") from None
            log.warning(
                "%s does not return log-probabilities; no closed-book confidence", self.model
            )
            self.logprobs = False
            response = self._create(request)
        except openai.OpenAIError as e:
            failure = endpoint_failure(e, self.what, self.client, self.model, self.api_key_env)
            if failure is None:
                raise
            raise BackendError(failure) from None
        return self._streamed(request, response) if self.stream else self._whole(request, response)

    def _whole(self, request: GenRequest, response) -> GenResult:
        if not hasattr(response, "choices"):  # a 200 that is not a chat completion
            raise BackendError(
                f"{self.what} {self.base_url} answered with something other than a chat "
                f"completion ({str(response)[:120]!r}); is base_url an OpenAI-compatible API "
                "(usually ending in /v1)?"
            )
        choice = response.choices[0] if response.choices else None
        usage = getattr(response, "usage", None)
        text = ((choice.message.content if choice else None) or "").strip()
        return GenResult(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else self.count_tokens(request.messages),
            completion_tokens=usage.completion_tokens if usage else self.count_text(text),
            finish_reason="length" if choice and choice.finish_reason == "length" else "stop",
        )

    def _streamed(self, request: GenRequest, stream) -> GenResult:
        parts, logprobs, finish, usage = [], [], "stop", None
        for chunk in stream:
            if request.cancelled.is_set():
                stream.close()
                break
            usage = chunk.usage or usage
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta and choice.delta.content:
                parts.append(choice.delta.content)
                if request.on_text is not None:
                    request.on_text(choice.delta.content)
            if choice.logprobs and choice.logprobs.content:
                logprobs += [t.logprob for t in choice.logprobs.content]
            finish = choice.finish_reason or finish
        return GenResult(
            text="".join(parts).strip(),
            prompt_tokens=usage.prompt_tokens if usage else self.count_tokens(request.messages),
            completion_tokens=usage.completion_tokens if usage else len(logprobs),
            finish_reason="length" if finish == "length" else "stop",
            mean_logprob=sum(logprobs) / len(logprobs) if logprobs else None,
        )

    def _create(self, request: GenRequest):
        options: dict = {}
        if request.seed is not None:
            options["seed"] = request.seed
        if request.temperature > 0:
            options["top_p"] = request.top_p
        if request.stop:
            options["stop"] = list(request.stop)
        if self.stream:
            options["stream_options"] = {"include_usage": True}
        if self.logprobs:
            options["logprobs"] = True
        return self.client.chat.completions.create(
            model=self.model,
            messages=request.messages,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            stream=self.stream,
            **options,
        )
