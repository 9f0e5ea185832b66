"""The built-in teachers: the built-in chat backends (``domainkit.backends``) asked for
whole replies.

``hf`` (alias ``transformers``, ``local``) is the ``local`` backend with the teacher model,
loaded on first use; ``openai`` is the ``openai`` backend pointed at
``synth.teacher.base_url`` (OpenAI, vLLM, Ollama, llama.cpp, domainkit), ``concurrency``
requests in flight. A backend's failure becomes a ``TeacherError`` that says what to check.
"""

from __future__ import annotations

from domainkit.backends import BACKENDS
from domainkit.backends.endpoint import EndpointBackend
from domainkit.config.schema import TeacherConfig
from domainkit.synth.teachers.base import TEACHERS, BackendTeacher


@TEACHERS.register("hf", "transformers", "local")
def local_teacher(settings: TeacherConfig) -> BackendTeacher:
    """Any Hugging Face chat model in this process; the embedded SmolLM2-135M-Instruct by
    default."""
    return BackendTeacher(
        f"hf:{settings.model}",
        settings.batch_size,
        lambda: BACKENDS.get("local").from_teacher(settings),
    )


@TEACHERS.register("openai")
def endpoint_teacher(settings: TeacherConfig) -> BackendTeacher:
    """Any OpenAI-compatible chat endpoint; its host is checked now, before any call."""
    backend = EndpointBackend.from_teacher(settings)
    return BackendTeacher(
        f"openai:{backend.base_url}:{settings.model}", settings.concurrency * 2, lambda: backend
    )
