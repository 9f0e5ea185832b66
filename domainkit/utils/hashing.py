"""Stable short content hashes used for ids and fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def text_hash(*parts: str, length: int = 16) -> str:
    """sha256 of the parts joined by NUL, as ``length`` hex characters."""
    h = hashlib.sha256("\0".join(parts).encode("utf-8"))
    return h.hexdigest()[:length]


def json_hash(obj: Any, length: int = 16) -> str:
    return text_hash(json.dumps(obj, sort_keys=True, default=str), length=length)


def file_hash(path: Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def code_hash(*packages: str) -> str:
    """Hash of domainkit's own source files in ``packages`` (folders or modules under
    ``domainkit/``, e.g. ``"ingest"``, ``"prompting"``): an edit to them changes it."""
    from domainkit import __version__

    root = Path(__file__).resolve().parents[1]
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    files += [root / f"{pkg}.py" for pkg in packages if (root / f"{pkg}.py").is_file()]
    return json_hash([__version__, [(f.relative_to(root).as_posix(), file_hash(f)) for f in files]])
