"""Training throughput: domainkit's trainer against the baseline a user would otherwise
write (transformers ``Trainer`` + peft, default padding to the longest sample of each
random batch, no packing), on SmolLM2-135M, the same samples, labels and LoRA settings.

Prints effective (non-padding) training tokens/s and peak memory (the process's maximum
resident set) for each, the ratios against the baseline, and domainkit's memory plan next
to its measured peak. Each trainer runs in its own process so peak memory is its own.

    .venv/bin/python bench/train.py [--domain corpora/customer-support] [--samples 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]


def load_samples(domain_dir: Path, n: int):
    from domainkit.config import load_domain
    from domainkit.synth import dataset

    domain = load_domain(domain_dir)
    samples = dataset.load_samples(domain.layout.synth)["train"][:n]
    if not samples:
        sys.exit(f"no synth dataset in {domain_dir}; run `domainkit synth {domain_dir}` first")
    return domain, [s.messages for s in samples]


def settings_for(domain, method: str, checkpointing: str = "off"):
    return domain.config.train.model_copy(
        update={
            "method": method,
            "gradient_checkpointing": checkpointing,
            "epochs": 1.0,
            "max_steps": None,
            "eval_every": 10**6,
            "save_every": 10**6,
            "early_stopping_patience": 0,
            "device": "cpu",
        }
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_domainkit(domain, conversations, method: str, checkpointing: str = "off") -> dict:
    import tempfile

    from domainkit.config.layout import PhaseLayout
    from domainkit.train.data import DataStats, fit_length, pack, single_rows, tokenize_chat
    from domainkit.train.loop import Phase, TrainingRun
    from domainkit.train.memory import plan_for
    from domainkit.train.model import enable_checkpointing, load_student, make_accelerator

    settings = settings_for(domain, method, checkpointing)
    student = load_student(settings)
    items = fit_length(
        [tokenize_chat(student.tokenizer, c) for c in conversations],
        settings.max_seq_len,
        DataStats(),
    )
    share = sum(sum(x != -100 for x in i.labels) for i in items) / sum(len(i) for i in items)
    memory = plan_for(settings, share)
    if memory.checkpointing:
        enable_checkpointing(student.model)
    rows = pack(items, settings.max_seq_len) if settings.packing else single_rows(items)
    phase = Phase(
        "bench",
        rows,
        [],
        settings.learning_rate,
        1.0,
        PhaseLayout(Path(tempfile.mkdtemp())),
        settings.packing,
    )
    run = TrainingRun(
        student.model,
        student.tokenizer,
        settings,
        phase,
        make_accelerator(settings),
    )
    start = time.perf_counter()
    run.run()
    seconds = time.perf_counter() - start
    # Tokens actually trained on (an epoch's last step may reach into the next epoch).
    return {
        "tokens": run.tokens_seen,
        "seconds": seconds,
        "steps": run.state.step,
        "peak_mb": peak_mb(),
        "plan_mb": memory.total / 2**20,
    }


def run_baseline(domain, conversations, method: str, bf16: bool = False) -> dict:
    """What the transformers + peft docs lead a user to write: Trainer defaults (fp32 on a
    CPU), or with ``bf16`` the QLoRA guides' bf16 compute dtype and ``bf16=True``."""
    import tempfile

    import torch
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from domainkit.models import load_tokenizer, resolve_causal_lm
    from domainkit.train.data import DataStats, fit_length, tokenize_chat
    from domainkit.train.model import lora_config

    settings = settings_for(domain, method)
    torch.manual_seed(settings.seed)
    path = resolve_causal_lm(settings.student_model)
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs: dict = {"dtype": dtype}
    if method == "qlora":
        kwargs["device_map"] = {"": "cpu"}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = load_tokenizer(path)
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_config(settings))
    items = fit_length(
        [tokenize_chat(tokenizer, c) for c in conversations], settings.max_seq_len, DataStats()
    )
    data = Dataset.from_list(
        [
            {"input_ids": i.input_ids, "labels": i.labels, "attention_mask": [1] * len(i)}
            for i in items
        ]
    )
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=1,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=settings.seed,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(i) for i in items)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "peak_mb": peak_mb(),
    }


WORKERS = {
    "baseline": ("Trainer + peft, padding, defaults (baseline)", run_baseline),
    "baseline-bf16": (
        "Trainer + peft, padding, bf16",
        lambda d, c, m: run_baseline(d, c, m, bf16=True),
    ),
    "domainkit": ("domainkit default (grouped, passes of 1,024, labelled-only)", run_domainkit),
    "domainkit-ckpt": (
        "domainkit + gradient checkpointing",
        lambda d, c, m: run_domainkit(d, c, m, checkpointing="on"),
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", type=Path, default=ROOT / "corpora" / "customer-support")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--method", default="qlora", choices=["qlora", "lora"])
    parser.add_argument("--worker", choices=list(WORKERS))
    args = parser.parse_args()
    if args.worker:
        domain, conversations = load_samples(args.domain, args.samples)
        print(json.dumps(WORKERS[args.worker][1](domain, conversations, args.method)))
        return 0

    domain, conversations = load_samples(args.domain, args.samples)
    settings = settings_for(domain, args.method)
    print(
        f"SmolLM2-135M-Instruct, {args.method}, r={settings.lora_r}, {len(conversations)} "
        f"samples from {args.domain.name}'s synth data, batch {settings.batch_size} x "
        f"accumulation {settings.grad_accum}, max_seq_len {settings.max_seq_len}, 1 epoch, CPU\n"
    )
    results = {}
    for worker, (label, _) in WORKERS.items():
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                worker,
                "--domain",
                str(args.domain),
                "--samples",
                str(args.samples),
                "--method",
                args.method,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[worker] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[worker]
        plan = f"  (plan {r['plan_mb']:6.0f} MB)" if "plan_mb" in r else ""
        print(
            f"  {label:52} {r['tokens']:6d} tokens {r['seconds']:7.1f}s "
            f"{r['tokens'] / r['seconds']:7.1f} effective tokens/s  {r['steps']:3d} steps  "
            f"peak {r['peak_mb']:6.0f} MB{plan}"
        )
    speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    for baseline in ("baseline", "baseline-bf16"):
        print(f"\n  against {baseline}:")
        for ours in ("domainkit", "domainkit-ckpt"):
            print(
                f"    {ours:16} x{speed[ours] / speed[baseline]:.2f} tokens/s, peak memory "
                f"x{results[ours]['peak_mb'] / results[baseline]['peak_mb']:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
