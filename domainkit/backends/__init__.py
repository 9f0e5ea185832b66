"""Chat backends: one protocol (``ChatBackend``) for everything that asks a model for replies,
the runtime, the synth teacher, the judge and preference tuning; built-ins ``local`` and
``openai``, others as plug-ins of the ``domainkit.backends`` entry-point group."""

from domainkit.backends.base import (
    BACKENDS,
    BackendError,
    BackendKind,
    ChatBackend,
    GenRequest,
    GenResult,
    JoinsRunningBatch,
    ScoresChoices,
)

# The built-in backends register themselves with BACKENDS.
from domainkit.backends import endpoint, local  # noqa: F401, E402  isort: skip

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendKind",
    "ChatBackend",
    "GenRequest",
    "GenResult",
    "JoinsRunningBatch",
    "ScoresChoices",
]
