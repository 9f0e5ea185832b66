"""Option and argument aliases shared by the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DomainArg = Annotated[
    Path,
    typer.Argument(
        help="Domain folder: domain.yaml, docs/ and optionally eval.yaml.",
        show_default=False,
    ),
]
BuildDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--build-dir",
        help="Where build outputs go (default: the domain's build_dir, .domainkit/).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=1,
        help="Small first run: about N synth samples and at most N questions per eval set.",
    ),
]
