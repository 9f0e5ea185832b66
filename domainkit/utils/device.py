"""Pick the best available torch device without making one a requirement."""

from __future__ import annotations

import os

from domainkit.errors import ConfigError

# 0: treat the CPU as one without native bf16 (fp32 compute, as on CPUs without AVX512-BF16
# or AMX), 1: as one with it; unset: as torch finds it.
CPU_BF16_ENV = "DOMAINKIT_CPU_BF16"


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


def native_bf16(device: str) -> bool:
    """Whether ``device`` runs bf16 matrix products in hardware; for a CPU,
    ``$DOMAINKIT_CPU_BF16`` (0 or 1) overrides what torch finds.

    Raises:
        ConfigError: ``$DOMAINKIT_CPU_BF16`` is set to something other than 0 or 1.
    """
    if device == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ConfigError(f"${CPU_BF16_ENV}: got {forced!r}; expected 0 or 1 (or unset)")
        return forced == "1"
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
