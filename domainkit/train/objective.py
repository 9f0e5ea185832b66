"""The training objective: next-token cross-entropy on labelled positions only.

A causal LM's own ``loss`` projects every position onto the whole vocabulary (49,152 rows
for SmolLM2) before masking. In SFT most positions are system prompt, passages and
question, whose labels are -100, so that projection and its softmax are mostly wasted.
``LabelledTokenLoss`` runs the decoder, keeps the hidden states that predict a label and
projects only those: the same loss, computed in less time and memory.

Under autocast, peft would first copy each adapter's input to the adapters' fp32 dtype,
and autograd keeps those copies (about a fifth of a LoRA layer's activations) although
autocast runs the adapter's matrix product in bf16 anyway; the copies are switched off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from domainkit.train.data import IGNORE

# Config attributes of models that transform logits after the head; those keep their own loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class LabelledTokenLoss(torch.nn.Module):
    """Wraps a causal LM (peft-wrapped or not); ``forward`` returns the summed token loss.

    The sum (not the mean) lets the loop weight micro-batches by their label counts.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.selective = not any(getattr(base.config, a, None) for a in _LOGIT_TRANSFORMS)
        self.base = base
        self.adapters = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]

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
        hidden = self.base.get_decoder()(input_ids=input_ids, **inputs).last_hidden_state
        logits = self.base.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
