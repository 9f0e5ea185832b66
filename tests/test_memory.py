"""Training memory: gradient checkpointing changes nothing but memory, the memory plan
matches what autograd keeps, and a run that cannot fit stops before it starts."""

from __future__ import annotations

import os

import pytest
import torch

from domainkit.config.schema import TrainConfig
from domainkit.errors import DomainkitError
from domainkit.train import memory
from domainkit.train.data import IGNORE, collate, single_rows, tokenize_chat
from domainkit.train.model import enable_checkpointing, load_student
from domainkit.train.objective import LabelledTokenLoss

from .tiny_lm import save_tiny_chat_model

GiB = 2**30


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_chat_model(tmp_path_factory.mktemp("tiny"), max_positions=1024)


def _settings(tiny_model, **overrides) -> TrainConfig:
    values = {"student_model": str(tiny_model), "method": "lora", "lora_r": 4}
    return TrainConfig(**(values | overrides))


def _batch(student, n=4, words=120):
    conversations = [
        [
            # Rows that differ from their first word: no common start run once (objective.py).
            {"role": "user", "content": f"{i} " + " ".join(["warranty"] * words) + "?"},
            {"role": "assistant", "content": f"The warranty lasts {i + 1} years."},
        ]
        for i in range(n)
    ]
    rows = single_rows([tokenize_chat(student.tokenizer, c) for c in conversations])
    return collate(rows, student.tokenizer.pad_token_id, packed=False)


def _loss_and_grads(student, batch):
    adapters = [p for p in student.model.parameters() if p.requires_grad]
    loss = LabelledTokenLoss(student.model)(**batch)
    return loss.detach(), torch.autograd.grad(loss, adapters)


def test_checkpointing_gives_the_same_loss_and_gradients(tiny_model):
    student = load_student(_settings(tiny_model, lora_dropout=0.0, precision="fp32"))
    student.model.train()
    batch = _batch(student)
    loss, grads = _loss_and_grads(student, batch)
    enable_checkpointing(student.model)
    base = student.model.get_base_model()
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(student, batch)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=1e-6)
    for g, e in zip(grads_ckpt, grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-7, rtol=1e-5)


def test_checkpointing_under_bf16_autocast_recomputes_what_the_forward_did(tiny_model):
    """The recomputation runs in the backward pass, after the loss call returned: adapters
    must cast their inputs (or not) exactly as in the forward, or autograd stops."""
    student = load_student(_settings(tiny_model, lora_dropout=0.0, precision="bf16"))
    student.model.train()
    batch = _batch(student)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = _loss_and_grads(student, batch)
    enable_checkpointing(student.model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ckpt, grads_ckpt = _loss_and_grads(student, batch)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-2, rtol=1e-3)
    for g, e in zip(grads_ckpt, grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-3, rtol=5e-2)


def _saved_bytes(student, batch) -> int:
    """Bytes autograd keeps for the backward pass of one forward (weights not counted)."""
    weights = {p.untyped_storage().data_ptr() for p in student.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        LabelledTokenLoss(student.model)(**batch)
    return sum(seen.values())


@pytest.mark.parametrize(
    ("method", "dropout", "layers"),
    [("lora", 0.05, None), ("lora", 0.0, None), ("qlora", 0.0, None), ("lora", 0.0, 1)],
)
def test_plan_matches_what_autograd_keeps(tiny_model, method, dropout, layers):
    """Also with adapters on the top layer only: the layers below keep nothing."""
    settings = _settings(
        tiny_model,
        method=method,
        lora_dropout=dropout,
        precision="bf16",
        batch_size=4,
        lora_layers=layers,
    )
    student = load_student(settings)
    student.model.train()
    batch = _batch(student)
    tokens = batch["input_ids"].numel()
    labelled = int((batch["labels"][:, 1:] != IGNORE).sum())
    shapes = memory.model_shapes(str(tiny_model), settings.target_modules)
    sized = settings.model_copy(update={"batch_tokens": tokens, "max_seq_len": tokens // 4})
    for checkpointing in (False, True):
        plan = memory.estimate(
            shapes, sized, "cpu", 2, checkpointing, "adamw", label_share=labelled / tokens
        )
        if checkpointing:
            enable_checkpointing(student.model)
        measured = _saved_bytes(student, batch)
        estimated = plan.parts["activations"] + plan.parts["loss head (labelled tokens only)"]
        if checkpointing:  # the one layer rebuilt at a time in the backward pass is extra
            estimated -= tokens * memory.layer_activation_bytes(shapes, sized, 2)
        assert plan.pass_tokens == tokens
        assert abs(estimated - measured) <= 0.3 * measured, (checkpointing, estimated, measured)


def test_qlora_keeps_the_activations_in_the_compute_precision_as_lora_does(tiny_model):
    """Only the adapters train: the frozen norms and embeddings stay in bf16 under QLoRA
    (peft's kbit preparation would cast them to fp32, and the whole hidden stream with
    them), so autograd keeps no more for QLoRA than for LoRA."""
    saved = {}
    for method in ("lora", "qlora"):
        student = load_student(_settings(tiny_model, method=method, precision="bf16"))
        student.model.train()
        frozen = [
            p for p in student.model.parameters() if not p.requires_grad and p.is_floating_point()
        ]
        assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
        saved[method] = _saved_bytes(student, _batch(student))
    assert saved["qlora"] <= 1.05 * saved["lora"], saved


@pytest.mark.parametrize("layers", [None, 1])
def test_adapter_weights_and_optimizer_state_are_counted_exactly(tiny_model, layers):
    settings = _settings(tiny_model, lora_layers=layers)
    student = load_student(settings)
    trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
    shapes = memory.model_shapes(str(tiny_model), settings.target_modules)
    plan = memory.estimate(shapes, settings, "cpu", 2, False, "adamw_8bit")
    assert plan.parts["adapter weights (fp32)"] == 4 * trainable
    assert plan.parts["optimizer state (adamw_8bit)"] == 2 * trainable
    assert shapes.parameters == sum(
        p.numel() for n, p in student.model.named_parameters() if "lora_" not in n
    )


@pytest.mark.parametrize(
    "peft",
    [
        {"peft_type": "IA3"},
        {"peft_type": "LOHA", "r": 4, "target_modules": "all-linear"},
        {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]},
    ],
)
def test_a_peft_method_by_name_is_planned_with_its_own_parameter_count(tiny_model, peft):
    """``train.peft`` adapters are counted as peft builds them (an IA3 vector per layer is
    not a rank-r LoRA pair), for the adapter weights, gradients and optimizer state."""
    settings = _settings(tiny_model, peft=peft)
    student = load_student(settings)
    trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
    plan = memory.plan_for(settings)
    assert plan.parts["adapter weights (fp32)"] == 4 * trainable
    assert plan.parts["gradients (fp32)"] == 4 * trainable


def test_auto_turns_checkpointing_on_only_when_needed(tiny_model):
    settings = _settings(tiny_model, batch_tokens=4096, max_seq_len=1024, forward_tokens=4096)
    shapes = memory.model_shapes(str(tiny_model), settings.target_modules)
    roomy = memory.plan(shapes, settings, "cpu", 2, available=64 * GiB)
    assert not roomy.checkpointing and roomy.optimizer == "adamw" and roomy.fits
    tight = memory.RUNTIME_BYTES["cpu"] + (roomy.activations_on + roomy.activations_off) // 2
    squeezed = memory.plan(shapes, settings, "cpu", 2, available=int(tight / memory.HEADROOM))
    assert squeezed.checkpointing and squeezed.fits
    forced = memory.plan(
        shapes,
        settings.model_copy(update={"gradient_checkpointing": "off"}),
        "cpu",
        2,
        available=int(tight / memory.HEADROOM),
    )
    assert not forced.checkpointing and not forced.fits


def test_an_fp32_cpu_plan_counts_the_freed_blocks_the_allocator_keeps(tiny_model):
    """On a CPU computing in fp32 the resident peak of a pass was the live tensors plus about
    a pass's activations of freed temporaries the allocator kept (SmolLM2, 448-1,344-token
    passes: 1.12-1.2 MB a token, the activations 1.16), with checkpointing or without; in
    bf16 and on a GPU (its own caching allocator) nothing of the kind was seen."""
    settings = _settings(tiny_model, batch_tokens=4096, max_seq_len=1024)
    shapes = memory.model_shapes(str(tiny_model), settings.target_modules)
    part = "freed blocks the allocator keeps (fp32)"
    for checkpointing in (False, True):
        fp32 = memory.estimate(shapes, settings, "cpu", 4, checkpointing, "adamw")
        assert fp32.parts[part] == fp32.activations_off
        bf16 = memory.estimate(shapes, settings, "cpu", 2, checkpointing, "adamw")
        assert part not in bf16.parts
        gpu = memory.estimate(shapes, settings, "cuda", 4, checkpointing, "adamw")
        assert part not in gpu.parts
    shorter = memory.estimate(shapes, settings, "cpu", 4, True, "adamw", tokens=512)
    assert shorter.parts[part] == fp32.parts[part] // 2  # a shorter pass keeps less


def test_auto_splits_a_micro_batch_into_passes_before_anything_else(tiny_model):
    settings = _settings(tiny_model, batch_size=8, batch_tokens=4096, max_seq_len=512)
    shapes = memory.model_shapes(str(tiny_model), settings.target_modules)
    on_cpu = memory.plan(shapes, settings, "cpu", 2, available=64 * GiB)
    assert on_cpu.pass_tokens == memory.CPU_PASS_TOKENS and not on_cpu.checkpointing
    roomy = memory.plan(shapes, settings, "cuda", 2, available=64 * GiB)
    assert roomy.pass_tokens == 4096 and not roomy.checkpointing
    # Room for passes of one 512-token row, not for the whole micro-batch at once.
    one_row = memory.estimate(shapes, settings, "cuda", 2, False, "paged_adamw_8bit", tokens=512)
    tight = memory.plan(
        shapes, settings, "cuda", 2, available=int(one_row.total / memory.HEADROOM) + 1
    )
    assert tight.fits and tight.pass_tokens == 512 and not tight.checkpointing
    assert one_row.parts["activations"] < roomy.parts["activations"] / 4


def test_a_run_that_cannot_fit_stops_before_loading_anything(
    support_domain, tiny_model, monkeypatch
):
    import yaml

    from domainkit.config import load_domain
    from domainkit.train import pipeline

    config = yaml.safe_load((support_domain / "domain.yaml").read_text())
    config["train"] = {"student_model": str(tiny_model), "method": "lora"}
    (support_domain / "domain.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(memory, "available_memory", lambda device: GiB // 2)
    monkeypatch.setattr(pipeline, "load_student", lambda s: pytest.fail("weights were loaded"))
    with pytest.raises(DomainkitError) as error:
        pipeline.run_train(load_domain(support_domain))
    message = str(error.value)
    assert "Memory plan" in message and "train.gradient_checkpointing: on" in message
    assert "activations" in message and "0.5 GiB is free" in message


def test_the_plan_reads_configs_without_llama_names(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=300).save_pretrained(tmp_path)
    shapes = memory.model_shapes(str(tmp_path), "all-linear")
    assert (shapes.hidden, shapes.intermediate, shapes.layers, shapes.heads) == (64, 256, 2, 4)


def test_a_resumed_run_keeps_its_optimizer_and_checkpointing(tmp_path):
    from domainkit.config.layout import Layout
    from domainkit.train.pipeline import _memory_choices

    settings = TrainConfig()
    plan = memory.MemoryPlan("cpu", {}, 0, 0, True, "adamw_8bit", None, 1)
    assert _memory_choices(Layout(tmp_path), plan, settings, resume=False) == {
        "checkpointing": True,
        "optimizer": "adamw_8bit",
    }
    roomier = memory.MemoryPlan("cpu", {}, 0, 0, False, "adamw", None, 1)
    kept = _memory_choices(Layout(tmp_path), roomier, settings, resume=True)
    assert kept == {"checkpointing": True, "optimizer": "adamw_8bit"}, "its state loads only there"
    assert (
        _memory_choices(Layout(tmp_path), roomier, settings, resume=False)["optimizer"] == "adamw"
    )


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or memory._malloc_trim() is None,
    reason="needs glibc's malloc_trim and /proc",
)
def test_freed_blocks_between_passes_go_back_to_the_system():
    # Blocks below the mmap threshold live on the heap; one kept at its end stops free()
    # from shrinking it, as a pass's surviving tensors do.
    blocks = [torch.ones(16 * 1024) for _ in range(4000)]  # 64 KiB each, 250 MiB
    kept = blocks[-1]
    del blocks
    before = _resident_mb()
    memory.release_freed_memory()
    assert before - _resident_mb() > 100
    assert float(kept[0]) == 1.0
