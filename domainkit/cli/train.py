"""``domainkit train`` and ``domainkit export``."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Annotated

import typer

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


@app.command()
def train(
    domain: DomainArg,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoint.")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")
    ] = None,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Fine-tune the student on the synth dataset (QLoRA by default; LoRA or full per recipe).

    Loss is on assistant tokens only; samples are packed without attending to each other.
    Validation loss is checked every `train.eval_every` steps, the best adapter is kept,
    training stops early when it stops improving, and checkpoints allow `--resume`.
    Outputs in BUILD/train/: adapter/, metrics.jsonl, loss.png, summary.json.
    """
    from domainkit.train import run_train
    from domainkit.train.pipeline import summary_dict

    loaded = load_domain(domain, build_dir)
    main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one locks
    with build_lock(loaded.build_dir, "train") if main else nullcontext():
        report = run_train(
            loaded,
            resume=resume,
            max_steps=max_steps,
            on_plan=None
            if json_output or not main
            else lambda plan: err_console.print(plan.table(), markup=False),
        )
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`, one process reports
        return
    if json_output:
        print_json(summary_dict(report))
        return
    data = report.data
    best = (
        f"{report.best_val_loss:.4f} at step {report.best_step}" if report.best_val_loss else "n/a"
    )
    console.print(
        f"Trained {report.method} on {report.device}: {report.steps} steps in "
        f"{report.seconds:.0f}s ({report.tokens_per_s:.0f} tokens/s), best validation loss "
        f"{best}{', stopped early' if report.stopped_early else ''}\n"
        f"  data: {data['samples']} samples, {data['truncated']} truncated, {data['dropped']} "
        f"dropped (no answer within max_seq_len), {data['tokens']} tokens "
        f"({data['label_tokens']} trained on)\n"
        f"  adapter: {report.adapter}\n  loss curve: {report.plot}"
    )


@app.command()
def export(
    domain: DomainArg,
    formats: Annotated[
        str,
        typer.Option(
            "--format",
            help="Comma-separated: adapter (peft), merged (transformers safetensors), gguf "
            "(llama.cpp / Ollama, with a Modelfile), dataset (the synthetic data, JSONL).",
        ),
    ] = "adapter,merged,gguf,dataset",
    gguf_type: Annotated[
        str,
        typer.Option("--gguf-type", help="GGUF weights: q8_0 (half of f16's size), f16 or bf16."),
    ] = "q8_0",
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Load the GGUF back through transformers and compare greedy answers with "
            "the merged model.",
        ),
    ] = True,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Export the trained model for other tools, each folder with a Hugging Face card.

    Writes under BUILD/export/: adapter/ (load with peft), merged/ (serve with vLLM, or as
    domainkit's `openai` backend), model.<type>.gguf + Modelfile (Ollama, llama.cpp, LM
    Studio; needs llama.cpp's converter, which `make install` sets up) and dataset/.
    """
    from domainkit.models import resolve_causal_lm
    from domainkit.train.export import FORMATS, export_model

    loaded = load_domain(domain, build_dir)
    wanted = {f.strip() for f in formats.split(",") if f.strip()}
    unknown = wanted - set(FORMATS)
    if unknown or not wanted:
        raise typer.BadParameter(
            f"unknown format {', '.join(sorted(unknown)) or '(none)'}; expected some of "
            f"{', '.join(FORMATS)}",
            param_hint="--format",
        )
    with build_lock(loaded.build_dir, "export"):
        report = export_model(
            loaded,
            loaded.layout.adapter,
            resolve_causal_lm(loaded.config.train.student_model),
            loaded.layout.export,
            wanted,
            gguf_type=gguf_type,
            check=check,
        )
    trip = report.round_trip
    if json_output:
        print_json(
            {
                **{name: str(path) for name, path in report.paths.items()},
                "sizes_mb": {name: _size_mb(path) for name, path in report.paths.items()},
                "round_trip": None
                if trip is None
                else {
                    "outtype": trip.outtype,
                    "same": trip.same,
                    "prompts": len(trip.answers),
                    "tokenizer_same": trip.tokenizer_same,
                    "answers": trip.answers,
                },
                "notes": report.notes,
            }
        )
        return
    for name, path in report.paths.items():
        console.print(f"{name}: {path} ({_size_mb(path):.1f} MB)", markup=False)
    if trip is not None:
        console.print(trip.summary(), markup=False)
        for answer in trip.answers:
            if not answer["same"]:
                console.print(
                    f"  differs on {answer['prompt']!r} after {answer['agree_tokens']} tokens:\n"
                    f"    merged: {answer['merged']!r}\n"
                    f"    gguf:   {answer['gguf']!r}",
                    markup=False,
                )
    for note in report.notes:
        console.print(f"note: {note}", style="yellow", markup=False)


def _size_mb(path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6
