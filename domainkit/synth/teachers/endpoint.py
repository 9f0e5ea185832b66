"""Any OpenAI-compatible chat endpoint as teacher: OpenAI, vLLM, Ollama, llama.cpp, domainkit.

Requests run with bounded concurrency; the official client retries 408/409/429/5xx and
timeouts with exponential backoff, and what still fails becomes a ``TeacherError`` that
says what to check.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from domainkit.config.schema import TeacherConfig
from domainkit.synth.teachers.base import TEACHERS, Conversation, Sampling, TeacherError
from domainkit.utils.endpoints import check_endpoint


@TEACHERS.register("openai")
class OpenAITeacher:
    def __init__(self, settings: TeacherConfig):
        import openai

        self.settings = settings
        self.batch_size = settings.concurrency * 2
        self.base_url = settings.base_url or "https://api.openai.com/v1"
        check_endpoint(self.base_url, "synth.teacher.base_url", settings.api_key_env)
        self.id = f"openai:{self.base_url}:{settings.model}"
        # Local servers (vLLM, Ollama, llama.cpp) accept any key; OpenAI itself needs one.
        api_key = os.environ.get(settings.api_key_env) or "no-key"
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
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
        except openai.APITimeoutError:
            raise TeacherError(
                f"teacher endpoint {self.base_url} timed out after {self.settings.timeout:g}s "
                f"and {self.settings.max_retries} retries"
            ) from None
        except openai.APIConnectionError as e:
            raise TeacherError(
                f"cannot reach the teacher endpoint {self.base_url} ({e.__cause__ or e}); "
                "is the server running and the base_url right?"
            ) from None
        except openai.AuthenticationError:
            raise TeacherError(
                f"teacher endpoint {self.base_url} rejected the API key; set "
                f"${self.settings.api_key_env}"
            ) from None
        except openai.NotFoundError as e:
            raise TeacherError(
                f"teacher endpoint {self.base_url} answered 404 for model "
                f"{self.settings.model!r}: check base_url (usually ends in /v1) and the model "
                f"name ({e.message})"
            ) from None
        except openai.APIStatusError as e:
            raise TeacherError(
                f"teacher endpoint {self.base_url} failed with HTTP {e.status_code} after "
                f"{self.settings.max_retries} retries: {e.message}"
            ) from None
        if not hasattr(response, "choices"):  # a 200 that is not a chat completion
            raise TeacherError(
                f"teacher endpoint {self.base_url} answered with something other than a chat "
                f"completion ({str(response)[:120]!r}); is base_url an OpenAI-compatible API "
                "(usually ending in /v1)?"
            )
        if not response.choices:
            return ""
        return (response.choices[0].message.content or "").strip()
