"""``domainkit train`` and ``domainkit export``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from domainkit.cli import app
from domainkit.cli.console import console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.models import resolve_causal_lm
from domainkit.train import run_train, train_dir
from domainkit.train.export import export_model
from domainkit.train.pipeline import summary_dict


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
    loaded = load_domain(domain, build_dir)
    report = run_train(loaded, resume=resume, max_steps=max_steps)
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
        str, typer.Option("--format", help="Comma-separated: adapter, merged, gguf.")
    ] = "adapter,merged,gguf",
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Export the trained model: the LoRA adapter (plain peft), a merged safetensors model,
    and GGUF with an Ollama Modelfile when llama.cpp's converter is available."""
    loaded = load_domain(domain, build_dir)
    wanted = {f.strip() for f in formats.split(",") if f.strip()}
    unknown = wanted - {"adapter", "merged", "gguf"}
    if unknown:
        raise typer.BadParameter(
            f"unknown format {', '.join(sorted(unknown))}", param_hint="--format"
        )
    out = train_dir(loaded)
    report = export_model(
        out / "adapter",
        resolve_causal_lm(loaded.config.train.student_model),
        loaded.build_dir / "export",
        loaded.config.render_system_prompt(),
        wanted,
    )
    result = {
        k: str(v) if v else None
        for k, v in {
            "adapter": report.adapter,
            "merged": report.merged,
            "gguf": report.gguf,
            "modelfile": report.modelfile,
        }.items()
    }
    if json_output:
        print_json({**result, "notes": report.notes})
        return
    for name, path in result.items():
        if path:
            console.print(f"{name}: {path}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
