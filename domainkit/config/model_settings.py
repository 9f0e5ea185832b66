"""Settings of the model side of a build: training, the runtime and evaluation (``train``,
``runtime``, ``eval``)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from domainkit.config.base import Section


class PretrainConfig(Section):
    """Optional continued pre-training on the raw chunks before SFT."""

    enabled: bool = Field(False, description="Run causal-LM training on the chunks first.")
    epochs: float = Field(1.0, gt=0, description="Passes over the chunks.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")


class PreferenceConfig(Section):
    """Optional preference tuning after SFT (trl)."""

    method: Literal["none", "dpo", "orpo"] = Field(
        "none", description="dpo or orpo: chosen = grounded answer, rejected = the base model's."
    )
    beta: float = Field(0.1, gt=0, description="Strength of the preference term.")
    epochs: float = Field(1.0, gt=0, description="Passes over the preference pairs.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    max_pairs: int = Field(256, ge=1, description="Questions used for preference pairs.")


class TrainConfig(Section):
    """Fine-tuning of the student model."""

    @model_validator(mode="after")
    def _peft_names_its_method(self) -> TrainConfig:
        if self.lora_layers is not None and (self.method == "full" or self.peft is not None):
            raise ValueError(
                "train.lora_layers applies to the LoRA of the lora_* settings: method full "
                "trains every layer, and a train.peft adapter names its own layers "
                "(layers_to_transform)"
            )
        if self.peft is None:
            return self
        if self.method == "full":
            raise ValueError("train.peft needs method lora or qlora (full trains every weight)")
        if not isinstance(self.peft.get("peft_type"), str):
            raise ValueError("train.peft needs a peft_type, e.g. {peft_type: IA3}")
        return self

    def epochs_for(self, samples: int) -> float:
        """The epochs a run trains on a split of ``samples`` (``max_samples`` caps them)."""
        if self.max_samples is None or samples <= 0:
            return self.epochs
        return min(self.epochs, self.max_samples / samples)

    def adapted_layers(self, total: int) -> int:
        """How many of a model's ``total`` decoder layers get adapters (the top ones)."""
        if self.lora_layers is None:
            return total
        if isinstance(self.lora_layers, float):
            return max(1, math.ceil(self.lora_layers * total))
        return min(self.lora_layers, total)

    student_model: str = Field(
        "SmolLM2-135M-Instruct", description="Student model name, hub id or path."
    )
    method: Literal["qlora", "lora", "full"] = Field(
        "qlora", description="qlora: 4-bit NF4 base + LoRA; lora: full-precision base + LoRA."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank: higher learns more, costs memory.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the LoRA path. 0 by default, as Unsloth and LLaMA-Factory "
        "default: drawing its masks takes about a quarter of a training step on a CPU.",
    )
    target_modules: str | list[str] = Field(
        "all-linear", description="Layers that get adapters: all-linear or a list of names."
    )
    lora_layers: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="Adapt only the top N decoder layers, or a share of them (0.5: the top "
        "half); None: all. The backward pass stops at the lowest adapted layer and the layers "
        "below keep no activations: faster and smaller.",
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
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Train on at most this many samples a run: a larger training split is "
        "trained for this share of an epoch, its schedule spanning them (None: every epoch "
        "in full).",
    )
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
    forward_tokens: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Most tokens one forward and backward pass holds (at least one row): a "
        "micro-batch above it runs in parts whose gradients add up to the same step, so it "
        "trains the same with a fraction of the activation memory. auto: 1024 on a CPU, "
        "where longer passes are no faster; elsewhere the whole micro-batch, split while the "
        "memory plan says it would not fit.",
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
    eval_every: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Validation loss every N optimizer steps. auto: twice a run (halfway "
        "and at the end), at least 10 steps apart.",
    )
    eval_rows: int = Field(
        64,
        ge=1,
        description="Validation loss on at most this many validation rows (the same ones each "
        "time): enough to compare evaluations, at a fraction of the cost of all of them.",
    )
    save_every: int = Field(25, ge=1, description="Checkpoint every N optimizer steps.")
    retrain_when_changed: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A build keeps the trained adapter while at most this share of the "
        "training samples' questions (kind, passage and question) are new or gone since it "
        "was trained (one edited document changes a few); the runtime answers from the "
        "updated index either way. 0 always retrains, 1 "
        "never does by itself; `build --retrain` retrains once.",
    )
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


class RuntimeConfig(Section):
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
        "its lead-in and the best other lines by score).",
    )
    max_false_refusals: float | None = Field(
        0.10,
        ge=0,
        le=1,
        description="Expected share of new answerable questions the calibrated gate may "
        "refuse, judged from the users' own validation questions (validation.yaml); the gate "
        "refuses as much as that allows. With synthetic validation questions only, the cut "
        "goes to the low end of their scores, where that share of new ones would fall "
        "below it. null: the cut of best balanced accuracy.",
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
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The local backend's weights: auto is bf16 where the device computes it "
        "natively (twice as fast on such CPUs; the evidence-first answers are the same), else "
        "fp32. DOMAINKIT_CPU_BF16=0 makes auto fp32 on a CPU.",
    )
    log: bool = Field(
        True,
        description="Keep a conversation log of what serve, chat and ask answer (personal "
        "data masked), for feedback and `domainkit review`; false keeps nothing.",
    )
    log_path: str = Field(
        "logs/conversations.sqlite",
        description="The conversation log's database, relative to the domain folder (outside "
        "the build folder, so rebuilds keep it).",
    )


class EvalConfig(Section):
    """How ``domainkit eval`` measures the assistant."""

    max_new_tokens: int = Field(
        64, ge=8, le=2048, description="Longest answer generated per eval question."
    )
    general_knowledge: bool = Field(
        True,
        description="With the comparison, also ask a small general-knowledge set closed-book "
        "(forgetting).",
    )
    compare: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The comparison conditions (base model closed-book and as naive RAG, tuned "
        "closed-book, forgetting): on runs them (most of an eval's time); auto reuses the "
        "base model's from the last run with the same model, questions and index; off never.",
    )
    judge: Literal["auto", "on", "off"] = Field(
        "auto",
        description="LLM judge of answers against the reference, by the synth teacher. auto: "
        "on when the teacher is not the small local default (a 135M judge says yes to anything).",
    )
