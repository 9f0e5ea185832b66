"""Fine-tuning on tiny random models: labels, packing, LoRA/QLoRA, resume, merge, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from domainkit.cli import app
from domainkit.config import load_domain
from domainkit.config.layout import PhaseLayout
from domainkit.config.schema import TrainConfig
from domainkit.synth import run_synth
from domainkit.train.data import (
    IGNORE,
    DataStats,
    Tokenized,
    collate,
    fit_length,
    pack,
    single_rows,
    tokenize_chat,
)
from domainkit.train.export import merge_adapter
from domainkit.train.loop import Phase, TrainingRun
from domainkit.train.model import load_student, make_accelerator
from domainkit.train.objective import LabelledTokenLoss

from .conftest import kill_after
from .tiny_lm import CHATML, CONVERSATION, save_tiny_chat_model, tiny_tokenizer

ZEPHYR = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.mark.parametrize("template", [CHATML, ZEPHYR], ids=["chatml", "zephyr"])
def test_only_assistant_tokens_carry_labels(template):
    tokenizer = tiny_tokenizer(template)
    item = tokenize_chat(tokenizer, CONVERSATION)
    labelled = [t for t, label in zip(item.input_ids, item.labels, strict=True) if label != IGNORE]
    text = tokenizer.decode(labelled)
    assert "Two years." in text and "Within 30 days." in text
    for prompt_text in ("helpful", "warranty", "returns", "user", "system"):
        assert prompt_text not in text
    assert text.count("<|im_end|>") == 2, "each answer ends with its end-of-turn token"
    assert [x for x in item.labels if x != IGNORE] == labelled

    last = tokenize_chat(tokenizer, CONVERSATION, last_only=True)
    assert last.input_ids == item.input_ids
    kept = [t for t, label in zip(last.input_ids, last.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(kept).strip() == "Within 30 days.<|im_end|>"


def test_length_limit_truncates_and_drops_with_counts():
    long_answer = Tokenized(list(range(50)), [IGNORE] * 10 + list(range(10, 50)))
    prompt_only = Tokenized(list(range(50)), [IGNORE] * 40 + list(range(40, 50)))
    stats = DataStats()
    kept = fit_length([long_answer, prompt_only], 30, stats)
    assert [len(k) for k in kept] == [30]
    assert (stats.samples, stats.truncated, stats.dropped) == (2, 2, 1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_chat_model(tmp_path_factory.mktemp("tiny"))


def _settings(tiny_model, **overrides) -> TrainConfig:
    values = {
        "student_model": str(tiny_model),
        "method": "lora",
        "batch_size": 2,
        "grad_accum": 2,
        "max_seq_len": 128,
        "learning_rate": 5e-3,
        "eval_every": 2,
        "save_every": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "precision": "fp32",  # exact comparisons; bf16 has its own test
    }
    return TrainConfig(**(values | overrides))


def _rows(student, n=12, packed=True):
    conversations = [
        [
            {"role": "user", "content": f"Question number {i} about the warranty?"},
            {"role": "assistant", "content": f"Answer {i}: the warranty lasts {i % 3 + 1} years."},
        ]
        for i in range(n)
    ]
    items = [tokenize_chat(student.tokenizer, c) for c in conversations]
    return pack(items, 128) if packed else single_rows(items)


def test_packed_and_grouped_samples_do_not_attend_to_each_other(tiny_model):
    student = load_student(_settings(tiny_model))
    model = student.model.eval()
    a = tokenize_chat(student.tokenizer, CONVERSATION[:3])
    b = tokenize_chat(student.tokenizer, CONVERSATION[3:])
    pad = student.tokenizer.pad_token_id
    with torch.no_grad():
        alone = model(**collate(single_rows([b]), pad, packed=False)).logits[0]
        packed = model(**collate(pack([a, b], 256), pad, packed=True)).logits[0]
        grouped = model(**collate(single_rows([a, b]), pad, packed=False)).logits[1]
    first, second = sorted([a, b], key=len, reverse=True)
    offset = len(first) if second is b else 0
    torch.testing.assert_close(packed[offset : offset + len(b)], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grouped[: len(b)], alone, atol=1e-5, rtol=1e-4)


def test_labelled_token_loss_equals_the_models_own_loss_and_gradients(tiny_model):
    student = load_student(_settings(tiny_model, lora_dropout=0.0))
    model = student.model
    batch = collate(_rows(student, n=4, packed=False), student.tokenizer.pad_token_id, False)
    count = int((batch["labels"][:, 1:] != IGNORE).sum())
    adapters = [p for p in model.parameters() if p.requires_grad]

    expected = model(**batch).loss
    expected_grads = torch.autograd.grad(expected, adapters)
    ours = LabelledTokenLoss(model)(**batch) / count
    grads = torch.autograd.grad(ours, adapters)

    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-4)


def test_a_batchs_common_start_runs_once_with_the_same_loss_and_gradients(tiny_model):
    student = load_student(_settings(tiny_model, lora_dropout=0.0))
    model = student.model
    system = {"role": "system", "content": "You answer from the manual only. " * 6}
    conversations = [
        [system, *CONVERSATION[1:3]],
        [system, *CONVERSATION[3:]],
        [system, *CONVERSATION[1:]],
    ]
    rows = single_rows([tokenize_chat(student.tokenizer, c) for c in conversations])
    batch = collate(rows, student.tokenizer.pad_token_id, False, pad_to_multiple_of=32)
    count = int((batch["labels"][:, 1:] != IGNORE).sum())
    adapters = [p for p in model.parameters() if p.requires_grad]
    embedded = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: embedded.append(args[0].numel())
    )

    expected = model(**batch).loss
    expected_grads = torch.autograd.grad(expected, adapters)
    embedded.clear()
    ours = LabelledTokenLoss(model)(**batch) / count
    grads = torch.autograd.grad(ours, adapters)
    hook.remove()

    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-4)
    width, common = batch["input_ids"].shape[1], 0
    while (batch["input_ids"][:, common] == batch["input_ids"][0, common]).all():
        common += 1
    assert common >= 40
    assert len(embedded) == 2 and embedded[0] <= common  # the start once, then each row's rest
    assert sum(embedded) == embedded[0] + 3 * (width - embedded[0])


def test_padding_to_a_multiple_changes_the_shape_not_the_loss(tiny_model):
    student = load_student(_settings(tiny_model, lora_dropout=0.0))
    rows, pad = _rows(student, n=3, packed=False), student.tokenizer.pad_token_id
    exact = collate(rows, pad, False)
    rounded = collate(rows, pad, False, pad_to_multiple_of=32)
    assert rounded["input_ids"].shape[1] % 32 == 0
    assert rounded["input_ids"].shape[1] > exact["input_ids"].shape[1]
    loss = LabelledTokenLoss(student.model)
    torch.testing.assert_close(loss(**rounded), loss(**exact), atol=1e-5, rtol=1e-5)


def test_bf16_precision_keeps_adapters_fp32_and_trains(tiny_model, tmp_path):
    settings = _settings(tiny_model, precision="bf16", max_steps=3)
    student = load_student(settings)
    layer = student.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32
    before = layer.lora_B["default"].weight.detach().clone()
    rows = _rows(student)
    phase = Phase(
        "sft", rows, rows[:2], settings.learning_rate, 1.0, PhaseLayout(tmp_path), packed=True
    )
    accelerator = make_accelerator(settings)
    assert accelerator.mixed_precision == "bf16"
    state = TrainingRun(student.model, student.tokenizer, settings, phase, accelerator).run()
    losses = [r["loss"] for r in state.history if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(layer.lora_B["default"].weight, before)


class _Accel:
    """A one-process stand-in with Accelerator's interface, for loop-level tests."""

    from accelerate import Accelerator as _A

    def __new__(cls):
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()  # earlier tests may have made a bf16 one
        return cls._A(cpu=True, device_placement=False)


def _run(student, settings, out_dir, stop_after=None, resume=False):
    rows = _rows(student)
    phase = Phase(
        "sft", rows, rows[:2], settings.learning_rate, 1.0, PhaseLayout(out_dir), packed=True
    )
    run = TrainingRun(
        student.model,
        student.tokenizer,
        settings,
        phase,
        _Accel(),
        on_step=kill_after(stop_after) if stop_after else None,
    )
    return run, run.run(resume=resume)


def test_an_epoch_trains_each_sample_once_and_steps_stay_inside_it(tiny_model, tmp_path):
    settings = _settings(tiny_model, batch_size=2, grad_accum=2, eval_every=100)
    student = load_student(settings)
    rows = _rows(student, n=10, packed=False)  # 5 micro-batches: steps of 2, 2 and 1
    phase = Phase("sft", rows, [], settings.learning_rate, 1.0, PhaseLayout(tmp_path), packed=False)
    run = TrainingRun(student.model, student.tokenizer, settings, phase, _Accel())
    state = run.run()
    assert (run.total_steps, state.step, state.epoch) == (3, 3, 0)
    assert run.tokens_seen == sum(len(r.input_ids) for r in rows)


def test_validation_loss_is_taken_on_the_same_few_rows_twice_a_run(tiny_model, tmp_path):
    """eval_every auto: two evaluations (halfway and at the end), at least 10 steps apart;
    eval_rows: each on the same subset of the validation rows."""
    settings = _settings(
        tiny_model, batch_size=1, grad_accum=1, eval_every="auto", eval_rows=3, max_steps=24
    )
    student = load_student(settings)
    rows = _rows(student, n=12, packed=False)
    val = _rows(student, n=10, packed=False)
    phase = Phase(
        "sft", rows, val, settings.learning_rate, 1.0, PhaseLayout(tmp_path), packed=False
    )
    seen: list[int] = []
    hook = student.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: None if module.training else seen.append(args[0].shape[0])
    )
    run = TrainingRun(student.model, student.tokenizer, settings, phase, _Accel())
    state = run.run()
    hook.remove()
    assert [r["step"] for r in state.history if "val_loss" in r] == [12, 24]
    assert sum(seen) == 2 * 3, "two evaluations of three rows each"
    assert len({id(r) for r in run.val_rows}) == 3 and all(r in val for r in run.val_rows)


def test_a_micro_batch_split_into_passes_trains_the_same(tiny_model, tmp_path):
    """forward_tokens changes how many tokens one forward and backward pass holds, not the
    step: one pass per micro-batch and one row per pass end at the same adapter."""
    adapters, passes = {}, {}
    for forward_tokens in (10**6, 1):
        settings = _settings(
            tiny_model,
            lora_dropout=0.0,
            batch_size=4,
            grad_accum=2,
            max_steps=2,
            eval_every=100,
            save_every=100,
            forward_tokens=forward_tokens,
        )
        student = load_student(settings)
        rows = _rows(student, n=16, packed=False)
        phase = Phase(
            "sft",
            rows,
            [],
            settings.learning_rate,
            1.0,
            PhaseLayout(tmp_path / str(forward_tokens)),
            packed=False,
        )
        run = TrainingRun(student.model, student.tokenizer, settings, phase, _Accel())
        tensors, passes[forward_tokens] = run._tensors, []
        run._tensors = lambda batch, tensors=tensors, seen=passes[forward_tokens]: (
            seen.append(len(batch)) or tensors(batch)
        )
        run.run()
        adapters[forward_tokens] = {
            n: p.detach().clone() for n, p in student.model.named_parameters() if p.requires_grad
        }
    assert passes[10**6] == [4] * 4 and passes[1] == [1] * 16
    for name, value in adapters[1].items():
        torch.testing.assert_close(value, adapters[10**6][name], atol=1e-6, rtol=1e-5)


def test_lora_moves_the_adapter_and_leaves_the_base_alone(tiny_model, tmp_path):
    student = load_student(_settings(tiny_model, max_steps=4))
    base = {n: p.clone() for n, p in student.model.named_parameters() if "lora_" not in n}
    adapter = {n: p.clone() for n, p in student.model.named_parameters() if "lora_B" in n}
    _run(student, _settings(tiny_model, max_steps=4), tmp_path)
    after = dict(student.model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in base.items())
    assert all(not torch.equal(after[n], p) for n, p in adapter.items())
    assert (tmp_path / "best" / "adapter_config.json").is_file()


@pytest.mark.parametrize("top", [1, 0.5])  # one of the tiny model's two layers, by count or share
def test_lora_on_the_top_layers_trains_them_and_the_backward_pass_stops_there(
    tiny_model, tmp_path, top
):
    settings = _settings(tiny_model, max_steps=3, lora_layers=top)
    student = load_student(settings)
    layers = student.model.get_base_model().model.layers
    adapted = [
        i
        for i, layer in enumerate(layers)
        if any("lora_" in n for n, _ in layer.named_parameters())
    ]
    assert adapted == [len(layers) - 1]
    adapter = {n: p.clone() for n, p in student.model.named_parameters() if "lora_B" in n}
    backward_below: list[int] = []
    hooks = [
        layer.register_full_backward_hook(lambda *_, i=i: backward_below.append(i))
        for i, layer in enumerate(layers[:-1])
    ]
    _run(student, settings, tmp_path)
    for hook in hooks:
        hook.remove()
    after = dict(student.model.named_parameters())
    assert all(not torch.equal(after[n], p) for n, p in adapter.items())
    assert backward_below == [], "no gradient flows through the layers below"
    with pytest.raises(ValueError, match="lora_layers applies to the LoRA"):
        _settings(tiny_model, method="full", lora_layers=1)


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_8bit"])
def test_a_killed_run_resumes_to_the_same_result(tiny_model, tmp_path, optimizer):
    settings = _settings(tiny_model, max_steps=6, optimizer=optimizer)
    torch.manual_seed(0)
    reference = load_student(settings)
    _run(reference, settings, tmp_path / "a")
    expected = {
        n: p.detach().clone() for n, p in reference.model.named_parameters() if p.requires_grad
    }

    killed = load_student(settings)
    with pytest.raises(KeyboardInterrupt):
        _run(killed, settings, tmp_path / "b", stop_after=3)
    assert (tmp_path / "b" / "checkpoints" / "step-000002" / "state.json").is_file()

    resumed = load_student(settings)  # a fresh process: nothing carried over in memory
    run, state = _run(resumed, settings, tmp_path / "b", resume=True)
    assert state.step == 6
    assert (
        type(run.optimizer.optimizer).__name__
        == {"adamw": "AdamW", "adamw_8bit": "AdamW8bit"}[optimizer]
    )
    for name, value in resumed.model.named_parameters():
        if value.requires_grad:
            torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5)
    losses = [r["loss"] for r in state.history if "loss" in r]
    assert len(losses) == 6, "history before the kill is kept"


def test_qlora_layers_are_4bit_on_cpu_and_train(tiny_model, tmp_path):
    import bitsandbytes as bnb

    settings = _settings(tiny_model, method="qlora", max_steps=2)
    student = load_student(settings)
    layer = student.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.base_layer, bnb.nn.Linear4bit)
    assert layer.base_layer.weight.dtype == torch.uint8
    assert layer.base_layer.weight.quant_state.quant_type == "nf4"
    _, state = _run(student, settings, tmp_path)
    assert state.step == 2 and all(
        torch.isfinite(torch.tensor(r["loss"])) for r in state.history if "loss" in r
    )


def test_merged_model_matches_base_plus_adapter(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings = _settings(tiny_model, max_steps=3)
    student = load_student(settings)
    _run(student, settings, tmp_path / "run")
    merged_dir = merge_adapter(str(tiny_model), tmp_path / "run" / "best", tmp_path / "merged")
    inputs = student.tokenizer("What is the warranty on the speaker?", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        adapted = PeftModel.from_pretrained(base, tmp_path / "run" / "best").eval()
        expected = adapted(**inputs).logits
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)
    from safetensors import safe_open

    with safe_open(str(merged_dir / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k], "adapters are merged away"  # noqa: SIM118


@pytest.fixture
def trained_domain(indexed_support, tiny_model):
    config = yaml.safe_load((indexed_support / "domain.yaml").read_text())
    config["train"] = {
        "student_model": str(tiny_model),
        "method": "lora",
        "max_steps": 4,
        "batch_size": 2,
        "grad_accum": 1,
        "max_seq_len": 2048,
        "eval_every": 2,
        "save_every": 2,
        "lora_r": 4,
    }
    (indexed_support / "domain.yaml").write_text(yaml.safe_dump(config))
    run_synth(load_domain(indexed_support), limit=30, progress=False)
    return indexed_support


def test_cli_train_then_export(trained_domain):
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(trained_domain), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    out = trained_domain / ".domainkit" / "train"
    assert summary["steps"] == 4 and summary["best_val_loss"] is not None
    assert summary["data"]["label_tokens"] > 0
    for name in ("adapter/adapter_config.json", "metrics.jsonl", "loss.png", "summary.json"):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "tokens_per_s"} <= set(metrics[0]) and any("val_loss" in m for m in metrics)

    from domainkit.feedback.repeats import build_repeats
    from domainkit.retrieval import open_retriever

    domain = load_domain(trained_domain)  # a reviewed question goes out with the dataset
    refused = {"question": "Can I pay with Bitcoin?", "answerable": False, "exchange": "e1"}
    domain.validation_path.write_text(yaml.safe_dump({"questions": [refused]}))
    assert build_repeats(domain, open_retriever(domain)).samples == 1

    formats = "adapter,merged,dataset"
    result = runner.invoke(app, ["export", str(trained_domain), "--format", formats, "--json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert (trained_domain / ".domainkit" / "export" / "merged" / "config.json").is_file()
    assert "gguf" not in exported and exported["sizes_mb"]["merged"] > 0

    from huggingface_hub import DatasetCard, ModelCard
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(exported["adapter"]).r == 4, "plain peft loads it"
    for kind, library in (("adapter", "peft"), ("merged", "transformers")):
        card = ModelCard.load(Path(exported[kind]) / "README.md")
        assert card.data.library_name == library and "domainkit" in card.data.tags
        assert card.data.license == "other", "a local random base has no known license"
        assert "| steps | 4 |" in card.text and "## Limitations" in card.text
    data = DatasetCard.load(Path(exported["dataset"]) / "README.md").data
    assert [f["split"] for f in data.configs[0]["data_files"]][-1] == "reviewed"
    for split in data.configs[0]["data_files"]:
        rows = (Path(exported["dataset"]) / split["path"]).read_text().splitlines()
        first = json.loads(rows[0])
        assert first["messages"][-1]["role"] == "assistant" and first["generator"]
        assert (
            f"| {split['split']} | {len(rows)} |"
            in DatasetCard.load(Path(exported["dataset"]) / "README.md").text
        )

    result = runner.invoke(app, ["export", str(trained_domain), "--format", "gguf"])
    assert result.exit_code != 0 and "GGUF conversion failed" in result.output, (
        "a tokenizer llama.cpp does not know is a clear error"
    )
    result = runner.invoke(app, ["export", str(trained_domain), "--format", "onnx"])
    assert result.exit_code == 2 and "unknown format onnx" in result.output


def test_max_samples_trains_that_share_of_an_epoch_and_says_so(trained_domain):
    from domainkit.train import run_train

    config = yaml.safe_load((trained_domain / "domain.yaml").read_text())
    del config["train"]["max_steps"]
    config["train"] |= {"epochs": 1, "grad_accum": 1, "eval_every": 100}
    (trained_domain / "domain.yaml").write_text(yaml.safe_dump(config))
    full = run_train(load_domain(trained_domain))
    samples = full.data["samples"]
    config["train"]["max_samples"] = samples // 3
    (trained_domain / "domain.yaml").write_text(yaml.safe_dump(config))
    capped = run_train(load_domain(trained_domain))
    assert capped.steps == math.ceil(full.steps * (samples // 3) / samples) < full.steps
    assert any("train.max_samples" in note for note in capped.data["notes"])


def test_cli_train_resume_after_kill(trained_domain):
    from domainkit.train import run_train

    domain = load_domain(trained_domain)
    with pytest.raises(KeyboardInterrupt):
        run_train(domain, on_step=kill_after(3))
    report = run_train(domain, resume=True)
    assert report.steps == 4


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_accelerate_launch(trained_domain):
    """The same training code under `accelerate launch` with 2 CPU processes (DDP over gloo:
    accelerate's multi-process launcher falls back to CPU when there is no GPU)."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "domainkit",
        "train",
        str(trained_domain),
        "--max-steps",
        "2",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((trained_domain / ".domainkit" / "train" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["processes"] == 2
    assert (trained_domain / ".domainkit" / "train" / "adapter" / "adapter_config.json").is_file()


def test_continued_pretraining_then_sft_then_dpo(trained_domain):
    from domainkit.train import run_train

    config = yaml.safe_load((trained_domain / "domain.yaml").read_text())
    config["train"] |= {
        "max_steps": 2,
        "pretrain": {"enabled": True},
        "preference": {"method": "dpo", "max_pairs": 4},
    }
    (trained_domain / "domain.yaml").write_text(yaml.safe_dump(config))
    report = run_train(load_domain(trained_domain))
    assert report.phases == ["pretrain", "sft", "preference"]
    assert report.preference["pairs"] >= 1 and report.preference["steps"] >= 1
    out = trained_domain / ".domainkit" / "train"
    assert (out / "pretrain" / "done.json").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["phase"] for m in metrics} == {"pretrain", "sft"}
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tiny_model, tmp_path, caplog):
    import logging

    settings = _settings(tiny_model, max_steps=6)
    killed = load_student(settings)
    with pytest.raises(KeyboardInterrupt):
        _run(killed, settings, tmp_path, stop_after=5)
    newest = tmp_path / "checkpoints" / "step-000004"
    (newest / "training.pt").write_bytes(b"truncated by a crash")
    with caplog.at_level(logging.INFO, logger="domainkit.train.loop"):
        _, state = _run(load_student(settings), settings, tmp_path, resume=True)
    assert "cannot be read" in caplog.text and "(step 2)" in caplog.text
    assert state.step == 6


@pytest.mark.integration
@pytest.mark.parametrize("moment", ["before-any-checkpoint", "after-checkpoint"])
def test_sigkill_at_any_moment_then_the_rerun_finishes_consistently(
    trained_domain, tmp_path, moment
):
    """A training process killed with SIGKILL (no cleanup at all) leaves a folder the next
    run can use: it resumes from the last complete checkpoint, or starts over, and ends with
    a loadable adapter and every step accounted for."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from domainkit.config.layout import Layout

    domain = tmp_path / "domain"
    shutil.copytree(
        trained_domain,
        domain,
        ignore=lambda folder, names: ["train"] if folder.endswith(".domainkit") else [],
    )
    config = yaml.safe_load((domain / "domain.yaml").read_text())
    config["train"] |= {"max_steps": 10, "save_every": 1, "eval_every": 5}
    (domain / "domain.yaml").write_text(yaml.safe_dump(config))
    out = domain / ".domainkit" / "train"
    command = [sys.executable, "-m", "domainkit", "train", str(domain)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    signal_file = {
        "before-any-checkpoint": lambda: Layout(out.parent).memory_choices.is_file(),  # at start
        "after-checkpoint": lambda: _somewhere_under(out, "**/checkpoints/step-000003"),
    }[moment]
    deadline = time.time() + 300
    while not signal_file():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert not (out / "adapter" / "adapter_config.json").is_file(), "killed before the end"

    rerun = subprocess.run(
        [*command, "--resume", "--json"], capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["steps"] == 10
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(out / "adapter").r == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == list(range(1, 11)), "every step once, none lost or repeated"
    assert not list(out.glob("**/.*.tmp")), "no half-written folder is left"


@pytest.mark.parametrize("peft_type", ["IA3", "LOHA", "ADALORA"])
def test_any_weight_adapter_peft_offers_trains_by_name_and_merges(tiny_model, tmp_path, peft_type):
    """``train.peft`` names a peft method and its settings as peft writes them: the adapter
    trains (its weights move, the base stays; AdaLoRA re-allocates its ranks), is saved
    with its own config, and merges into a model that computes what base + adapter does."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    peft = {"peft_type": peft_type} | {
        "IA3": {},
        "LOHA": {"r": 4, "target_modules": "all-linear"},
        "ADALORA": {"init_r": 4, "target_r": 2, "total_step": 3, "target_modules": "all-linear"},
    }[peft_type]
    settings = _settings(tiny_model, max_steps=3, peft=peft)
    student = load_student(settings)
    trainable = {n: p.clone() for n, p in student.model.named_parameters() if p.requires_grad}
    frozen = {n: p.clone() for n, p in student.model.named_parameters() if not p.requires_grad}
    assert trainable and (peft_type == "ADALORA") == any("lora_E" in n for n in trainable)
    _run(student, settings, tmp_path / "run")
    if peft_type == "ADALORA":  # its rank budget re-allocated by the loop, as peft asks
        assert student.model.peft_config["default"].rank_pattern
    after = dict(student.model.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in trainable.items()), "the adapter learnt"
    assert all(torch.equal(after[n], p) for n, p in frozen.items()), "the base is untouched"
    saved = tmp_path / "run" / "best"
    assert PeftConfig.from_pretrained(saved).peft_type == peft_type
    merged_dir = merge_adapter(str(tiny_model), saved, tmp_path / "merged")
    inputs = student.tokenizer("What is the warranty on the speaker?", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        expected = PeftModel.from_pretrained(base, saved).eval()(**inputs).logits
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)


def test_a_peft_method_the_runtime_cannot_merge_or_does_not_know_is_a_clear_error(tiny_model):
    from domainkit.errors import ConfigError

    with pytest.raises(ConfigError, match="PROMPT_TUNING adds virtual tokens"):
        load_student(_settings(tiny_model, peft={"peft_type": "PROMPT_TUNING"}))
    with pytest.raises(ConfigError, match="unknown peft_type 'LORAX'.*IA3"):
        load_student(_settings(tiny_model, peft={"peft_type": "LORAX"}))
    with pytest.raises(ValueError, match="train.peft needs method lora or qlora"):
        _settings(tiny_model, method="full", peft={"peft_type": "IA3"})
    with pytest.raises(ValueError, match="peft_type"):
        _settings(tiny_model, peft={"r": 4})


def _somewhere_under(folder: Path, pattern: str) -> bool:
    """Whether ``pattern`` matches under ``folder`` while a writer renames folders in it: a
    temporary checkpoint renamed in the middle of the walk is not there yet, not an error."""
    try:
        return any(folder.glob(pattern))
    except FileNotFoundError:
        return False
