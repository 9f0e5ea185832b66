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
