"""Any OpenAI-compatible chat endpoint as teacher: OpenAI, vLLM, Ollama, llama.cpp, domainkit.

Requests run with bounded concurrency; the official client retries 408/409/429/5xx and
timeouts with exponential backoff, and what still fails becomes a ``TeacherError`` that
says what to check.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from domainkit.config.schema import TeacherConfig
from domainkit.synth.teachers.base import TEACHERS, Conversation, Sampling, TeacherError
from domainkit.utils.endpoints import endpoint_failure, openai_client


@TEACHERS.register("openai")
class OpenAITeacher:
    def __init__(self, settings: TeacherConfig):
        self.settings = settings
        self.batch_size = settings.concurrency * 2
        self.base_url = settings.base_url or "https://api.openai.com/v1"
        self.id = f"openai:{self.base_url}:{settings.model}"
        self.client = openai_client(
            self.base_url,
            "synth.teacher.base_url",
            settings.api_key_env,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        workers = min(self.settings.concurrency, max(1, len(conversations)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda c: self._one(c, sampling), conversations))

    def _one(self, conversation: Conversation, sampling: Sampling) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.settings.model,
                messages=conversation,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=sampling.seed,
            )
        except openai.OpenAIError as e:
            failure = endpoint_failure(
                e, "teacher endpoint", self.client, self.settings.model, self.settings.api_key_env
            )
            if failure is None:
                raise
            raise TeacherError(failure) from None
        if not hasattr(response, "choices"):  # a 200 that is not a chat completion
            raise TeacherError(
                f"teacher endpoint {self.base_url} answered with something other than a chat "
                f"completion ({str(response)[:120]!r}); is base_url an OpenAI-compatible API "
                "(usually ending in /v1)?"
            )
        if not response.choices:
            return ""
        return (response.choices[0].message.content or "").strip()
