"""Settings of the data side of a build: ingestion, chunking, retrieval, evidence selection
and the synthetic data (``ingest``, ``chunking``, ``retrieval``, ``evidence``, ``synth``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domainkit.config.base import Section


class IngestConfig(Section):
    """Which files under docs/ are read."""

    include: list[str] = Field(["**/*"], description="Glob patterns (relative to docs/) to read.")
    exclude: list[str] = Field([], description="Glob patterns to skip, applied after include.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped.")
    max_file_seconds: float = Field(
        120.0,
        gt=0,
        description="A file whose reading takes longer is skipped (a crafted PDF cannot stall "
        "the build).",
    )
    follow_symlinks: bool = Field(
        False,
        description="Read symlinks that lead out of docs/ (off: a shared domain folder could "
        "otherwise pull any file you can read into the index, answers and teacher prompts).",
    )


class ChunkingConfig(Section):
    """How documents are cut into retrievable passages."""

    chunk_size: int = Field(
        220, ge=16, le=8192, description="Maximum chunk length in embedder tokens."
    )
    chunk_overlap: int = Field(
        32, ge=0, description="Tokens shared by consecutive chunks of one section."
    )
    min_chunk_tokens: int = Field(
        4, ge=0, description="Chunks shorter than this (e.g. a lone heading) are dropped."
    )

    @model_validator(mode="after")
    def _overlap_smaller_than_size(self) -> ChunkingConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_size ({self.chunk_size})"
            )
        return self


class RetrievalConfig(Section):
    """Embedding, indexing and search settings."""

    embedder: str = Field(
        "sentence-transformers", description="Embedder backend, by registry name."
    )
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Model name, hub id or local path; all-MiniLM-L6-v2 is the embedded default.",
    )
    batch_size: int = Field(64, ge=1, description="Chunks embedded per batch.")
    device: str = Field("auto", description="torch device for embedding: auto, cpu, cuda, mps.")
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="FAISS index; auto picks exact search for small corpora."
    )
    mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="Default search mode.")
    top_k: int = Field(4, ge=1, le=100, description="Passages retrieved per question.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    candidates: int = Field(
        50, ge=1, description="Candidates taken from each retriever before fusion."
    )


class EvidenceConfig(Section):
    """Which sentences of the retrieved passages the model reads (and the runtime cites)."""

    passages: int = Field(
        6, ge=1, le=50, description="Retrieved passages whose sentences are candidates."
    )
    max_sentences: int = Field(
        6, ge=1, le=50, description="Most sentences in the evidence block (lead-ins count)."
    )
    max_words: int = Field(
        140,
        ge=10,
        le=2000,
        description="Word budget of the evidence block: a small reader reads a few sentences "
        "far better than whole passages.",
    )
    dense_weight: float = Field(
        0.6, ge=0, le=1, description="Share of dense similarity (vs lexical overlap) in a score."
    )
    rank_weight: float = Field(
        0.05, ge=0, le=1, description="Bonus for sentences of higher-ranked passages."
    )
    lead_ins: bool = Field(
        True, description="Keep the sentence a list item or 'It ...' sentence depends on."
    )
    figure_weight: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Bonus for sentences that state a figure when the question asks for one "
        "(how long, how much, when, what does it cost).",
    )


class TeacherConfig(Section):
    """The model that writes the synthetic data."""

    backend: str = Field(
        "hf",
        description="Teacher by name: hf (transformers in this process), openai (an "
        "OpenAI-compatible endpoint), or a teacher or chat backend plug-in's name.",
    )
    model: str = Field(
        "SmolLM2-135M-Instruct",
        description="Model: embedded name, hub id or path (hf), or the endpoint's model name.",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (openai)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the endpoint's API key."
    )
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once (openai).")
    timeout: float = Field(120.0, gt=0, description="Seconds before a request is retried.")
    max_retries: int = Field(5, ge=0, description="Retries on 429, 5xx and timeouts, with backoff.")
    batch_size: int = Field(
        64,
        ge=1,
        description="Prompts generated together (hf): a decoding step for 64 short prompts "
        "costs a CPU about twice one for 16; lower it for a large teacher short of memory.",
    )
    device: str = Field("auto", description="torch device for the hf teacher.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        40, ge=8, le=4096, description="Longest teacher reply (the teacher writes questions)."
    )


class SynthFilterConfig(Section):
    """Checks every generated question must pass."""

    max_question_words: int = Field(60, ge=3, description="Longer questions are rejected.")
    roundtrip_k: int = Field(
        3, ge=0, description="A question must retrieve its source chunk in the top k (0: off)."
    )
    duplicate_similarity: float = Field(
        0.95, gt=0, le=1, description="Questions this similar to a kept one are duplicates."
    )
    eval_similarity: float = Field(
        0.85, gt=0, le=1, description="Questions this similar to an eval question are removed."
    )
    scrub_pii: bool = Field(False, description="Mask emails, phone and card numbers in samples.")


class SynthConfig(Section):
    """Synthetic instruction data in the runtime's evidence format, made from the chunks.

    Targets are correct by construction (a quoted line of the source passage, or the
    recipe's refusal); the teacher writes questions and simulated user turns.
    """

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    mix: dict[str, float] = Field(
        {"raft": 0.6, "near_miss": 0.15, "refusal": 0.1, "self_chat": 0.15},
        description="Share of samples per generator: raft (quote the gold line among hard "
        "negatives, or refuse when it is absent), near_miss (a name swapped: refuse), refusal "
        "(questions the documents never touch), self_chat (multi-turn dialogs), or a "
        "plug-in generator's name (entry-point group domainkit.generators).",
    )
    samples_per_chunk: float = Field(
        3.0, gt=0, description="Samples aimed for per chunk when no --limit is given."
    )
    questions_per_chunk: int = Field(3, ge=1, description="Facts asked about in each chunk.")
    paraphrases: int = Field(
        1,
        ge=0,
        le=5,
        description="Extra wordings of each teacher question: readers learn to "
        "match meaning when a fact is asked several ways.",
    )
    self_chat_turns: int = Field(2, ge=2, le=10, description="User turns per self-chat dialog.")
    raft_gold_absent: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of RAFT samples that ask a question without its passage and are "
        "answered with the refusal: teaches noticing that the evidence does not answer.",
    )
    validation_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of chunks whose samples are held out: eval calibrates the runtime "
        "on them, so enough must be kept for a stable fit.",
    )
    user_data: str = Field(
        "instructions", description="Folder (in the domain) of your own JSONL instruction data."
    )
    seed: int = Field(0, description="Seed for sampling chunks, splits and generation.")
    filters: SynthFilterConfig = Field(default_factory=SynthFilterConfig)
    prompts: dict[str, str] = Field(
        {}, description="Overrides of the teacher prompt templates, by name (see synth/prompts.py)."
    )

    @model_validator(mode="after")
    def _mix_is_usable(self) -> SynthConfig:
        if not any(share > 0 for share in self.mix.values()):
            raise ValueError("mix needs at least one generator with a share above 0")
        if any(share < 0 for share in self.mix.values()):
            raise ValueError("mix shares must not be negative")
        return self
