"""The deployed assistant: answering policy, generation backends and the HTTP server."""

from domainkit.runtime.assistant import Answer, Assistant, Source
from domainkit.runtime.generation import GENERATORS, BusyError

__all__ = ["GENERATORS", "Answer", "Assistant", "BusyError", "Source"]
