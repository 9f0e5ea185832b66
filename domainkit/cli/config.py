"""``domainkit config``: a domain's resolved settings and where each came from, or the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from domainkit.cli import app
from domainkit.cli.console import console, print_json
from domainkit.cli.options import JsonOpt
from domainkit.errors import ConfigError


@app.command()
def config(
    domain: Annotated[
        Path | None,
        typer.Argument(
            help="Domain folder whose settings to show (not needed with --schema).",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema of every setting instead.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show a domain's resolved settings, each with where it came from: the default, a
    recipe file (or the base it builds on) or the domain's domain.yaml.

    With --json, `{name: {value, source}}` by dotted name; with --schema, the JSON schema of
    domain.yaml (every field's type, default and description).
    """
    from domainkit.config.provenance import as_annotated_yaml, as_dict, explain_domain
    from domainkit.config.schema import DomainConfig

    if schema:
        print_json(DomainConfig.model_json_schema())
        return
    if domain is None:
        raise ConfigError("name a domain folder (domainkit config DOMAIN), or use --schema")
    settings = explain_domain(domain)
    if json_output:
        print_json(as_dict(settings))
        return
    console.print(as_annotated_yaml(settings), markup=False, highlight=False, soft_wrap=True)
