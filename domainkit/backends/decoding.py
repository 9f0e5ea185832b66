"""Continuous batching for the ``local`` backend: rows join a running batch between decoding
steps and leave it as soon as they finish.

A batch generated with ``model.generate`` holds every row until the longest is done and
takes no newcomer until then: a request arriving during a 64-token answer waits for all of
it before its first token. Here the batch is a set of rows decoded one token per step with
one KV cache. A new request's prompt is prefilled on its own, in chunks of
``prefill_chunk`` tokens between the running rows' steps (a long prompt does not stall
their streams for its whole length), and then joins the running cache, left-padded to the
same length. A finished or cancelled row leaves at once and frees its place; the columns
no remaining row uses are cut off the cache.

Each row keeps its own sampling (greedy, or temperature and top-p with its own seeded
random generator), its own stop markers and token limit, and the log-probability of the
tokens it chose under the model's own distribution, accumulated step by step: memory is
one batch x vocabulary buffer per step, never a logits history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from domainkit.backends.base import GenRequest, GenResult

log = logging.getLogger(__name__)

TOP_K = 50  # sampled rows draw from the 50 most likely tokens (transformers' default)
# Rows joining together run the tokens they all begin with once, when there are this many.
MIN_SHARED = 16


@dataclass
class Row:
    """One request being generated: its prompt, the tokens chosen so far and its text.

    Attributes:
        request: The request.
        prompt: Its prompt's token ids.
        done: Called once with the row's result (or the exception that ended it).
        tokens: Chosen tokens, the end-of-turn token excluded.
        text: The text handed out so far (stop markers and what follows excluded).
    """

    request: GenRequest
    prompt: list[int]
    done: Callable[[GenResult | BaseException], None]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finished: bool = False
    stopped: bool = False  # ended by the end-of-turn token or a stop marker
    logprob: float = 0.0
    steps: int = 0
    generator: torch.Generator | None = None

    def result(self) -> GenResult:
        return GenResult(
            text=self.text.strip(),
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.tokens),
            finish_reason="stop" if self.stopped or not self.tokens else "length",
            mean_logprob=self.logprob / self.steps if self.steps else 0.0,
        )


class RowText:
    """Turns a row's tokens into streamed text: stops at the end-of-turn token or one of
    the request's stop markers, and holds back text that may be the start of a marker (or
    half of a multi-byte character) until it is not."""

    def __init__(self, tokenizer, eos_ids: set[int]):
        self.tokenizer, self.eos_ids = tokenizer, eos_ids

    def take(self, row: Row, token: int) -> None:
        """Add ``token`` to ``row``; marks the row finished when it ends there."""
        request = row.request
        if token in self.eos_ids:
            row.finished = row.stopped = True
            return
        row.tokens.append(token)
        self._emit(row, final=False)
        if len(row.tokens) >= request.max_new_tokens:
            row.finished = True

    def end(self, row: Row) -> None:
        """Hand out what was held back, now that the row has ended."""
        self._emit(row, final=True)

    def _emit(self, row: Row, final: bool) -> None:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True).lstrip()
        markers = row.request.stop
        for marker in markers:
            if marker in text:
                text = text[: text.index(marker)]
                row.finished = row.stopped = True
        if not final and not row.finished:
            if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
                return
            text = text[: len(text) - _marker_prefix(text, markers)]
        if len(text) <= len(row.text):
            return
        new, row.text = text[len(row.text) :], text
        if row.request.on_text is not None:
            try:
                row.request.on_text(new)
            except Exception:  # one caller's broken stream ends its row, not the batch
                log.exception("streaming a reply failed; its generation is stopped")
                row.request.cancelled.set()
                row.finished = row.stopped = True


class DecodeBatch:
    """Rows generated together, joining and leaving between decoding steps.

    Args:
        model: A causal LM whose cache is transformers' ``DynamicCache``.
        text: Turns chosen tokens into each row's text.
        cache_argument: The forward argument that takes the cache.
        max_rows: Most rows running and joining at once.
        prefill_chunk: Prompt tokens prefilled per step while other rows are running.
        join_tokens: Most prompt tokens of rows that join together (at least one row);
            None: every waiting row at once. A server keeps it small, so the first of many
            requests arriving together start streaming while the rest are prefilled; a
            batch job (the synth teacher) prefills them all in one pass.
    """

    def __init__(
        self,
        model,
        text: RowText,
        cache_argument: str,
        max_rows: int = 8,
        prefill_chunk: int = 256,
        join_tokens: int | None = None,
    ):
        self.model, self.text, self.cache_argument = model, text, cache_argument
        self.max_rows, self.prefill_chunk = max_rows, prefill_chunk
        self.join_tokens = join_tokens
        self.device = next(model.parameters()).device
        self.running: list[Row] = []
        self.waiting: list[Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # (rows, columns): 1 where a row has a token
        self._next: torch.Tensor | None = None  # each running row's last chosen token
        self._joining: _Prefill | None = None

    def __len__(self) -> int:
        joining = len(self._joining.rows) if self._joining else 0
        return len(self.running) + len(self.waiting) + joining

    @property
    def free(self) -> int:
        return self.max_rows - len(self)

    def add(self, row: Row) -> None:
        """Queue ``row``: its prefill starts at the next step."""
        if row.request.temperature > 0:
            row.generator = torch.Generator(device=self.device)
            if row.request.seed is None:
                row.generator.seed()  # fresh, and the global generator is untouched
            else:
                row.generator.manual_seed(row.request.seed)
        self.waiting.append(row)

    def step(self) -> None:
        """One prefill chunk of the joining rows, then one token for every running row. An
        error ends every row with it (their ``done`` receives it); the batch is then empty
        and takes new rows as before."""
        self._drop_cancelled()
        self._drop_finished()
        try:
            with torch.inference_mode():
                if self._joining is None and self.waiting and self._may_join():
                    self._joining = _Prefill(self, self._next_group())
                if self._joining is not None:
                    self._prefill_step()
                if self.running:
                    self._decode_step()
        # Handed to the rows' callers, whatever it is (a KeyboardInterrupt inside the model
        # too: nobody else could catch it in a serving thread).
        except BaseException as error:
            log.exception("generation failed")
            self.fail(error)
            return
        self._drop_finished()

    def fail(self, error: BaseException) -> None:
        """End every row with ``error`` and empty the batch."""
        rows = self.running + self.waiting + (self._joining.rows if self._joining else [])
        self.running, self.waiting, self._joining = [], [], None
        self._cache = self._mask = self._next = None
        for row in rows:
            row.done(error)

    # -- steps -----------------------------------------------------------------------------

    def _may_join(self) -> bool:
        """Rows join a running batch only where the cache can take them (a plain dynamic
        cache); otherwise they wait until it is empty (static batching)."""
        return not self.running or joinable(self._cache)

    def _next_group(self) -> list[Row]:
        """The waiting rows that join next, first come first: all of them, or as many as
        fit in ``join_tokens`` prompt tokens (at least one)."""
        size, tokens = 0, 0
        for row in self.waiting:
            tokens += len(row.prompt)
            if size and self.join_tokens is not None and tokens > self.join_tokens:
                break
            size += 1
        group, self.waiting = self.waiting[:size], self.waiting[size:]
        return group

    def _prefill_step(self) -> None:
        joining = self._joining
        assert joining is not None
        logits = joining.advance()
        if logits is None:
            return
        self._joining = None
        tokens = self._choose(joining.rows, logits)
        for row, token in zip(joining.rows, tokens.tolist(), strict=True):
            self.text.take(row, token)
        self._merge(joining.rows, joining.cache, joining.mask, tokens)

    def _decode_step(self) -> None:
        assert self._mask is not None and self._next is not None, "rows are running"
        mask = torch.cat([self._mask, self._mask.new_ones(len(self.running), 1)], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True)
        out = self.model(
            input_ids=self._next[:, None],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_argument: self._cache},
        )
        self._mask = mask
        tokens = self._choose(self.running, out.logits[:, -1])
        self._next = tokens
        for row, token in zip(self.running, tokens.tolist(), strict=True):
            if not row.finished:
                self.text.take(row, token)

    def _choose(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token (greedy, or sampled with its temperature, top-k and top-p
        and its own generator), and its log-probability under the model's distribution."""
        logprobs = logits.float().log_softmax(-1)
        tokens = logprobs.argmax(-1)
        for i, row in enumerate(rows):
            request = row.request
            if request.temperature > 0:
                probs = (logits[i].float() / request.temperature).softmax(-1)
                ordered, order = probs.topk(min(TOP_K, probs.shape[-1]))
                ordered = ordered / ordered.sum()
                beyond = ordered.cumsum(-1) - ordered > request.top_p  # smallest head >= P
                ordered[beyond] = 0.0
                tokens[i] = order[torch.multinomial(ordered, 1, generator=row.generator)]
        chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()
        for row, value in zip(rows, chosen, strict=True):
            if not row.finished:
                row.logprob += value
                row.steps += 1
        return tokens

    # -- joining and leaving ---------------------------------------------------------------

    def _merge(self, rows: list[Row], cache, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        if not self.running:
            self.running, self._cache, self._mask, self._next = list(rows), cache, mask, tokens
            return
        assert self._cache is not None and self._mask is not None and self._next is not None
        width = max(self._mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat(
                [_left_pad(mine.values, width), _left_pad(theirs.values, width)]
            )
        self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)])
        self._next = torch.cat([self._next, tokens])
        self.running += rows

    def _drop_cancelled(self) -> None:
        for row in self.running + self.waiting:
            if row.request.cancelled.is_set():
                row.finished = row.stopped = True
        joining = self._joining.rows if self._joining is not None else []
        if joining and all(r.request.cancelled.is_set() for r in joining):
            rows, self._joining = joining, None  # nobody is waiting for this prefill
            for row in rows:
                row.finished = row.stopped = True
                self._finish(row)
        for row in [r for r in self.waiting if r.finished]:
            self.waiting.remove(row)
            self._finish(row)

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self.running) if not row.finished]
        if len(keep) == len(self.running):
            return
        for row in self.running:
            if row.finished:
                self._finish(row)
        if not keep:
            self.running, self._cache, self._mask, self._next = [], None, None, None
            return
        assert self._cache is not None and self._mask is not None and self._next is not None
        index = torch.tensor(keep, device=self._mask.device)
        self.running = [self.running[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask, self._next = self._mask[index], self._next[index]
        unused = int((self._mask.sum(dim=0) == 0).long().cumprod(0).sum())
        if unused and joinable(self._cache):  # columns only the rows that left used
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            self._mask = self._mask[:, unused:]

    def _finish(self, row: Row) -> None:
        self.text.end(row)
        row.done(row.result())


class _Prefill:
    """The prompts of rows joining together, run through the model a chunk at a time.

    The tokens all of them begin with (a system prompt, worked examples) are run once and
    their cache shared; the rest of each prompt follows, left-padded to the longest, so a
    row's cache holds its shared start, then padding, then its own tokens.
    """

    def __init__(self, batch: DecodeBatch, rows: list[Row]):
        from transformers import DynamicCache

        self.batch, self.rows = batch, rows
        device = batch.device
        self.cache: Any = DynamicCache(config=batch.model.config)
        shared = _common_length([r.prompt for r in rows]) if len(rows) > 1 else 0
        # Every row keeps a token of its own (its logits start its reply).
        shared = min(shared, min(len(r.prompt) for r in rows) - 1)
        self.shared = shared if shared >= MIN_SHARED and joinable(self.cache) else 0
        own = [r.prompt[self.shared :] for r in rows]
        width = max(map(len, own))
        self.ids = torch.tensor([[0] * (width - len(o)) + o for o in own]).to(device)
        own_mask = torch.tensor([[0] * (width - len(o)) + [1] * len(o) for o in own]).to(device)
        self.positions = self.shared + (own_mask.cumsum(dim=1) - 1).clamp(min=0)
        self.mask = torch.cat([own_mask.new_ones(len(rows), self.shared), own_mask], dim=1)
        self.done = 0

    def advance(self) -> torch.Tensor | None:
        """Run the next chunk; the last position's logits once the prompts are done. With
        no rows running there is nothing to interleave with: the whole prompt at once."""
        batch = self.batch
        if self.shared and self.cache.get_seq_length() == 0:
            self._run_shared()
        size = max(1, batch.prefill_chunk // len(self.rows))  # columns: tokens over rows
        size = size if batch.running else self.ids.shape[1]
        end = min(self.ids.shape[1], self.done + size)
        out = batch.model(
            input_ids=self.ids[:, self.done : end],
            attention_mask=self.mask[:, : self.shared + end],
            position_ids=self.positions[:, self.done : end],
            use_cache=True,
            logits_to_keep=1,
            **{batch.cache_argument: self.cache},
        )
        self.done = end
        return out.logits[:, -1] if end == self.ids.shape[1] else None

    def _run_shared(self) -> None:
        """The shared start, once, its cache then stretched (not copied) over every row."""
        batch, ids = self.batch, self.rows[0].prompt[: self.shared]
        batch.model(
            input_ids=torch.tensor([ids], device=batch.device),
            attention_mask=torch.ones(1, self.shared, dtype=torch.long, device=batch.device),
            position_ids=torch.arange(self.shared, device=batch.device)[None],
            use_cache=True,
            logits_to_keep=1,
            **{batch.cache_argument: self.cache},
        )
        stretch(self.cache, len(self.rows))


def _common_length(prompts: list[list[int]]) -> int:
    """How many tokens every prompt begins with."""
    first, n = prompts[0], min(map(len, prompts))
    for i in range(n):
        if any(p[i] != first[i] for p in prompts):
            return i
    return n


def stretch(cache, rows: int) -> None:
    """A one-row cache's keys and values as views over ``rows`` rows (not copies; gradients
    flowing back through them add up)."""
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)


def joinable(cache) -> bool:
    """Whether every layer of ``cache`` is a plain one (its keys and values can be
    stretched over rows and padded)."""
    from transformers.cache_utils import DynamicLayer

    return cache is None or all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` with zeros added before its sequence dimension (the last of a mask, the
    one before last of keys and values) up to ``width``."""
    dim = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _marker_prefix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins a stop marker."""
    for size in range(min(len(text), max(map(len, markers), default=0)), 0, -1):
        if any(m.startswith(text[-size:]) for m in markers):
            return size
    return 0
