"""``domainkit train``."""

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
