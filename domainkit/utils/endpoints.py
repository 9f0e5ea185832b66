"""Which hosts may receive documents and API keys.

A ``domain.yaml`` or recipe is often shared, and it names the teacher's and the runtime's
``base_url``. Without a check, a shared file could send the user's documents and
``$OPENAI_API_KEY`` to any host it names. Loopback servers (vLLM, Ollama, llama.cpp on this
machine) and OpenAI's own API are allowed; any other host must be approved by the user in
their environment, which a shared file cannot do.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from domainkit.errors import ConfigError

APPROVED_HOSTS_ENV = "DOMAINKIT_APPROVED_HOSTS"
_TRUSTED = {"api.openai.com", "localhost"}


def approved_hosts() -> set[str]:
    return {h.strip().lower() for h in os.environ.get(APPROVED_HOSTS_ENV, "").split(",") if h}


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(base_url: str, what: str, key_env: str) -> None:
    """Refuse a ``base_url`` whose host the user has not approved.

    Raises:
        ConfigError: Naming the host and how to approve it.
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if not host:
        raise ConfigError(f"{what}: base_url {base_url!r} is not a URL (e.g. http://host:8000/v1)")
    if _loopback(host) or host == "localhost" or host in approved_hosts():
        return
    if host in _TRUSTED:
        if urlsplit(base_url).scheme != "https":
            raise ConfigError(f"{what}: {base_url} must use https (the key would travel in clear)")
        return
    raise ConfigError(
        f"{what} points at {host}: domainkit would send it your documents and ${key_env}. "
        f"A domain or recipe file cannot approve a host; if you trust it, run "
        f"`export {APPROVED_HOSTS_ENV}={host}` (comma-separate several) and try again"
    )


def openai_client(base_url: str, what: str, key_env: str, *, timeout: float, max_retries: int):
    """An ``openai.OpenAI`` client for an approved endpoint (``check_endpoint``), keyed from
    ``$key_env``: local servers (vLLM, Ollama, llama.cpp) accept any key, OpenAI needs one."""
    import openai

    check_endpoint(base_url, what, key_env)
    return openai.OpenAI(
        base_url=base_url,
        api_key=os.environ.get(key_env) or "no-key",
        timeout=timeout,
        max_retries=max_retries,
    )


def endpoint_failure(error: Exception, what: str, client, model: str, key_env: str) -> str | None:
    """What a user needs to read about a failed call through ``client`` (``openai_client``),
    ``what`` naming the endpoint ("teacher endpoint"), or None when ``error`` is not the
    endpoint's."""
    import openai

    base_url = str(client.base_url).rstrip("/")
    where = f"{what} {base_url}"
    if isinstance(error, openai.APITimeoutError):
        return f"{where} timed out after {client.timeout:g}s and {client.max_retries} retries"
    if isinstance(error, openai.APIConnectionError):
        return (
            f"cannot reach the {what} {base_url} ({error.__cause__ or error}); is the server "
            "running and the base_url right?"
        )
    if isinstance(error, openai.AuthenticationError):
        return f"{where} rejected the API key; set ${key_env}"
    if isinstance(error, openai.NotFoundError):
        return (
            f"{where} answered 404 for model {model!r}: check base_url (usually ends in /v1) "
            f"and the model name ({error.message})"
        )
    if isinstance(error, openai.APIStatusError):
        return (
            f"{where} failed with HTTP {error.status_code} after {client.max_retries} retries: "
            f"{error.message}"
        )
    return None
