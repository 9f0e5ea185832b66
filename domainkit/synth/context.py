"""What every generator needs: settings, teacher, retrieval, filters and the split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from domainkit.config.schema import DomainConfig
from domainkit.ingest import Chunk
from domainkit.retrieval import Retriever
from domainkit.retrieval.bm25 import content_terms
from domainkit.synth.filters import FilterLog, GroundingScorer
from domainkit.synth.prompts import Prompts
from domainkit.synth.teachers import CachedTeacher, Sampling
from domainkit.utils.hashing import text_hash

# Calls whose output must be faithful run cooler than the teacher's setting; user turns,
# paraphrases and refusal questions use it as is, for variety.
_FAITHFUL_TEMPERATURE = {"question": 0.3, "answer": 0.2, "judge": 0.0}


@dataclass
class SynthContext:
    config: DomainConfig
    teacher: CachedTeacher
    retriever: Retriever
    prompts: Prompts
    log: FilterLog = field(default_factory=FilterLog)

    @property
    def synth(self):
        return self.config.synth

    @property
    def embedder(self):
        return self.retriever.embedder

    @property
    def chunks(self) -> list[Chunk]:
        return self.retriever.index.chunks

    @cached_property
    def rows(self) -> dict[str, int]:
        return {chunk.id: row for row, chunk in enumerate(self.chunks)}

    @cached_property
    def system_prompt(self) -> str:
        return self.config.render_system_prompt()

    @cached_property
    def persona(self) -> dict[str, str]:
        organization = self.config.organization or self.config.name
        return {
            key: value.replace("{organization}", organization)
            for key, value in self.config.persona.model_dump().items()
        }

    @cached_property
    def scorer(self) -> GroundingScorer:
        return GroundingScorer(self.embedder, self.synth.filters.grounding_threshold)

    @cached_property
    def corpus_terms(self) -> set[str]:
        return {t for terms in content_terms([c.text for c in self.chunks]) for t in terms}

    def rng(self, purpose: str) -> random.Random:
        """A generator-specific random stream, so one generator's draws never shift another's."""
        return random.Random(f"{self.synth.seed}:{purpose}")

    def sampling(self, kind: str, variant: int = 0) -> Sampling:
        """Sampling for one kind of call; ``variant`` gives repeated calls distinct seeds."""
        teacher = self.synth.teacher
        temperature = min(_FAITHFUL_TEMPERATURE.get(kind, 1.0), teacher.temperature)
        return Sampling(
            temperature=temperature,
            top_p=teacher.top_p,
            max_new_tokens=teacher.max_new_tokens,
            seed=self.synth.seed + variant,
        )

    def is_validation(self, chunk_id: str) -> bool:
        """Stable split by chunk: a chunk's side never changes when others are added."""
        bucket = int(text_hash(f"{self.synth.seed}:{chunk_id}", length=8), 16) / 16**8
        return bucket < self.synth.validation_fraction

    def source_vectors(self, chunks: list[Chunk]) -> np.ndarray:
        return np.asarray(self.retriever.index.embeddings)[[self.rows[c.id] for c in chunks]]

    def ground(self, answers: list[str], chunks: list[Chunk]) -> list[dict[str, float]]:
        return self.scorer.score(answers, [c.text for c in chunks], self.source_vectors(chunks))

    def finds_source(self, question: str, chunk: Chunk) -> bool:
        """Round-trip check: the question retrieves the chunk it was written from."""
        k = self.synth.filters.roundtrip_k
        return k == 0 or any(h.chunk.id == chunk.id for h in self.retriever.search(question, k=k))

    def grounded(self, scores: dict[str, float]) -> bool:
        return scores["grounding"] >= self.synth.filters.grounding_threshold
