"""The typed schema shared by recipes and domain.yaml.

A recipe is a complete ``DomainConfig`` for one vertical; a domain.yaml names a recipe and
overrides any field. Every field has a default, a description and validation, so a typo or
a bad value fails early with the file, the field and what was expected.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PersonaConfig(_Section):
    """Who the assistant is and who it talks to."""

    assistant_name: str = Field("Assistant", description="Name the assistant uses for itself.")
    role: str = Field(
        "a helpful assistant for the organization's documents",
        description="One phrase describing the assistant's job.",
    )
    tone: str = Field("clear, accurate and concise", description="How answers should sound.")
    user_persona: str = Field(
        "a person with a practical question about the documents",
        description="What the simulated user is like when synthetic dialogs are generated.",
    )


class IngestConfig(_Section):
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


class ChunkingConfig(_Section):
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


class RetrievalConfig(_Section):
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


class EvidenceConfig(_Section):
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


class TeacherConfig(_Section):
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
    batch_size: int = Field(16, ge=1, description="Prompts generated together (hf).")
    device: str = Field("auto", description="torch device for the hf teacher.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        40, ge=8, le=4096, description="Longest teacher reply (the teacher writes questions)."
    )


class SynthFilterConfig(_Section):
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


class SynthConfig(_Section):
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


class PretrainConfig(_Section):
    """Optional continued pre-training on the raw chunks before SFT."""

    enabled: bool = Field(False, description="Run causal-LM training on the chunks first.")
    epochs: float = Field(1.0, gt=0, description="Passes over the chunks.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")


class PreferenceConfig(_Section):
    """Optional preference tuning after SFT (trl)."""

    method: Literal["none", "dpo", "orpo"] = Field(
        "none", description="dpo or orpo: chosen = grounded answer, rejected = the base model's."
    )
    beta: float = Field(0.1, gt=0, description="Strength of the preference term.")
    epochs: float = Field(1.0, gt=0, description="Passes over the preference pairs.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    max_pairs: int = Field(256, ge=1, description="Questions used for preference pairs.")


class TrainConfig(_Section):
    """Fine-tuning of the student model."""

    @model_validator(mode="after")
    def _peft_names_its_method(self) -> TrainConfig:
        if self.peft is None:
            return self
        if self.method == "full":
            raise ValueError("train.peft needs method lora or qlora (full trains every weight)")
        if not isinstance(self.peft.get("peft_type"), str):
            raise ValueError("train.peft needs a peft_type, e.g. {peft_type: IA3}")
        return self

    student_model: str = Field(
        "SmolLM2-135M-Instruct", description="Student model name, hub id or path."
    )
    method: Literal["qlora", "lora", "full"] = Field(
        "qlora", description="qlora: 4-bit NF4 base + LoRA; lora: full-precision base + LoRA."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank: higher learns more, costs memory.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Layers that get adapters: all-linear or a list of names."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilized scaling alpha/sqrt(r).")
    init_lora_weights: Literal["default", "gaussian", "olora", "pissa"] = Field(
        "default", description="Adapter initialisation (peft): default, gaussian, olora, pissa."
    )
    peft: dict[str, Any] | None = Field(
        None,
        description="Another peft method by name instead of LoRA, with its settings as peft "
        "writes them, e.g. {peft_type: IA3} or {peft_type: LOHA, r: 8, target_modules: "
        "all-linear} (peft.get_peft_config; task_type CAUSAL_LM). The lora_* settings then do "
        "not apply. Methods that add virtual tokens (prompt, prefix, p-tuning) are refused: "
        "the runtime merges the adapter into the model. method qlora still loads the base in "
        "4 bits.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Compute precision. auto: bf16 where the hardware runs it natively "
        "(recent GPUs; CPUs with AVX512-BF16 or AMX), else fp32. Trainable weights stay fp32.",
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Decay after warm-up."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    epochs: float = Field(2.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(4, ge=1, description="Sequences (packed rows) per micro-batch.")
    grad_accum: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(1024, ge=32, description="Longer samples are truncated.")
    packing: bool = Field(
        False,
        description="Pack samples into rows of max_seq_len (no cross-sample attention): best "
        "with GPU variable-length attention. Off: length-grouped batches under batch_tokens.",
    )
    batch_tokens: int = Field(
        4096, ge=64, description="Token budget (with padding) of a length-grouped micro-batch."
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep only each layer's input and recompute the rest in the backward pass: "
        "a fraction of the activation memory for about a third more compute. auto: on when "
        "the memory plan says the run would not fit otherwise, or above 2B parameters.",
    )
    optimizer: Literal["auto", "adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "auto",
        description="adamw (torch), or bitsandbytes' 8-bit AdamW (2 bytes of state per "
        "trainable weight instead of 8; paged: spills to CPU memory under pressure, CUDA "
        "only). auto: paged_adamw_8bit on CUDA, else adamw unless only 8-bit fits.",
    )
    eval_every: int = Field(25, ge=1, description="Validation loss every N optimizer steps.")
    save_every: int = Field(25, ge=1, description="Checkpoint every N optimizer steps.")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many evaluations without improvement (0: never)."
    )
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        [], description="Also log metrics to these, when installed."
    )
    device: str = Field("auto", description="auto, cpu, cuda or mps.")
    seed: int = Field(0, description="Seed for data order, dropout and initialisation.")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)


Policy = Literal["auto", "rag", "closed", "naive", "evidence"]


class RuntimeConfig(_Section):
    """How the assistant answers at run time."""

    policy: Policy = Field(
        "auto",
        description="auto: evidence, the gate, a verified quote or a refusal; rag: the same "
        "without the gate; closed: no retrieval; naive: whole passages and no checks; "
        "evidence: the best evidence sentence, no model (the last two for comparison).",
    )
    client_policies: list[Policy] = Field(
        ["auto"],
        description="Policies an API client may ask for; the gate cannot be switched off "
        "from outside unless listed here.",
    )
    answer_words: int = Field(
        40,
        ge=5,
        le=400,
        description="Most words of an answer built from the evidence (the quoted sentence, "
        "its lead-in and the best other sentences of its passage).",
    )
    max_false_refusals: float | None = Field(
        0.10,
        ge=0,
        le=1,
        description="Share of answerable validation questions the calibrated gate may refuse; "
        "the gate refuses as much as that allows. null: the cut of best balanced accuracy.",
    )
    max_new_tokens: int = Field(
        96, ge=1, le=8192, description="Longest reply generated (a quote is one sentence)."
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature (0 = greedy).")
    context_tokens: int = Field(
        2048,
        ge=256,
        description="Prompt + answer budget; the oldest turns are trimmed to fit "
        "(capped by the model's own context length).",
    )
    backend: str = Field(
        "local",
        description="Backend by name. local: transformers + peft in this process; openai: an "
        "OpenAI-compatible endpoint (e.g. vLLM serving the merged model or the adapter); or "
        "the name of an installed plug-in (entry-point group domainkit.backends).",
    )
    base_url: str | None = Field(None, description="Endpoint URL for the openai backend.")
    model: str | None = Field(
        None, description="Model name at the endpoint (openai backend); default: the domain name."
    )
    api_key_env: str = Field(
        "DOMAINKIT_BACKEND_API_KEY", description="Environment variable with the endpoint's key."
    )
    max_batch: int = Field(
        8, ge=1, le=256, description="Requests generated together (local) or in flight (openai)."
    )


class EvalConfig(_Section):
    """How ``domainkit eval`` measures the assistant."""

    max_new_tokens: int = Field(
        64, ge=8, le=2048, description="Longest answer generated per eval question."
    )
    general_knowledge: bool = Field(
        True, description="Also ask a small general-knowledge set closed-book (forgetting)."
    )
    judge: Literal["auto", "on", "off"] = Field(
        "auto",
        description="LLM judge of answers against the reference, by the synth teacher. auto: "
        "on when the teacher is not the small local default (a 135M judge says yes to anything).",
    )


class DomainConfig(_Section):
    """A complete domain configuration: recipe defaults merged with domain.yaml overrides."""

    name: str = Field(..., min_length=1, description="Short name of the domain or recipe.")
    organization: str | None = Field(None, description="Organization the documents belong to.")
    description: str = Field("", description="One sentence on what the assistant is for.")
    recipe: str | None = Field(None, description="Recipe this domain starts from.")
    persona: PersonaConfig = Field(default_factory=PersonaConfig)
    system_prompt: str = Field(
        "You are {assistant_name}, {role}. Be {tone}.",
        description="System prompt; {assistant_name}, {role}, {tone}, {organization} are filled.",
    )
    refusal: str = Field(
        "I'm sorry, the documents I have do not cover that.",
        description="What the assistant says when the documents do not answer a question.",
    )
    disclaimer: str | None = Field(None, description="Text appended to answers, if any.")
    docs_dir: str = Field("docs", description="Folder of documents, relative to the domain.")
    build_dir: str = Field(".domainkit", description="Build folder, relative to the domain.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def render_system_prompt(self) -> str:
        """The system prompt with the persona's fields filled in."""
        organization = {"organization": self.organization or self.name}
        persona = {
            key: value.format_map(_KeepMissing(organization))
            for key, value in self.persona.model_dump().items()
        }
        return self.system_prompt.format_map(_KeepMissing(persona | organization)).strip()


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
