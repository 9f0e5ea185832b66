"""A local transformers model as teacher, generating in batches."""

from __future__ import annotations

from functools import cached_property

from domainkit.config.schema import TeacherConfig
from domainkit.llm import LoadedLM, generate_batch, load_causal_lm, render_prompts
from domainkit.synth.teachers.base import TEACHERS, Conversation, Sampling


@TEACHERS.register("hf", "transformers")
class HFTeacher:
    """Any Hugging Face chat model; the embedded SmolLM2-135M-Instruct by default."""

    def __init__(self, settings: TeacherConfig):
        self.settings = settings
        self.batch_size = settings.batch_size
        self.id = f"hf:{settings.model}"

    @cached_property
    def lm(self) -> LoadedLM:
        return load_causal_lm(self.settings.model, self.settings.device)

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        return generate_batch(
            self.lm,
            render_prompts(self.lm, conversations),
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            batch_size=self.batch_size,
        )
