"""The ``local`` backend: transformers in this process.

Waiting requests are generated together in one left-padded batch, each row with its own
sampling settings and stop markers, streaming each row's text as it is produced; requests
with ``choices`` are scored instead (the log-probability of each choice), one by one. The
runtime loads it with the trained adapter merged into the base; the teacher with the
teacher model; preference tuning wraps the student it is training (``LocalBackend(lm)``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from domainkit.backends.base import BACKENDS, BackendError, GenRequest, GenResult
from domainkit.llm import LoadedLM
from domainkit.prompting import Message

log = logging.getLogger(__name__)


@BACKENDS.register("local")
class LocalBackend:
    """A transformers chat model in this process (``lm``: model, tokenizer, device)."""

    @classmethod
    def load(cls, model: str, adapter: Path | None = None, device: str = "auto") -> LocalBackend:
        """``model`` (embedded name, hub id or path) on ``device``; the adapter, when given,
        merged into a full-precision copy of the base, so answering costs no LoRA overhead."""
        from domainkit.llm import load_causal_lm

        lm = load_causal_lm(model, device)
        if adapter is not None:
            from peft import PeftModel

            lm.model = PeftModel.from_pretrained(lm.model, str(adapter)).merge_and_unload().eval()
        return cls(lm)

    @classmethod
    def from_runtime(cls, settings, *, student, adapter, device, name) -> LocalBackend:
        return cls.load(student, adapter, device)

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

    # Scores ``choices`` itself (one request at a time; the scheduler does not hold a
    # scored answer back for the rest of its batch).
    scores_choices = True

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

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Complete ``requests`` together: replies with ``choices`` are scored, the others
        generated in one left-padded batch, each row greedy or sampled by its own
        temperature and seed."""
        results: dict[int, GenResult] = {}
        generated = [i for i, r in enumerate(requests) if not r.choices]
        for i, request in enumerate(requests):
            if request.choices:
                results[i] = self._score(request)
        if generated:
            outputs = self._generate([requests[i] for i in generated])
            for i, result in zip(generated, outputs, strict=True):
                results[i] = result
        return [results[i] for i in range(len(requests))]

    def _score(self, request: GenRequest) -> GenResult:
        """The log-probability of each choice as the complete reply (through the end of the
        turn), tokenized exactly as in training. The prompt runs once; its cache is shared
        by all choices."""
        import torch

        prompt = self._ids(request.messages)
        replies = []
        with self._tokenizer_lock:
            for choice in request.choices:
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
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            cache.batch_repeat_interleave(len(replies))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in replies], device=device)
            positions = torch.arange(len(prompt), len(prompt) + width, device=device)
            more = model(
                input_ids=ids,
                attention_mask=torch.ones(len(replies), len(prompt) + width, device=device),
                position_ids=positions.expand(len(replies), -1),
                **{_cache_argument(model): cache},
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

    def _generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        tokenizer, model = self.tokenizer, self.lm.model
        prompts = [self._ids(r.messages) for r in requests]
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        limits = torch.tensor([r.max_new_tokens for r in requests])
        streamer = _RowStreamer(tokenizer, requests, self.eos_ids)
        chosen = _ChosenLogprobs()

        class _PerRowLimit(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                chosen.keep(ids[:, -1])
                return (ids.shape[1] - width >= limits.to(ids.device)) | streamer.done_mask(
                    ids.device
                )

        # generate() decodes greedily; rows that sample draw their token in _RowSampler
        # (after _ChosenLogprobs has seen the model's own distribution), so every row keeps
        # its own temperature and seed in one batch.
        sampler = _RowSampler(requests, self.lm.device)
        greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        with torch.inference_mode():
            model.generate(
                input_ids=input_ids.to(self.lm.device),
                attention_mask=mask.to(self.lm.device),
                max_new_tokens=int(limits.max()),
                logits_processor=LogitsProcessorList([chosen, sampler]),
                stopping_criteria=StoppingCriteriaList([_PerRowLimit()]),
                streamer=streamer,
                pad_token_id=pad,
                **greedy,
            )
        streamer.end()
        results = []
        for i in range(len(requests)):
            n = len(streamer.tokens[i])
            results.append(
                GenResult(
                    text=streamer.texts[i].strip(),
                    prompt_tokens=len(prompts[i]),
                    completion_tokens=n,
                    finish_reason="stop" if streamer.finished[i] else "length",
                    mean_logprob=chosen.mean(i, max(1, n)),
                )
            )
        return results


class _ChosenLogprobs:
    """The log-probability of each token a batch keeps, one step at a time.

    As a logits processor it runs before sampling's temperature and top-p, so it sees the
    model's own distribution, and keeps only the current step's log-softmax; the stopping
    check (which runs once the step's tokens are chosen) then records each row's chosen
    token. Memory is one batch x vocabulary buffer plus batch x steps floats, never the
    batch x steps x vocabulary history that ``output_logits`` would keep.
    """

    def __init__(self):
        self._step = None
        self._kept: list = []

    def __call__(self, input_ids, scores):
        self._step = scores.float().log_softmax(-1)
        return scores

    def keep(self, tokens) -> None:
        if self._step is not None:
            self._kept.append(self._step.gather(-1, tokens[:, None]).squeeze(-1).cpu())
            self._step = None

    def mean(self, row: int, steps: int) -> float:
        values = [float(step[row]) for step in self._kept[:steps]]
        return sum(values) / len(values) if values else 0.0


class _RowSampler:
    """Per-row sampling as a logits processor: each row with a temperature draws its token
    (temperature, then top-k and nucleus top-p, transformers' defaults for sampling) with
    its own random generator and leaves only that token possible, so the batch's greedy
    step takes it; greedy rows pass unchanged. Rows need not share a temperature, and a
    seeded row gives the same reply whatever its batch-mates."""

    TOP_K = 50

    def __init__(self, requests: list[GenRequest], device):
        import torch

        self.rows = [i for i, r in enumerate(requests) if r.temperature > 0]
        self.temperatures = [requests[i].temperature for i in self.rows]
        self.top_ps = [requests[i].top_p for i in self.rows]
        self.generators = []
        for i in self.rows:
            generator = torch.Generator(device=device)
            if requests[i].seed is None:
                generator.seed()  # a fresh, non-deterministic seed; the global RNG is untouched
            else:
                generator.manual_seed(requests[i].seed)
            self.generators.append(generator)

    def __call__(self, input_ids, scores):
        import torch

        if not self.rows:
            return scores
        out = scores.clone()
        for row, temperature, top_p, generator in zip(
            self.rows, self.temperatures, self.top_ps, self.generators, strict=True
        ):
            probs = (scores[row].float() / temperature).softmax(-1)
            ordered, order = probs.topk(min(self.TOP_K, probs.shape[-1]))
            ordered = ordered / ordered.sum()
            beyond = ordered.cumsum(-1) - ordered > top_p  # keep the smallest head >= P
            ordered[beyond] = 0.0
            pick = order[torch.multinomial(ordered, 1, generator=generator)]
            out[row] = float("-inf")
            out[row, pick] = 0.0
        return out


def _cache_argument(model) -> str:
    """The forward argument that takes a KV cache (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _RowStreamer:
    """A transformers streamer for a whole batch: splits each step's tokens by row, stops
    a row at its end-of-turn token or one of its request's stop markers, and hands each
    row's new text to its request. Text that may be the start of a marker is held back
    until it is not."""

    def __init__(self, tokenizer, requests: list[GenRequest], eos_ids: set[int]):
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        n = len(requests)
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.texts = [""] * n  # what has been handed out
        self.finished = [False] * n
        self.prompt_seen = False

    def done_mask(self, device):
        import torch

        for i, request in enumerate(self.requests):
            if request.cancelled.is_set():
                self.finished[i] = True
        return torch.tensor(self.finished, device=device)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(len(self.requests), -1)[:, -1].tolist()):
            if self.finished[i] or len(self.tokens[i]) >= self.requests[i].max_new_tokens:
                continue
            if token in self.eos_ids:
                self.finished[i] = True
                continue
            self.tokens[i].append(token)
            self._emit(i, final=False)

    def _emit(self, i: int, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True).lstrip()
        for marker in self.requests[i].stop:
            if marker in text:
                text, self.finished[i] = text[: text.index(marker)], True
        if not final and not self.finished[i]:
            if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
                return
            text = text[: len(text) - _marker_prefix(text, self.requests[i].stop)]
        if len(text) <= len(self.texts[i]):
            return
        new, self.texts[i] = text[len(self.texts[i]) :], text
        if self.requests[i].on_text is not None:
            self.requests[i].on_text(new)

    def end(self) -> None:
        for i in range(len(self.requests)):
            self._emit(i, final=True)


def _marker_prefix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins a stop marker."""
    for size in range(min(len(text), max(map(len, markers), default=0)), 0, -1):
        if any(m.startswith(text[-size:]) for m in markers):
            return size
    return 0
