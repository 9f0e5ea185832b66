"""Loading the student for training: 4-bit (QLoRA), full-precision LoRA, or full fine-tuning."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from domainkit.config.schema import TrainConfig
from domainkit.errors import ConfigError
from domainkit.models import LoadedLM, load_causal_lm
from domainkit.utils.device import best_device, native_bf16

log = logging.getLogger(__name__)


@dataclass
class Student:
    model: Any  # a transformers model, peft-wrapped when adapters train
    tokenizer: Any
    device: str
    path: str  # resolved base model folder or hub id
    dtype: torch.dtype  # compute precision


def compute_dtype(device: str, precision: str = "auto") -> torch.dtype:
    """bf16 when asked for, or (auto) where the hardware runs it natively; else fp32."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def load_base(settings: TrainConfig, device: str, quantize: bool) -> LoadedLM:
    from transformers import BitsAndBytesConfig

    dtype = compute_dtype(device, settings.precision)
    quantization = None
    if quantize:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    # Frozen base weights may live in bf16; fully trained ones stay fp32 (autocast computes
    # in bf16) so that small optimizer updates are not rounded away.
    weights = torch.float32 if settings.method == "full" else dtype
    return load_causal_lm(
        settings.student_model,
        device,
        dtype=weights,
        quantization_config=quantization,
        padding_side=None,
    )


def adapter_config(settings: TrainConfig, model: Any = None):
    """The peft config of the adapter to train: ``train.peft`` when set (any weight-adapter
    method peft offers, by name), else LoRA from the lora_* settings (``model`` tells the
    top layers of ``train.lora_layers``)."""
    if settings.peft is None:
        return lora_config(settings, model)
    from peft import get_peft_config
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    known = sorted(str(getattr(t, "value", t)) for t in PEFT_TYPE_TO_CONFIG_MAPPING)
    values = {"task_type": "CAUSAL_LM", **settings.peft}
    values["peft_type"] = str(values["peft_type"]).upper()
    if values["peft_type"] not in known:
        raise ConfigError(
            f"train.peft: unknown peft_type {settings.peft['peft_type']!r}; peft "
            f"{_peft_version()} offers {', '.join(known)}"
        )
    try:
        config = get_peft_config(values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.peft: {e}") from None
    if config.is_prompt_learning:
        raise ConfigError(
            f"train.peft: {values['peft_type']} adds virtual tokens to the prompt; the runtime "
            "merges the adapter into the model, so use a method that adapts weights (LORA, "
            "IA3, LOHA, LOKR, ADALORA, ...)"
        )
    return config


def _peft_version() -> str:
    import peft

    return peft.__version__


def lora_config(settings: TrainConfig, model: Any = None):
    from peft import LoraConfig

    targets: str | list[str] = settings.target_modules
    layers = None
    if settings.lora_layers is not None:
        targets, count = _linear_names(settings, model)
        layers = list(range(count - settings.adapted_layers(count), count))

    init: dict[str, Any] = {
        "default": True,
        "gaussian": "gaussian",
        "olora": "olora",
        "pissa": "pissa",
    }
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        use_dora=settings.use_dora,
        use_rslora=settings.use_rslora,
        init_lora_weights=init[settings.init_lora_weights],
        task_type="CAUSAL_LM",
    )


def _linear_names(settings: TrainConfig, model: Any) -> tuple[list[str], int]:
    """The adapted linear layers' names (peft takes a layer range only with a list of
    them) and the model's decoder layer count."""
    if model is None:
        raise ValueError("train.lora_layers needs the model to count its layers")
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    if not isinstance(settings.target_modules, str):
        names &= set(settings.target_modules)
    config = model.config.get_text_config()
    return sorted(names), int(config.num_hidden_layers)


def load_student(settings: TrainConfig) -> Student:
    """The student ready to train: adapters added (LoRA/QLoRA) or all weights trainable."""
    device = best_device(settings.device)
    quantize = settings.method == "qlora"
    torch.manual_seed(settings.seed)
    base = load_base(settings, device, quantize)
    model, path = base.model, base.path
    model.config.use_cache = False
    if settings.method == "full":
        model.train()
    else:
        from peft import get_peft_model

        # Only the adapters train. peft's prepare_model_for_kbit_training would also cast the
        # frozen norms and embeddings to fp32, which under bf16 compute puts the whole hidden
        # stream, and every activation autograd keeps, in fp32: half again the activation
        # memory, and slower (docs/decisions.md, "QLoRA keeps the frozen norms in the
        # compute precision").
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model = get_peft_model(model, adapter_config(settings, model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("%s on %s: %d of %d parameters trainable", settings.method, device, trainable, total)
    dtype = compute_dtype(device, settings.precision)
    return Student(model, base.tokenizer, device, path, dtype)


def enable_checkpointing(model: Any) -> None:
    """transformers' gradient checkpointing, non-reentrant: it needs no input that requires
    grad (the embeddings are frozen under LoRA) and works through peft and the labelled-only
    loss, which calls the decoder directly."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    options = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the newer name (transformers 5)
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def make_accelerator(settings: TrainConfig):
    """An ``accelerate.Accelerator`` on the chosen device, autocasting to bf16 where chosen."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = best_device(settings.device)
    bf16 = compute_dtype(device, settings.precision) == torch.bfloat16
    # The accelerator's state is a per-process singleton; a second training in the same
    # process (tests, notebooks, build after a DPO stage) may want another precision. The
    # process-group part (PartialState) is kept.
    AcceleratorState._reset_state()
    return Accelerator(
        cpu=device == "cpu", device_placement=False, mixed_precision="bf16" if bf16 else "no"
    )
