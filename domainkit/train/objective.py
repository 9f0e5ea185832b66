"""The training objective: next-token cross-entropy on labelled positions only.

A causal LM's own ``loss`` projects every position onto the whole vocabulary (49,152 rows
for SmolLM2) before masking. In SFT most positions are system prompt, passages and
question, whose labels are -100, so that projection and its softmax are mostly wasted.
``LabelledTokenLoss`` runs the decoder, keeps the hidden states that predict a label and
projects only those: the same loss, computed in less time and memory. The tokens every row
of a batch begins with (the system prompt, a quarter of a typical sample) are run once and
their keys and values stretched over the rows; gradients flow back through the stretch, so
the loss and its gradients are those of running every row whole.

Under autocast, peft would first copy each adapter's input to the adapters' fp32 dtype,
and autograd keeps those copies (about a fifth of a LoRA layer's activations) although
autocast runs the adapter's matrix product in bf16 anyway; the copies are switched off.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from domainkit.train.data import IGNORE

# A shorter common start is not worth a second pass through the decoder.
MIN_SHARED = 16

# Config attributes of models that transform logits after the head; those keep their own loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class LabelledTokenLoss(torch.nn.Module):
    """Wraps a causal LM (peft-wrapped or not); ``forward`` returns the summed token loss.

    The sum (not the mean) lets the loop weight micro-batches by their label counts.
    """

    def __init__(self, model: Any):  # a transformers or peft model
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.selective = not any(getattr(base.config, a, None) for a in _LOGIT_TRANSFORMS)
        self.base: Any = base
        self.adapters: list[Any] = [
            m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")
        ]

    def forward(self, input_ids, labels, **inputs) -> torch.Tensor:
        # Set, not restored: a checkpointed layer is recomputed in the backward pass, after
        # this call returns, and must cast (or not) as it did here.
        cast = not torch.is_autocast_enabled(input_ids.device.type)
        for adapter in self.adapters:
            adapter.cast_input_dtype_enabled = cast
        return self._loss(input_ids, labels, **inputs)

    def _loss(self, input_ids, labels, **inputs) -> torch.Tensor:
        targets = labels[:, 1:]
        keep = targets != IGNORE
        if not self.selective:
            logits = self.model(input_ids=input_ids, **inputs).logits[:, :-1]
            return F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
        shared = self._shared_length(input_ids, labels, inputs)
        if shared:
            hidden = self._decode_after(shared, input_ids, **inputs)
            keep, targets = keep[:, shared:], targets[:, shared:]
        else:
            hidden = self.base.get_decoder()(input_ids=input_ids, **inputs).last_hidden_state
        logits = self.base.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")

    def _shared_length(self, input_ids, labels, inputs: dict) -> int:
        """How many leading tokens to run once: those every row begins with, up to the one
        before the first label (their hidden states predict nothing); 0 when not worth it or
        not possible (packed rows, checkpointed layers, caches other than the plain one)."""
        if len(input_ids) < 2 or "attention_mask" not in inputs:
            return 0
        if getattr(self.base, "is_activation_checkpointing", False):
            return 0
        common = int((input_ids == input_ids[:1]).all(dim=0).long().cumprod(dim=0).sum())
        first_label = int((labels != IGNORE).long().argmax(dim=1).min())
        shared = min(common, first_label - 1)
        return shared if shared >= MIN_SHARED and self._cache_argument else 0

    @functools.cached_property
    def _cache_argument(self) -> str | None:
        """The decoder's cache argument; None when its cache is not the plain one (a
        sliding window) that can be stretched over rows. Looked up once, not every pass."""
        from transformers import DynamicCache

        from domainkit.backends.decoding import joinable
        from domainkit.backends.local import cache_argument

        if not joinable(DynamicCache(config=self.base.config)):
            return None
        return cache_argument(self.base.get_decoder())

    def _decode_after(self, shared: int, input_ids, attention_mask, position_ids=None, **rest):
        """Hidden states from position ``shared`` on; the first ``shared`` tokens run once."""
        from transformers import DynamicCache

        from domainkit.backends.decoding import stretch

        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        position_ids = position_ids.expand(len(input_ids), -1)
        decoder, cache = self.base.get_decoder(), DynamicCache(config=self.base.config)
        argument = self._cache_argument
        assert argument is not None  # _shared_length shares nothing otherwise
        cached = {argument: cache, "use_cache": True}
        decoder(
            input_ids=input_ids[:1, :shared],
            attention_mask=attention_mask[:1, :shared],
            position_ids=position_ids[:1, :shared],
            **cached,
            **rest,
        )
        stretch(cache, len(input_ids))
        return decoder(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, shared:],
            **cached,
            **rest,
        ).last_hidden_state


class AdaLoraSchedule:
    """What AdaLoRA adds to a training step, which peft does only inside its own forward
    with labels (this loop computes its own loss): the orthogonality penalty on the
    singular vectors, and the rank budget re-allocated after each optimizer step.
    ``of(model)`` is None for any other method."""

    def __init__(self, tuner, adapter: str):
        self.tuner, self.adapter = tuner, adapter
        self.weight = tuner.peft_config[adapter].orth_reg_weight

    @classmethod
    def of(cls, model) -> AdaLoraSchedule | None:
        tuner = getattr(model, "base_model", None)
        if tuner is None or not hasattr(tuner, "update_and_allocate"):
            return None
        return cls(tuner, tuner.trainable_adapter_name)

    def penalty(self) -> torch.Tensor | float:
        """``orth_reg_weight`` times the mean distance of each P Pᵀ and Qᵀ Q from I."""
        if self.weight <= 0:
            return 0.0
        terms = []
        for name, p in self.tuner.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and self.adapter in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                identity = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
                terms.append(torch.linalg.matrix_norm(cov - identity))
        return self.weight * torch.stack(terms).mean() if terms else 0.0

    def after_step(self, step: int) -> None:
        """Re-allocate the rank budget; needs this step's gradients, so before they are
        cleared."""
        self.tuner.update_and_allocate(step)
