"""The ``domainkit`` command line: one module per command group, each command a few lines."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from domainkit import __version__
from domainkit.cli.console import err_console
from domainkit.errors import DomainkitError


class _Group(TyperGroup):
    """Turns errors a user can fix into a one-line message and exit code 1, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DomainkitError as e:
            err_console.print("[bold red]error:[/]", escape(str(e)))
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="domainkit",
    help="Turn a folder of domain documents into a vertical assistant.\n\n"
    "Typical use: `domainkit init mydomain --recipe customer-support`, put documents in "
    "mydomain/docs/, then `domainkit build mydomain` (index, training data, fine-tune, "
    "evaluation), and `domainkit chat mydomain`, `ask` or `serve` to use the assistant.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        print(f"domainkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    from rich.logging import RichHandler

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=err_console)], force=True
    )
    if verbose < 2:
        for noisy in ("httpx", "sentence_transformers", "transformers", "faiss"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
        # bitsandbytes (and the kernels package it asks) warn on import that an optional
        # hub-downloaded CPU kernel is absent offline; transformers and peft emit
        # FutureWarnings about their own internals.
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        logging.getLogger("kernels").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars


# Registration order is the order `--help` lists the commands in: the usual path first.
from domainkit.cli import domain as _domain  # noqa: E402,F401  isort: skip  (registers commands)
from domainkit.cli import config as _config  # noqa: E402,F401  isort: skip
from domainkit.cli import build as _build  # noqa: E402,F401  isort: skip
from domainkit.cli import runtime as _runtime  # noqa: E402,F401  isort: skip
from domainkit.cli import review as _review  # noqa: E402,F401  isort: skip
from domainkit.cli import eval as _eval  # noqa: E402,F401  isort: skip
from domainkit.cli import index as _index  # noqa: E402,F401  isort: skip
from domainkit.cli import synth as _synth  # noqa: E402,F401  isort: skip
from domainkit.cli import train as _train  # noqa: E402,F401  isort: skip
from domainkit.cli import export as _export  # noqa: E402,F401  isort: skip


def main() -> None:
    app()
