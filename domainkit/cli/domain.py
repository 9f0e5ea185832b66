"""Domain folder commands: ``init`` and ``recipes``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console
from domainkit.config import available_recipes, load_recipe
from domainkit.config.scaffold import scaffold_domain


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder to create (may exist; files are never overwritten).")
    ],
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", help="Recipe to start from (see `domainkit recipes`).")
    ] = "customer-support",
    organization: Annotated[
        str | None,
        typer.Option("--organization", "-o", help="Organization the documents belong to."),
    ] = None,
) -> None:
    """Create a domain folder: domain.yaml (naming the recipe), docs/ and an eval.yaml template."""
    written = scaffold_domain(directory, recipe, organization)
    for path in written:
        console.print(f"created {path}")
    console.print(
        f"\nNext: put your documents in {directory / 'docs'}, questions in "
        f"{directory / 'eval.yaml'}, then run [bold]domainkit build {directory} --dry-run[/] "
        f"and [bold]domainkit build {directory}[/]"
    )


@app.command()
def recipes() -> None:
    """List the shipped recipes (per-vertical defaults a domain.yaml starts from)."""
    table = Table("recipe", "assistant", "description")
    for name in available_recipes():
        recipe = load_recipe(name)
        table.add_row(name, recipe.persona.assistant_name, recipe.description)
    console.print(table)
