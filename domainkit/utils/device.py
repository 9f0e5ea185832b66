"""Pick the best available torch device without making one a requirement."""

from __future__ import annotations


def best_device(requested: str | None = None) -> str:
    """Return ``requested`` if given, else ``cuda``, ``mps`` or ``cpu``, whichever exists first."""
    if requested and requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
