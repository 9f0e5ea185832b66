"""``domainkit synth``: generate the instruction dataset from the domain's chunks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


class ExportFormat(str, Enum):
    messages = "messages"
    sharegpt = "sharegpt"
    alpaca = "alpaca"


@app.command()
def synth(
    domain: DomainArg,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Aim for about N samples: a small first dataset."),
    ] = None,
    export: Annotated[
        tuple[ExportFormat, Path] | None,
        typer.Option(
            "--export",
            help="Also write the dataset as FORMAT (messages, sharegpt or alpaca) JSONL to PATH.",
            metavar="FORMAT PATH",
            show_default=False,
        ),
    ] = None,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Have the teacher turn the indexed chunks into checked instruction data.

    Generators (mix set in the recipe): Baize-style self-chat, grounded Q&A with paraphrased
    questions, RAFT samples (gold passage among retrieved distractors) and refusals. Every
    teacher call is cached, so an interrupted run resumes where it stopped. Output: a
    datasets DatasetDict plus JSONL under BUILD/synth/, split by chunk into train/validation.
    """
    from domainkit.synth import dataset, run_synth
    from domainkit.synth.pipeline import summary

    loaded = load_domain(domain, build_dir)
    with build_lock(loaded.build_dir, "synth"):
        report = run_synth(loaded, limit=limit, progress=not json_output)
    exported = None
    if export is not None:
        fmt, path = export
        samples = [s for rows in dataset.load_samples(loaded.layout.synth).values() for s in rows]
        exported = {
            "format": fmt.value,
            "path": str(path),
            "samples": dataset.export(samples, fmt.value, path),
        }
    if json_output:
        print_json({"path": str(report.path), **summary(report), "export": exported})
        return
    _print_report(report)
    if exported:
        console.print(
            f"Exported {exported['samples']} samples as {exported['format']} to {exported['path']}"
        )


def _print_report(report) -> None:
    table = Table("generator", "kept", title=f"Synthetic data ({report.seconds:.0f}s)")
    for name, count in sorted(report.kept.items()):
        table.add_row(name, str(count))
    console.print(table)
    rejected = Table("filter", "rejected", title="Rejected by filter")
    for name, count in report.rejected.most_common():
        rejected.add_row(name, str(count))
    console.print(rejected)
    console.print(
        f"train {report.splits['train']}, validation {report.splits['validation']} "
        f"(split by chunk); teacher calls: {report.calls_made} made, {report.calls_cached} "
        f"from cache\n  {report.path}"
    )
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
