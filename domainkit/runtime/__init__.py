"""Serving the assistant: the OpenAI-compatible HTTP server, its wire format, keys and
metrics. How an answer is made is ``domainkit.answer``."""

from domainkit.answer.answers import Answer, Source
from domainkit.answer.assistant import Assistant
from domainkit.backends.scheduler import BusyError

__all__ = ["Answer", "Assistant", "BusyError", "Source"]
