"""Loading causal LMs for inference (the ``local`` chat backend)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from domainkit.models import resolve_causal_lm
from domainkit.utils.device import best_device

log = logging.getLogger(__name__)


@dataclass
class LoadedLM:
    model: object
    tokenizer: object
    device: str


def load_causal_lm(name: str, device: str = "auto") -> LoadedLM:
    """Load a chat model and its tokenizer for inference (left padding for batches)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_causal_lm(name)
    device = best_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    log.info("loaded %s on %s (%s)", name, device, dtype)
    return LoadedLM(model, tokenizer, device)
