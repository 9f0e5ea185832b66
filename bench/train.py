"""Training throughput: domainkit's trainer against the baseline a user would otherwise
write (transformers ``Trainer`` + peft, default padding to the longest sample of each
random batch, no packing), on SmolLM2-135M, the same samples, labels and LoRA settings.

Prints the CPU it runs on, effective (non-padding) training tokens/s and peak memory (the
process's maximum resident set) for each, the ratios against the baseline, and domainkit's
memory plan next to its measured peak. Each trainer runs in its own process so peak memory
is its own. On a CPU without native bf16 the bf16 baseline is skipped: autocast emulates
bf16 there, so slowly that the run would not finish in reasonable time (over 10 minutes for
64 samples on an EPYC without AVX-512). ``DOMAINKIT_CPU_BF16=0`` runs the whole bench as on
such a CPU (domainkit's arms then compute in fp32).

    .venv/bin/python bench/train.py [--domain corpora/customer-support] [--samples 64]
        [--build-dir /tmp/full/customer-support]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]


def load_samples(domain_dir: Path, n: int, build_dir: Path | None = None):
    from domainkit.config import load_domain
    from domainkit.synth import dataset

    domain = load_domain(domain_dir, build_dir)
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
            "max_samples": None,
            "eval_every": 10**6,
            "save_every": 10**6,
            "early_stopping_patience": 0,
            "device": "cpu",
        }
    )


# What says whether a CPU computes bf16 in hardware (AVX512-BF16, AMX) or at all quickly.
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def describe_cpu(cpuinfo: str, native_bf16: bool, forced: str | None) -> str:
    """One line on the CPU: its model name (``/proc/cpuinfo``'s text), whether domainkit
    computes in bf16 on it, and which of ``CPU_FLAGS`` it has."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    name = fields.get("model name") or platform.processor() or platform.machine()
    from domainkit.utils.device import CPU_BF16_ENV

    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    bf16 = "yes" if native_bf16 else "no"
    if forced:
        bf16 += f" (forced by {CPU_BF16_ENV}={forced})"
    return f"CPU: {name}, {os.cpu_count()} cores; native bf16: {bf16}; {has}"


def cpu_line() -> str:
    from domainkit.utils.device import CPU_BF16_ENV, native_bf16

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return describe_cpu(cpuinfo, native_bf16("cpu"), os.environ.get(CPU_BF16_ENV))


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
    model = get_peft_model(model, lora_config(settings, model))
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


def skipped(worker: str, native_bf16: bool) -> str | None:
    """Why ``worker`` does not run on this CPU, or None when it does."""
    if worker == "baseline-bf16" and not native_bf16:
        return (
            "no native bf16 on this CPU; autocast emulates it (64 samples took over 10 "
            "minutes on an EPYC without AVX-512, against 3.5 in fp32)"
        )
    return None


def run_worker(worker: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", worker, "--domain", str(args.domain)]
    command += ["--samples", str(args.samples), "--method", args.method]
    if args.build_dir is not None:
        command += ["--build-dir", str(args.build_dir)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def result_line(label: str, r: dict) -> str:
    plan = ""
    if "plan_mb" in r:
        plan = f"  (plan {r['plan_mb']:6.0f} MB, x{r['plan_mb'] / r['peak_mb']:.2f} of the peak)"
    return (
        f"  {label:52} {r['tokens']:6d} tokens {r['seconds']:7.1f}s "
        f"{r['tokens'] / r['seconds']:7.1f} effective tokens/s  {r['steps']:3d} steps  "
        f"peak {r['peak_mb']:6.0f} MB{plan}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", type=Path, default=ROOT / "corpora" / "customer-support")
    parser.add_argument(
        "--build-dir", type=Path, help="the domain's build folder, if not the configured one"
    )
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--method", default="qlora", choices=["qlora", "lora"])
    parser.add_argument("--worker", choices=list(WORKERS))
    args = parser.parse_args()
    domain, conversations = load_samples(args.domain, args.samples, args.build_dir)
    if args.worker:
        print(json.dumps(WORKERS[args.worker][1](domain, conversations, args.method)))
        return 0

    from domainkit.train.model import native_bf16

    settings = settings_for(domain, args.method)
    print(cpu_line())
    print(
        f"SmolLM2-135M-Instruct, {args.method}, r={settings.lora_r}, {len(conversations)} "
        f"samples from {args.domain.name}'s synth data, batch {settings.batch_size} x "
        f"accumulation {settings.grad_accum}, max_seq_len {settings.max_seq_len}, 1 epoch, CPU\n"
    )
    results = {}
    for worker, (label, _) in WORKERS.items():
        reason = skipped(worker, native_bf16("cpu"))
        if reason:
            print(f"  {label:52} skipped: {reason}")
            continue
        results[worker] = run_worker(worker, args)
        print(result_line(label, results[worker]), flush=True)
    speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    for baseline in ("baseline", "baseline-bf16"):
        if baseline not in results:
            continue
        print(f"\n  against {baseline}:")
        for ours in ("domainkit", "domainkit-ckpt"):
            print(
                f"    {ours:16} x{speed[ours] / speed[baseline]:.2f} tokens/s, peak memory "
                f"x{results[ours]['peak_mb'] / results[baseline]['peak_mb']:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
