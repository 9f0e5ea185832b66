"""The deployed assistant: answering policy, the request queue and the HTTP server."""

from domainkit.runtime.answers import Answer, Source
from domainkit.runtime.assistant import Assistant
from domainkit.runtime.scheduler import BusyError

__all__ = ["Answer", "Assistant", "BusyError", "Source"]
