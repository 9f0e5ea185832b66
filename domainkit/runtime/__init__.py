"""The deployed assistant: answering policy, generation backends and the HTTP server."""

from domainkit.runtime.answers import Answer, Source
from domainkit.runtime.assistant import Assistant
from domainkit.runtime.generation import GENERATORS, BusyError

# The built-in backends register themselves with GENERATORS.
from domainkit.runtime import local_backend, openai_backend  # noqa: F401, E402  isort: skip

__all__ = ["GENERATORS", "Answer", "Assistant", "BusyError", "Source"]
