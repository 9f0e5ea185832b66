"""The memory plan: what a training run will hold, part by part, before it starts.

Out-of-memory an hour into a run is the worst way to learn a setting was wrong, so the plan
is computed from the model's config (on the meta device, no weights loaded) and the train
settings, checked against the device's free memory, and used to choose how many tokens a
forward and backward pass holds, gradient checkpointing and the optimizer when they are left
on ``auto``. A micro-batch longer than a pass runs in parts whose gradients add up to the
same step (the loop weights every part by the step's labelled-token count), so the split
changes memory, never training.

Activations dominate for small students: ``layer_activation_bytes`` says what autograd
keeps per token and decoder layer of a LoRA-wrapped Llama-style model under autocast, as
counted with ``torch.autograd.graph.saved_tensors_hooks`` (the tests hold the estimate to
that count on a tiny model; on SmolLM2 it is within 10%).
With checkpointing a layer keeps only its input, and one layer's activations are rebuilt at a
time in the backward pass. The loss head projects only labelled positions (see objective.py).
Computing in fp32 on a CPU, the C allocator also keeps, within a pass, about as much again
in freed temporaries (measured; docs/decisions.md, "the memory plan in fp32").
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field, replace

import torch

from domainkit.config.schema import TrainConfig
from domainkit.errors import DomainkitError

log = logging.getLogger(__name__)
GiB = 2**30
# Python, torch, transformers and the tokenizer in a CPU process; the CUDA context on a GPU.
RUNTIME_BYTES = {"cpu": int(1.0 * GiB), "cuda": int(0.6 * GiB), "mps": int(0.6 * GiB)}
# nf4 with double quantization: 4 bits plus about 0.127 bits of scales per weight.
NF4_BYTES = 4.127 / 8
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2}
# Share of the free memory a plan may use: allocator fragmentation and transient copies.
HEADROOM = 0.9
# Above this many parameters, auto checkpointing is on whatever the plan says: the
# activations of a long batch through a multi-billion model are what runs out first.
LARGE_MODEL = 2_000_000_000
DEFAULT_LABEL_SHARE = 0.25
# On a CPU, a forward and backward pass of about this many tokens runs as many tokens a
# second as a longer one, and holds a quarter of a 4,096-token micro-batch's activations
# (docs/decisions.md, "CPU passes of 1,024 tokens").
CPU_PASS_TOKENS = 1024


@dataclass
class Shapes:
    """What the plan needs from a causal LM's config and its parameter list."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_dim: int
    vocab: int
    parameters: int
    layer_linear: int  # parameters of the decoder layers' linear weights (4-bit under QLoRA)
    adapter_sides: int  # sum of (in + out) over the adapted layers: LoRA has r times that
    layer_adapters: list[tuple[int, int]] = field(default_factory=list)  # (in, out), one layer
    # Trainable parameters of a ``train.peft`` adapter, as peft builds it; None: the LoRA of
    # the lora_* settings (lora_r x adapter_sides).
    adapter_parameters: int | None = None


def peft_parameters(path: str, settings: TrainConfig) -> int:
    """Trainable parameters of ``train.peft``'s adapter on ``path``'s model, counted on a
    copy of the model on the meta device (peft builds the adapter; no memory is used).
    Kept per model and adapter settings: train plans twice (before and after tokenizing)."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from domainkit.train.model import adapter_config

    key = (path, json.dumps(settings.peft, sort_keys=True))
    if key not in _PEFT_PARAMETERS:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        wrapped = get_peft_model(model, adapter_config(settings))
        _PEFT_PARAMETERS[key] = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return _PEFT_PARAMETERS[key]


_PEFT_PARAMETERS: dict[tuple[str, str], int] = {}


def model_shapes(path: str, targets: str | list[str]) -> Shapes:
    """Read the shapes of ``path``'s model from its config; no weights are loaded."""
    return _shapes(path, targets if isinstance(targets, str) else tuple(targets))


@functools.lru_cache(maxsize=8)  # train plans twice (before and after tokenizing)
def _shapes(path: str, targets: str | tuple[str, ...]) -> Shapes:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    wanted = (
        linears
        if targets == "all-linear"
        else {n: m for n, m in linears.items() if n.rsplit(".", 1)[-1] in set(targets)}
    )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config

    def first(*names):
        return next((getattr(text, n) for n in names if getattr(text, n, None)), None)

    hidden = first("hidden_size", "n_embd", "d_model")
    heads = first("num_attention_heads", "n_head")
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    if not (hidden and heads and layers):
        raise ValueError(f"{path}: no hidden size, heads or layers in its config")
    head_dim = first("head_dim") or hidden // heads
    return Shapes(
        hidden=hidden,
        intermediate=first("intermediate_size", "ffn_dim", "n_inner") or 4 * hidden,
        layers=layers,
        heads=heads,
        kv_dim=(first("num_key_value_heads") or heads) * head_dim,
        vocab=first("vocab_size") or 0,
        parameters=sum(p.numel() for p in model.parameters()),
        layer_linear=sum(m.weight.numel() for m in linears.values()),
        adapter_sides=sum(m.in_features + m.out_features for m in wanted.values()),
        layer_adapters=[
            (m.in_features, m.out_features) for n, m in wanted.items() if ".layers.0." in f".{n}"
        ],
    )


def layer_activation_bytes(shapes: Shapes, settings: TrainConfig, compute_bytes: int) -> int:
    """Bytes kept for the backward pass per token by one decoder layer (no checkpointing).

    In compute precision: two copies of linear inputs, the query and attention output (2h),
    keys and values, the MLP's four intermediates and the adapters' rank-r products; with LoRA
    dropout, the dropped-out inputs (about 1.3 copies of each adapter's input: some are
    shared with the base layer's). In fp32: the two RMSNorms' inputs and statistics and the
    attention's log-sum-exp per head.
    """
    h, i = shapes.hidden, shapes.intermediate
    kept = 4 * h + 2 * shapes.kv_dim + 4 * i
    if settings.method != "full":
        peft = settings.peft or {}
        rank = peft.get("r", 0) if settings.peft else settings.lora_r  # IA3 has no rank
        dropout = peft.get("lora_dropout", 0.0) if settings.peft else settings.lora_dropout
        kept += rank * len(shapes.layer_adapters)
        if dropout > 0:
            kept += int(1.3 * sum(d_in for d_in, _ in shapes.layer_adapters))
    return compute_bytes * kept + 2 * (4 * h + 4) + 4 * shapes.heads


@dataclass
class MemoryPlan:
    """Bytes a training step will hold, by part, and the choices made to fit."""

    device: str
    parts: dict[str, int]
    activations_off: int
    activations_on: int
    checkpointing: bool
    optimizer: str
    available: int | None
    pass_tokens: int

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= HEADROOM * self.available

    def table(self) -> str:
        rows = [f"  {name:<38} {size / GiB:7.2f} GiB" for name, size in self.parts.items()]
        free = "unknown" if self.available is None else f"{self.available / GiB:.1f} GiB free"
        return "\n".join(
            [
                f"Memory plan ({self.device}, {free}; passes of up to {self.pass_tokens} tokens, "
                f"checkpointing {'on' if self.checkpointing else 'off'}, {self.optimizer}):",
                *rows,
                f"  {'total':<38} {self.total / GiB:7.2f} GiB",
                f"  (activations without checkpointing {self.activations_off / GiB:.2f} GiB, "
                f"with {self.activations_on / GiB:.2f} GiB)",
            ]
        )


def available_memory(device: str) -> int | None:
    """Free memory of ``device`` in bytes (CPU: MemAvailable), None where it cannot be told."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    if device == "mps":
        return int(torch.mps.recommended_max_memory()) - torch.mps.current_allocated_memory()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def micro_tokens(settings: TrainConfig) -> int:
    """The most tokens one micro-batch can hold."""
    rows = settings.batch_size * settings.max_seq_len
    return rows if settings.packing else min(rows, max(settings.batch_tokens, settings.max_seq_len))


def pass_tokens(settings: TrainConfig, device: str) -> int:
    """The most tokens one forward and backward pass holds, before the plan splits further:
    ``forward_tokens``, or (auto) 1024 on a CPU and the whole micro-batch elsewhere. A pass
    holds at least one row, which may be ``max_seq_len`` long."""
    whole = micro_tokens(settings)
    wanted = settings.forward_tokens
    if wanted == "auto":
        wanted = CPU_PASS_TOKENS if device == "cpu" else whole
    return min(whole, max(wanted, settings.max_seq_len))


def estimate(
    shapes: Shapes,
    settings: TrainConfig,
    device: str,
    compute_bytes: int,
    checkpointing: bool,
    optimizer: str,
    label_share: float = DEFAULT_LABEL_SHARE,
    available: int | None = None,
    tokens: int | None = None,
) -> MemoryPlan:
    """The plan for given choices, with passes of up to ``tokens`` (default: ``pass_tokens``);
    see the module docstring for what each part counts."""
    tokens = tokens or pass_tokens(settings, device)
    full = settings.method == "full"
    # Layers below the lowest adapted one run without autograd: they keep nothing.
    adapted = shapes.layers if full else settings.adapted_layers(shapes.layers)
    if full:
        trainable = shapes.parameters
    elif shapes.adapter_parameters is not None:
        trainable = shapes.adapter_parameters
    else:
        trainable = settings.lora_r * shapes.adapter_sides * adapted // shapes.layers
    if full:
        weights = 4 * shapes.parameters
    else:
        linear_bytes = NF4_BYTES if settings.method == "qlora" else compute_bytes
        rest = shapes.parameters - shapes.layer_linear
        weights = int(shapes.layer_linear * linear_bytes + rest * compute_bytes)
    per_token = layer_activation_bytes(shapes, settings, compute_bytes)
    off = tokens * adapted * per_token
    on = tokens * (adapted * shapes.hidden * compute_bytes + per_token)
    head = int(tokens * label_share * shapes.vocab * (8 + compute_bytes))
    parts = {"weights (4-bit)" if settings.method == "qlora" else "weights": weights}
    if not full:
        parts["adapter weights (fp32)"] = 4 * trainable
    parts |= {
        "gradients (fp32)": 4 * trainable,
        f"optimizer state ({optimizer})": OPTIMIZER_STATE_BYTES[optimizer] * trainable,
        "activations": on if checkpointing else off,
        "loss head (labelled tokens only)": head,
        "runtime (Python, torch)": RUNTIME_BYTES.get(device, RUNTIME_BYTES["cpu"]),
    }
    if device == "cpu" and compute_bytes == 4:
        # Measured: within a pass, glibc keeps about a pass's activations of freed fp32
        # temporaries besides the live ones, with checkpointing or without (none in bf16).
        parts["freed blocks the allocator keeps (fp32)"] = off
    return MemoryPlan(device, parts, off, on, checkpointing, optimizer, available, tokens)


def plan(
    shapes: Shapes,
    settings: TrainConfig,
    device: str,
    compute_bytes: int,
    label_share: float = DEFAULT_LABEL_SHARE,
    available: int | None = None,
) -> MemoryPlan:
    """Choose checkpointing and the optimizer (where ``auto``) so the run fits, and return
    the plan; a plan that cannot fit is returned as is (``fits`` False) for ``check``."""

    def make(ckpt: bool, optimizer: str, tokens: int) -> MemoryPlan:
        return estimate(
            shapes, settings, device, compute_bytes, ckpt, optimizer, label_share, available, tokens
        )

    optimizers = (
        [settings.optimizer]
        if settings.optimizer != "auto"
        else ["paged_adamw_8bit"]
        if device == "cuda"
        else ["adamw", "adamw_8bit"]
    )
    wanted = settings.gradient_checkpointing
    checkpointing = (
        [wanted == "on"]
        if wanted != "auto"
        else [True]
        if shapes.parameters >= LARGE_MODEL
        else [False, True]
    )
    # Shorter passes cost nothing but a little speed on a GPU, so (auto) they are tried
    # before the 8-bit optimizer, and both before checkpointing's third more compute.
    sizes = [pass_tokens(settings, device)]
    while settings.forward_tokens == "auto" and sizes[-1] // 2 >= settings.max_seq_len:
        sizes.append(sizes[-1] // 2)
    candidates = [make(c, o, t) for c in checkpointing for o in optimizers for t in sizes]
    return next((p for p in candidates if p.fits), candidates[-1])


def release_freed_memory() -> None:
    """Hand the C allocator's freed blocks back to the system (glibc's ``malloc_trim``;
    elsewhere nothing). Between CPU passes: otherwise a pass's freed activations stay
    resident and the next pass's are laid out beside them (docs/decisions.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def check(memory: MemoryPlan | None) -> None:
    """Raise before training when the plan does not fit, naming the settings to change."""
    if memory is None or memory.fits or memory.available is None:
        return
    raise DomainkitError(
        f"{memory.table()}\nthis run needs {memory.total / GiB:.1f} GiB but "
        f"{memory.available / GiB:.1f} GiB is free ({HEADROOM:.0%} usable): lower "
        "train.max_seq_len (or train.forward_tokens, if set), set "
        "train.gradient_checkpointing: on, train.optimizer: adamw_8bit, or train.method: qlora"
    )


def plan_for(settings: TrainConfig, label_share: float = DEFAULT_LABEL_SHARE) -> MemoryPlan | None:
    """The plan for ``settings`` on the device they pick, against its free memory; None
    (with a warning) for a model whose config does not give the shapes the plan needs."""
    from domainkit.models import resolve_causal_lm
    from domainkit.train.model import compute_dtype
    from domainkit.utils.device import best_device

    device = best_device(settings.device)
    path = resolve_causal_lm(settings.student_model)
    try:
        shapes = model_shapes(path, settings.target_modules)
        if settings.peft is not None and settings.method != "full":
            shapes = replace(shapes, adapter_parameters=peft_parameters(path, settings))
    except (ValueError, AttributeError, TypeError) as e:
        log.warning("no memory plan for %s (%s)", settings.student_model, e)
        return None
    compute_bytes = torch.finfo(compute_dtype(device, settings.precision)).bits // 8
    return plan(shapes, settings, device, compute_bytes, label_share, available_memory(device))
