"""``domainkit review``: a reviewer's verdicts on what the assistant answered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.errors import DomainkitError

_VERDICT_FLAGS = ("--right", "--line", "--answer-text", "--not-in-docs", "--off-topic")


@app.command()
def review(
    domain: DomainArg,
    json_output: JsonOpt = False,
    mark: Annotated[
        str | None,
        typer.Option(
            "--mark",
            metavar="ID",
            help="Record a verdict on this exchange, with one of --right, --line, "
            "--answer-text, --not-in-docs or --off-topic.",
            show_default=False,
        ),
    ] = None,
    right: Annotated[
        bool, typer.Option("--right", help="The answer was right (or rightly refused).")
    ] = False,
    line: Annotated[
        list[str] | None,
        typer.Option(
            "--line",
            metavar="LINE_ID",
            help="This line of the documents answers it (an id from --json or --search); "
            "repeat it for an answer no single line holds (--line A --line B, in order).",
            show_default=False,
        ),
    ] = None,
    answer_text: Annotated[
        str | None,
        typer.Option(
            "--answer-text", metavar="TEXT", help="The answer, in your words.", show_default=False
        ),
    ] = None,
    not_in_docs: Annotated[
        bool, typer.Option("--not-in-docs", help="The documents do not answer it.")
    ] = False,
    off_topic: Annotated[
        bool, typer.Option("--off-topic", help="Not a question for this assistant.")
    ] = False,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            metavar="WORDS",
            help="Find the line that answers: the lines of the passages that best match.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="Copy the reviewed questions to a new eval.yaml-format file.",
            show_default=False,
        ),
    ] = None,
    purge_before: Annotated[
        str | None,
        typer.Option(
            "--purge-before",
            metavar="DATE",
            help="Delete the exchanges (and their feedback) answered before DATE "
            "(YYYY-MM-DD); verdicts already in validation.yaml stay.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most exchanges listed.")] = 50,
    host: Annotated[str, typer.Option(help="Interface of the review page.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the review page.")] = 8001,
    build_dir: BuildDirOpt = None,
) -> None:
    """Review what the assistant answered: each verdict becomes a question in the domain's
    `validation.yaml`, and the next `domainkit build` calibrates the gate on them, answers
    their repeats with the reviewed line (or refusal) and reports what they changed.

    Without options it serves the review page on this machine (thumbs down first, then the
    answers the gate was least sure of). For scripts: `--json` lists the exchanges waiting
    (with their evidence line ids), `--mark ID --right | --line LINE_ID [--line LINE_ID ...] |
    --answer-text TEXT | --not-in-docs | --off-topic` records a verdict.
    """
    from domainkit.feedback.desk import ReviewDesk
    from domainkit.feedback.log import open_log

    loaded = load_domain(domain, build_dir)
    log = open_log(loaded)
    if log is None:
        raise DomainkitError(
            f"{loaded.root}: the conversation log is off (runtime.log: false); there is "
            "nothing to review"
        )
    desk = ReviewDesk(loaded, log)
    if purge_before is not None:
        _purge(log, purge_before)
    elif export is not None:
        from domainkit.feedback.review import export_reviews

        count = export_reviews(loaded, export)
        console.print(f"wrote {count} reviewed questions to {export}")
    elif mark is not None:
        _mark(desk, mark, right, line, answer_text, not_in_docs, off_topic, json_output)
    elif search is not None:
        _search(desk, search, json_output)
    elif json_output:
        print_json({"exchanges": desk.pending(limit), "stale": desk.stale()})
    else:
        _serve(desk, host, port)


def _mark(desk, ident, right, line, answer_text, not_in_docs, off_topic, json_output) -> None:
    from domainkit.feedback.review import Verdict

    chosen = [
        kind
        for kind, given in (
            ("right", right),
            ("line", bool(line)),
            ("answer_text", answer_text is not None),
            ("not_in_docs", not_in_docs),
            ("off_topic", off_topic),
        )
        if given
    ]
    if len(chosen) != 1:
        raise DomainkitError(f"--mark needs exactly one of {', '.join(_VERDICT_FLAGS)}")
    first, *also = line or [None]
    entry = desk.mark(Verdict(ident, chosen[0], first, answer_text, tuple(also)))
    if json_output:
        print_json(entry)
        return
    what = entry.get("answer") or ("not answerable" if not entry.get("answerable", True) else "")
    console.print(
        f"recorded {entry['verdict']} for {ident} in {desk.domain.validation_path}: {escape(what)}"
    )


def _search(desk, words: str, json_output: bool) -> None:
    lines = desk.search(words)
    if json_output:
        print_json({"lines": lines})
        return
    for found in lines:
        console.print(f"[cyan]{found['id']}[/]\n  {escape(found['text'])}")


def _purge(log, before: str) -> None:
    from domainkit.feedback.log import parse_date

    try:
        when = parse_date(before)
    except ValueError as e:
        raise DomainkitError(str(e)) from None
    console.print(f"deleted {log.purge_before(when)} exchanges answered before {before}")


def _serve(desk, host: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from domainkit.runtime.review_page import add_review_routes
    from domainkit.runtime.server import local_hosts

    if local_hosts(host) is None:
        raise DomainkitError(
            "the review page serves on this machine only (--host 127.0.0.1); to review "
            "from elsewhere, run `domainkit serve --admin-keys-file FILE` and open /review"
        )
    app_ = FastAPI(title="domainkit review", docs_url=None, redoc_url=None, openapi_url=None)
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app_.add_middleware(TrustedHostMiddleware, allowed_hosts=local_hosts(host))
    add_review_routes(app_, desk, [], prefix="/review")

    @app_.get("/", include_in_schema=False)
    def home():
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/review")

    from domainkit.runtime.server import add_error_handlers

    add_error_handlers(app_)
    err_console.print(
        f"Review page for {desk.domain.config.name}: http://{host}:{port}/review (Ctrl-C stops it)"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")
