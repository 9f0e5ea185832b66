"""What every generator needs: settings, teacher, retrieval, filters and the split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property

from domainkit.config.schema import DomainConfig
from domainkit.ingest import Chunk
from domainkit.prompting import evidence_question, quote_reply
from domainkit.retrieval import Retriever
from domainkit.retrieval.evidence import Evidence, EvidenceSelector
from domainkit.retrieval.terms import CorpusVocabulary
from domainkit.synth.facts import Fact
from domainkit.synth.filters import FilterLog
from domainkit.synth.prompts import Prompts
from domainkit.synth.teachers import CachedTeacher, Sampling
from domainkit.utils.hashing import text_hash

# Questions must stay on their fact, so they run cooler than the teacher's setting; user
# turns, paraphrases and refusal questions use it as is, for variety.
_FAITHFUL_TEMPERATURE = {"question": 0.3}


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
    def vocabulary(self) -> CorpusVocabulary:
        return self.retriever.vocabulary

    @cached_property
    def corpus_terms(self) -> set[str]:
        return set(self.vocabulary.df)

    @cached_property
    def selector(self) -> EvidenceSelector:
        """The runtime's own evidence selector: training evidence looks like run-time evidence."""
        return EvidenceSelector(self.embedder, self.vocabulary, self.config.evidence)

    def evidence_for(
        self,
        query: str,
        side: bool,
        gold: Fact | None = None,
        exclude: frozenset = frozenset(),
        question: str | None = None,
    ) -> Evidence:
        """The evidence the runtime would select: passages retrieved for ``query``, from one
        split only (``side``: validation or not) and without the ``exclude``d ones, read
        for ``question`` (default: the query). ``gold``'s line is always included."""
        n = self.config.evidence.passages
        hits = self.retriever.search(query, k=n + 12)
        chunks = [
            h.chunk
            for h in hits
            if self.is_validation(h.chunk.id) == side and h.chunk.id not in exclude
        ][:n]
        required = ()
        if gold is not None:
            if gold.chunk not in chunks:
                chunks = chunks[: n - 1] + [gold.chunk]
            required = ((gold.chunk, gold.start, gold.end),)
        return self.selector.select(question or query, chunks, required=required)

    def quote_turn(self, question: str, evidence: Evidence, gold: Fact):
        """(user turn, assistant turn, the gold evidence sentence): quote the gold line.
        None when the evidence lost the line."""
        start = gold.chunk.start + gold.start
        text = " ".join(gold.chunk.text[gold.start : gold.end].lower().split())
        line = next(
            (s for s in evidence.sentences if s.chunk.id == gold.chunk.id and s.start == start),
            None,
        ) or next((s for s in evidence.sentences if " ".join(s.text.lower().split()) == text), None)
        if line is None:
            return None
        user = evidence_question(question, evidence.block())
        return user, quote_reply(line.text), line

    def refusal_turn(self, question: str, evidence: Evidence) -> tuple[str, str] | None:
        """(user turn, assistant turn): the evidence does not answer, refuse. None when there
        is no evidence at all: the runtime refuses those without asking the model."""
        if not evidence.sentences:
            return None
        return evidence_question(question, evidence.block()), self.config.refusal

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

    @cached_property
    def _documents(self) -> dict[str, str]:
        return {chunk.id: chunk.source for chunk in self.chunks}

    def is_validation(self, chunk_id: str) -> bool:
        """Stable split by document: neighbouring chunks overlap, so a split by chunk would
        put a validation sentence in a training passage. A document's side never changes
        when others are added."""
        document = self._documents.get(chunk_id, chunk_id)
        bucket = int(text_hash(f"{self.synth.seed}:{document}", length=8), 16) / 16**8
        return bucket < self.synth.validation_fraction

    def finds_source(self, question: str, chunk: Chunk) -> bool:
        """Round-trip check: the question retrieves the chunk it was written from."""
        k = self.synth.filters.roundtrip_k
        return k == 0 or any(h.chunk.id == chunk.id for h in self.retriever.search(question, k=k))
