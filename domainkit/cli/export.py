"""``domainkit export``."""

from __future__ import annotations

from typing import Annotated

import typer

from domainkit.cli import app
from domainkit.cli.console import console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


@app.command()
def export(
    domain: DomainArg,
    formats: Annotated[
        str,
        typer.Option(
            "--format",
            help="Comma-separated: adapter (peft), merged (transformers safetensors), gguf "
            "(llama.cpp / Ollama, with a Modelfile), dataset (the synthetic data and the reviewed "
            "questions, JSONL).",
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
    _show_export(report, json_output)


def _show_export(report, json_output: bool) -> None:
    """Each written format with its size, the GGUF round trip's verdict, and notes."""
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
