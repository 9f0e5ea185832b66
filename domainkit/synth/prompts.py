"""Teacher prompt templates. Each can be overridden by name in the recipe's ``synth.prompts``.

The prompts are short and use worked examples because the embedded teacher is a 135M-parameter
model; a larger teacher follows them just as well.
"""

from __future__ import annotations

from domainkit.errors import ConfigError

DEFAULTS: dict[str, str] = {
    "question_system": (
        "You turn a statement into the question {user} would ask to get that information. "
        "Reply with one question only."
    ),
    "question_user": "Statement: {fact}",
    "paraphrase_system": (
        "You reword questions. Keep the meaning and the names, change the other words. "
        "Reply with one question only."
    ),
    "user_turn_system": (
        'You are {user_persona}, chatting with {assistant_name} about "{topic}". '
        "You turn a statement into the question you would ask to get that information. "
        "Reply with one question only."
    ),
    "user_turn_user": "{previous}Statement: {fact}",
    "offtopic_system": (
        "You write one short question that a person might ask a search engine. "
        "Reply with the question only."
    ),
    "offtopic_user": 'Write a question about {topic} that starts with "{starter}".',
}

# Everyday subjects for out-of-domain questions; the assistant must decline those too.
OFFTOPIC_TOPICS = (
    "cooking",
    "gardening",
    "travel",
    "football",
    "history",
    "the weather",
    "pets",
    "films",
    "cars",
    "health",
    "mathematics",
    "geography",
    "music",
    "fashion",
    "chess",
    "astronomy",
)
OFFTOPIC_STARTERS = ("What", "How", "Why", "Which", "Who", "Where", "When", "Can")

# Worked examples shown before the real input (user, assistant) pairs.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "question": [
        (
            "Statement: The warranty lasts two years from the date of delivery.",
            "How long does the warranty last?",
        ),
        (
            "Statement: Orders placed before 2 pm on a weekday ship the same day.",
            "If I order in the morning, when will my parcel be sent?",
        ),
    ],
    "paraphrase": [
        ("How long does the warranty last?", "For how many years am I covered by the warranty?"),
        ("Can I pay in instalments?", "Is it possible to spread the payment over several months?"),
    ],
}


class Prompts:
    """The templates in force: defaults with the recipe's overrides applied."""

    def __init__(self, overrides: dict[str, str] | None = None):
        unknown = sorted(set(overrides or {}) - set(DEFAULTS))
        if unknown:
            raise ConfigError(
                f"synth.prompts: unknown prompt {', '.join(unknown)}; "
                f"expected one of {', '.join(DEFAULTS)}"
            )
        self.templates = {**DEFAULTS, **(overrides or {})}

    def render(self, name: str, **fields: str) -> str:
        return self.templates[name].format(**fields)

    def with_examples(self, kind: str, system: str, user: str) -> list[dict[str, str]]:
        """A conversation: system prompt, the worked examples of ``kind``, then ``user``."""
        messages = [{"role": "system", "content": system}]
        for example_user, example_reply in EXAMPLES.get(kind, []):
            messages += [
                {"role": "user", "content": example_user},
                {"role": "assistant", "content": example_reply},
            ]
        return messages + [{"role": "user", "content": user}]

    def example_replies(self, kind: str) -> set[str]:
        """The worked examples' replies: a teacher that copies one is not answering."""
        return {reply for _, reply in EXAMPLES.get(kind, [])}
