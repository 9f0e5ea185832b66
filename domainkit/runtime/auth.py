"""API keys: where they come from, and the check every protected endpoint makes."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import Request

from domainkit.runtime.openai_api import APIError

API_KEYS_ENV = "DOMAINKIT_API_KEYS"
ADMIN_KEYS_ENV = "DOMAINKIT_ADMIN_KEYS"


def load_api_keys(path: Path | None = None, env: str = API_KEYS_ENV) -> set[str]:
    """Keys from ``$DOMAINKIT_API_KEYS`` (or ``env``; comma-separated) and from a file (one
    per line, ``#`` comments). An empty set means the API is open."""
    keys = {k.strip() for k in os.environ.get(env, "").split(",") if k.strip()}
    if path is not None:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
    return keys


def authorize(request: Request, keys: list[str]) -> None:
    """401 unless the request carries one of ``keys`` (none: the API is open)."""
    if not keys:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    # Compare against every key, in constant time, so timing reveals nothing.
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(given.encode(), key.encode())
    if not valid:
        raise APIError(
            401,
            "invalid or missing API key (send 'Authorization: Bearer KEY')",
            "invalid_request_error",
            code="invalid_api_key",
        )
