"""The ``local`` backend: transformers in this process.

Requests are generated together in one batch that new requests join between decoding
steps (``backends.decoding``), each row with its own sampling settings and stop markers,
streaming its text as it is produced; requests with ``choices`` are scored instead (the
log-probability of each choice), one by one. The runtime loads it with the trained
adapter merged into the base; the teacher with the teacher model; preference tuning wraps
the student it is training (``LocalBackend(lm)``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domainkit.backends.base import BACKENDS, BackendError, GenRequest, GenResult
from domainkit.models import LoadedLM
from domainkit.prompting import Message

if TYPE_CHECKING:
    from domainkit.backends.decoding import DecodeBatch, Row

log = logging.getLogger(__name__)


@BACKENDS.register("local")
class LocalBackend:
    """A transformers chat model in this process (``lm``: model, tokenizer, device)."""

    @classmethod
    def load(
        cls,
        model: str,
        adapter: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> LocalBackend:
        """``model`` (embedded name, hub id or path) on ``device``, in ``precision`` (auto:
        bf16 where the device computes it natively, else fp32); the adapter, when given,
        merged into a full-precision copy of the base, so answering costs no LoRA overhead."""
        import torch

        from domainkit.models import load_causal_lm
        from domainkit.utils.device import best_device, native_bf16

        device = best_device(device)
        bf16 = precision == "bf16" or (precision == "auto" and native_bf16(device))
        dtype = torch.bfloat16 if bf16 else torch.float32
        lm = load_causal_lm(model, device, dtype=torch.float32 if adapter else dtype)
        lm.model.eval()
        if adapter is not None:
            from peft import PeftModel

            merged = PeftModel.from_pretrained(lm.model, str(adapter)).merge_and_unload()
            lm.model = merged.to(dtype).eval()
        return cls(lm)

    @classmethod
    def from_runtime(cls, settings, *, student, adapter, device, name) -> LocalBackend:
        return cls.load(student, adapter, device, settings.precision)

    @classmethod
    def from_teacher(cls, settings) -> LocalBackend:
        return cls.load(settings.model, None, settings.device)

    def __init__(self, lm: LoadedLM):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self._tokenizer_lock = threading.Lock()
        config = lm.model.config
        self.context_limit = getattr(config, "max_position_embeddings", None) or 2048
        eos = lm.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.eos_ids.add(self.tokenizer.eos_token_id)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._ids(messages))

    def count_text(self, text: str) -> int:
        """Tokens of a reply's text (usage of a reply that was scored, not generated)."""
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _ids(self, messages: list[Message]) -> list[int]:
        # Request threads count tokens while the worker generates; a fast tokenizer may not
        # be entered by two threads at once when one changes its padding state.
        with self._tokenizer_lock:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate(self, requests: list[GenRequest]) -> list[GenResult | Exception]:
        """Complete ``requests`` together: replies with ``choices`` are scored, the others
        generated in one batch (``backends.decoding``), each row greedy or sampled by its
        own temperature and seed, streaming its text as it is produced."""
        results: dict[int, GenResult | BaseException] = {}
        for i, request in enumerate(requests):
            if request.choices:
                results[i] = self.score_choices(request)
        generated = [i for i, r in enumerate(requests) if not r.choices]
        if generated:
            batch = self.decoder(max_rows=len(generated))
            for i in generated:
                batch.add(self.row(requests[i], lambda result, i=i: results.__setitem__(i, result)))
            while len(batch):
                batch.step()
        out: list[GenResult | Exception] = []
        for i in range(len(requests)):
            result = results[i]
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out

    def decoder(self, max_rows: int, join_tokens: int | None = None) -> DecodeBatch:
        """A batch that rows join and leave between decoding steps (the runtime's scheduler
        keeps one running); ``join_tokens`` as in ``DecodeBatch``."""
        from domainkit.backends.decoding import DecodeBatch, RowText

        text = RowText(self.tokenizer, self.eos_ids)
        model = self.lm.model
        return DecodeBatch(model, text, cache_argument(model), max_rows, join_tokens=join_tokens)

    def row(self, request: GenRequest, done) -> Row:
        """``request`` as a row of a ``decoder`` batch; ``done`` receives its result."""
        from domainkit.backends.decoding import Row

        return Row(request, self._ids(request.messages), done)

    def score_choices(self, request: GenRequest) -> GenResult:
        """The log-probability of each choice as the complete reply (through the end of the
        turn), tokenized exactly as in training. The prompt runs once; its cache is shared
        by all choices."""
        import torch

        prompt = self._ids(request.messages)
        replies = []
        with self._tokenizer_lock:
            for choice in request.choices or []:
                full = self.tokenizer.apply_chat_template(
                    [*request.messages, {"role": "assistant", "content": choice}]
                )
                full = list(full["input_ids"] if hasattr(full, "keys") else full)
                if full[: len(prompt)] != prompt:
                    raise BackendError("the chat template does not render prefixes stably")
                replies.append(full[len(prompt) :] or [self.tokenizer.eos_token_id])
        model, device = self.lm.model, self.lm.device
        width = max(len(r) for r in replies)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
            cache: Any = getattr(out, "cache", None) or out.past_key_values
            cache.batch_repeat_interleave(len(replies))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in replies], device=device)
            positions = torch.arange(len(prompt), len(prompt) + width, device=device)
            more = model(
                input_ids=ids,
                attention_mask=torch.ones(len(replies), len(prompt) + width, device=device),
                position_ids=positions.expand(len(replies), -1),
                **{cache_argument(model): cache},
            )
            first = out.logits[0, -1].float().log_softmax(-1)
            rest = more.logits[:, :-1].float().log_softmax(-1)
        scores = []
        for row, reply in enumerate(replies):
            logprob = float(first[reply[0]])
            if len(reply) > 1:
                tail = torch.tensor(reply[1:], device=rest.device)
                logprob += float(rest[row, : len(reply) - 1].gather(-1, tail[:, None]).sum())
            scores.append(logprob)
        return GenResult("", len(prompt), 0, "stop", None, choice_logprobs=scores)


def cache_argument(model) -> str:
    """The forward argument that takes a KV cache (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
