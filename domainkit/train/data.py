"""From chat samples to training batches.

Each conversation is rendered with the student's own chat template; only assistant tokens
carry labels (everything else is -100). Samples are then either grouped into batches of
similar length under a token budget (the default: no compute on padding, and attention
stays within each sample), or packed into full rows with position ids restarting at every
sample so that no sample attends to another (transformers builds a block-diagonal causal
mask from such position ids when no attention mask is given). Packing pays off with
variable-length attention kernels on GPUs; with a dense mask, attention cost grows with the
square of the row length, which on CPU makes packed rows slower than grouped samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataStats:
    samples: int = 0
    truncated: int = 0
    dropped: int = 0  # no assistant token left within max_seq_len
    tokens: int = 0
    label_tokens: int = 0
    padding_tokens: int = 0
    notes: list[str] = field(default_factory=list)


def _render_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_chat(tokenizer, messages: list[dict], last_only: bool = False) -> Tokenized:
    """Render ``messages`` and label exactly the assistant turns (with their end-of-turn);
    with ``last_only``, just the final assistant turn.

    Each assistant turn spans from the end of the prompt rendered up to it (with the
    generation prompt) to the end of the conversation rendered through it; this works for
    any template whose renderings of a conversation's prefixes are token prefixes.

    Raises:
        ValueError: The template does not render prefixes as prefixes.
    """
    full = _render_ids(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE] * len(full)
    last = max((k for k, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    for k, message in enumerate(messages):
        if message["role"] != "assistant" or (last_only and k != last):
            continue
        start = len(_render_ids(tokenizer, messages[:k], generation_prompt=True))
        through = _render_ids(tokenizer, messages[: k + 1], generation_prompt=False)
        if full[: len(through)] != through:
            raise ValueError("the chat template does not render conversation prefixes stably")
        labels[start : len(through)] = full[start : len(through)]
    return Tokenized(full, labels)


def tokenize_text(tokenizer, text: str) -> Tokenized:
    """Plain text for continued pre-training: every token is a label."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Tokenized(ids, list(ids))


def fit_length(items: list[Tokenized], max_len: int, stats: DataStats) -> list[Tokenized]:
    """Truncate to ``max_len``; drop samples left without any label."""
    kept = []
    for item in items:
        stats.samples += 1
        if len(item) > max_len:
            item = Tokenized(item.input_ids[:max_len], item.labels[:max_len])
            stats.truncated += 1
        if all(label == IGNORE for label in item.labels[1:]):
            stats.dropped += 1
            continue
        kept.append(item)
    return kept


@dataclass
class Row:
    """One sequence of a batch: one sample, or several packed ones."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)

    def add(self, item: Tokenized) -> None:
        self.input_ids += item.input_ids
        # The first token of a sample must not be predicted from the previous sample.
        self.labels += [IGNORE] + item.labels[1:]
        self.position_ids += list(range(len(item)))


def pack(items: list[Tokenized], capacity: int) -> list[Row]:
    """First-fit decreasing bin packing of samples into rows of at most ``capacity`` tokens."""
    rows: list[Row] = []
    for item in sorted(items, key=len, reverse=True):
        row = next((r for r in rows if len(r.input_ids) + len(item) <= capacity), None)
        if row is None:
            row = Row()
            rows.append(row)
        row.add(item)
    return rows


def single_rows(items: list[Tokenized]) -> list[Row]:
    rows = []
    for item in items:
        row = Row()
        row.add(item)
        rows.append(row)
    return rows


def make_batches(
    rows: list[Row], batch_size: int, seed: int, max_tokens: int | None = None
) -> list[list[Row]]:
    """Batches of rows of similar length, in a seeded random order.

    Rows are sorted by length and cut into batches of at most ``batch_size`` rows and, when
    ``max_tokens`` is given, at most that many tokens once padded: short samples share a
    batch with many others, long ones with few, so every batch costs about the same and
    almost nothing is spent on padding.
    """
    batches: list[list[Row]] = []
    current: list[Row] = []
    for row in sorted(rows, key=lambda r: len(r.input_ids)):
        padded = (len(current) + 1) * len(row.input_ids)
        if current and (len(current) >= batch_size or (max_tokens and padded > max_tokens)):
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    random.Random(seed).shuffle(batches)
    return batches


def collate(
    batch: list[Row],
    pad_id: int,
    packed: bool,
    stats: DataStats | None = None,
    pad_to_multiple_of: int = 1,
) -> dict:
    """Tensors for one batch, right-padded to its longest row, rounded up to a multiple of
    ``pad_to_multiple_of`` (few distinct shapes: see ``TrainingRun``).

    Packed rows get no attention mask: their position ids mark where each sample starts,
    and padding forms a segment of its own that nothing attends to. Unpacked rows get an
    ordinary padding mask.
    """
    width = -(-max(len(r.input_ids) for r in batch) // pad_to_multiple_of) * pad_to_multiple_of
    input_ids, labels, positions, mask = [], [], [], []
    for row in batch:
        pad = width - len(row.input_ids)
        input_ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE] * pad)
        positions.append(row.position_ids + list(range(pad)))
        mask.append([1] * len(row.input_ids) + [0] * pad)
        if stats is not None:
            stats.padding_tokens += pad
    tensors = {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(positions),
    }
    if not packed:
        tensors["attention_mask"] = torch.tensor(mask)
    return tensors


def count_tokens(batches: list[list[Row]]) -> tuple[int, int]:
    """(real tokens, label tokens) in the batches."""
    tokens = sum(len(r.input_ids) for b in batches for r in b)
    labels = sum(sum(1 for x in r.labels if x != IGNORE) for b in batches for r in b)
    return tokens, labels
