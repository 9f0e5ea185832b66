"""Fitting a conversation into the model's context: the latest question always, then as
many earlier turns and as much evidence as the budget allows."""

from __future__ import annotations

from collections.abc import Callable

from domainkit.answer.answers import ConversationError
from domainkit.prompting import Message, chat


def fit_prompt(
    system: str,
    history: list[Message],
    extra,
    user: Callable[[object], str],
    shrink: Callable[[object], object | None],
    *,
    count: Callable[[list[Message]], int],
    context_tokens: int,
    max_tokens: int,
) -> tuple[list[Message], object, int]:
    """The conversation with its last user turn ``user(extra)`` cut to the context budget
    (``context_tokens`` less ``max_tokens`` for the reply, counted by ``count``): the oldest
    turns are dropped first (a user turn with its reply), then ``extra`` (passages or
    evidence) shrinks step by step (``shrink`` gives None when it cannot). Fewer turns never
    need more tokens, so how many to drop is found by bisection: a few token counts of the
    prompt, not one per dropped turn.

    Returns:
        (prompt, extra as kept, number of messages dropped)

    Raises:
        ConversationError: Not even the question alone fits.
    """
    budget = context_tokens - max_tokens

    def prompt(cut: int, extra) -> list[Message]:
        messages = chat(system, *((m["role"], m["content"]) for m in history[cut:]))
        return [*messages, {"role": "user", "content": user(extra)}]

    cuts = [0]  # where the kept history may start: never between a turn and its reply
    while cuts[-1] < len(history):
        start = cuts[-1]
        pair = start + 1 < len(history) and history[start + 1]["role"] == "assistant"
        cuts.append(start + (2 if pair else 1))
    if count(whole := prompt(0, extra)) <= budget:  # the usual case: nothing to drop
        return whole, extra, 0
    low, high = 1, len(cuts) - 1
    if high >= low and count(prompt(cuts[high], extra)) <= budget:
        while low < high:  # the smallest cut that fits lies in cuts[low..high]
            middle = (low + high) // 2
            if count(prompt(cuts[middle], extra)) <= budget:
                high = middle
            else:
                low = middle + 1
        return prompt(cuts[low], extra), extra, cuts[low]
    while (extra := shrink(extra)) is not None:  # no history left to drop
        if count(prompt(cuts[-1], extra)) <= budget:
            return prompt(cuts[-1], extra), extra, cuts[-1]
    raise ConversationError(
        f"the question does not fit the context budget of {context_tokens} "
        f"tokens with {max_tokens} for the answer; shorten it or lower max_tokens"
    )
