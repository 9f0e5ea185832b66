"""What every generator needs: settings, teacher, retrieval, filters and the split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property

from domainkit.answer.evidence import Evidence, EvidenceSelector
from domainkit.config.schema import DomainConfig
from domainkit.ingest import Chunk
from domainkit.prompting import evidence_question, quote_reply
from domainkit.retrieval import Retriever
from domainkit.retrieval.terms import CorpusVocabulary
from domainkit.synth.facts import Fact
from domainkit.synth.filters import FilterLog
from domainkit.synth.prompts import Prompts
from domainkit.synth.teachers import CachedTeacher, Sampling
from domainkit.utils.hashing import text_hash

# Questions must stay on their fact, so they run cooler than the teacher's setting; user
# turns, paraphrases and refusal questions use it as is, for variety.
_FAITHFUL_TEMPERATURE = {"question": 0.3}
# The split keeps whole documents (or sections) on one side when there are this many.
MIN_SPLIT_GROUPS = 5


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

    def warm(self, texts: list[str | None]) -> None:
        """Embed in one batch the questions about to be checked and read one by one."""
        if warm := getattr(self.embedder, "warm", None):
            warm([t for t in texts if t])

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
        required: tuple[tuple[Chunk, int, int], ...] = ()
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
        line = evidence.at(gold.chunk.id, start) or next(
            (s for s in evidence.sentences if " ".join(s.text.lower().split()) == text), None
        )
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
    def _groups(self) -> dict[str, str]:
        """Chunk id -> the unit the split keeps together: its document, or (in a corpus of
        fewer than five documents) its section, or (a single unsectioned document) itself.
        Neighbouring chunks overlap, so the larger the unit, the less a validation sentence
        also sits in a training passage."""
        for key in (
            lambda c: c.source,
            lambda c: f"{c.source}#{c.headings[1] if len(c.headings) > 1 else ''}",
        ):
            groups = {chunk.id: key(chunk) for chunk in self.chunks}
            if len(set(groups.values())) >= MIN_SPLIT_GROUPS:
                return groups
        return {chunk.id: chunk.id for chunk in self.chunks}

    @cached_property
    def _validation_groups(self) -> frozenset[str]:
        """Groups in hash order, taken until they hold ``validation_fraction`` of the chunks
        (never all of them): a coin flip per group can leave a small corpus without any."""
        sizes: dict[str, int] = {}
        for group in self._groups.values():
            sizes[group] = sizes.get(group, 0) + 1
        wanted = self.synth.validation_fraction * sum(sizes.values())
        chosen: set[str] = set()
        held = 0
        for group in sorted(sizes, key=lambda g: text_hash(f"{self.synth.seed}:{g}")):
            if held >= wanted or len(chosen) + 1 >= len(sizes):
                break
            chosen.add(group)
            held += sizes[group]
        return frozenset(chosen)

    def is_validation(self, chunk_id: str) -> bool:
        """Whether a chunk's samples are held out (split by document, see ``_groups``)."""
        return self._groups.get(chunk_id) in self._validation_groups

    def finds_source(self, question: str, chunk: Chunk) -> bool:
        """Round-trip check: the question retrieves the chunk it was written from."""
        k = self.synth.filters.roundtrip_k
        return k == 0 or any(h.chunk.id == chunk.id for h in self.retriever.search(question, k=k))
