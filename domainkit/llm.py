"""Loading causal LMs and generating from them in batches (shared by teacher, eval, runtime)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def render_prompts(lm: LoadedLM, conversations: Sequence[list[dict]]) -> list[str]:
    return [
        lm.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]


def generate_batch(
    lm: LoadedLM,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """Complete rendered prompts, ``batch_size`` at a time, longest first to limit padding.

    Returns:
        The completions (new text only), in the order of ``prompts``.
    """
    import torch

    tokenizer = lm.tokenizer
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(lm.device)
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            generated = lm.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **(sampling if temperature > 0 else {"do_sample": False}),
            )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        for row, text in zip(
            rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
        ):
            out[row] = text.strip()
    return out
