"""The ``openai`` runtime backend: any OpenAI-compatible chat endpoint (vLLM, llama.cpp,
Ollama ...), one request per call, a request's error failing that request only.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from domainkit.prompting import Message
from domainkit.runtime.generation import GENERATORS, BackendError, GenRequest, GenResult
from domainkit.utils.endpoints import endpoint_failure, openai_client

log = logging.getLogger(__name__)


RETRIES = 2  # the client's own, with backoff, for 408/409/429/5xx and timeouts


@GENERATORS.register("openai")
class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint; ``max_batch`` requests in flight at once."""

    @classmethod
    def from_runtime(cls, settings, *, student, adapter, device, name) -> OpenAIGenerator:
        return cls(
            model=settings.model or name,
            base_url=settings.base_url,
            api_key_env=settings.api_key_env,
            tokenizer_model=student,
        )

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "DOMAINKIT_BACKEND_API_KEY",
        timeout: float = 120.0,
        tokenizer_model: str | None = None,
        **_,
    ):
        if not base_url:
            raise BackendError("runtime.backend is openai but runtime.base_url is not set")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.client = openai_client(
            base_url, "runtime.base_url", api_key_env, timeout=timeout, max_retries=RETRIES
        )
        self.context_limit = 1 << 30
        self._tokenizer = None
        if tokenizer_model:  # for history trimming; a character estimate otherwise
            from transformers import AutoTokenizer

            from domainkit.models import resolve_causal_lm

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_causal_lm(tokenizer_model))
            self.context_limit = self._tokenizer.model_max_length
        self.logprobs = True

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
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            return list(pool.map(self._one_or_error, requests))

    def _one_or_error(self, request: GenRequest) -> GenResult | Exception:
        try:
            return self._one(request)
        except Exception as e:  # noqa: BLE001 - handed to that request's caller
            return e

    def _one(self, request: GenRequest) -> GenResult:
        import openai

        try:
            stream = self._create(request)
        except openai.BadRequestError as e:
            if not self.logprobs or "logprob" not in str(e).lower():
                raise BackendError(f"{self.base_url}: {e}") from None
            log.warning(
                "%s does not return log-probabilities; no closed-book confidence", self.model
            )
            self.logprobs = False
            stream = self._create(request)
        except openai.OpenAIError as e:
            failure = endpoint_failure(
                e, "runtime endpoint", self.client, self.model, self.api_key_env
            )
            if failure is None:
                raise
            raise BackendError(failure) from None
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
        return self.client.chat.completions.create(
            model=self.model,
            messages=request.messages,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            stream=True,
            **({"seed": request.seed} if request.seed is not None else {}),
            stream_options={"include_usage": True},
            **({"logprobs": True} if self.logprobs else {}),
        )
