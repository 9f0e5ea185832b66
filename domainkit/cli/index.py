"""Index commands: ``index`` and ``search``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


class SearchMode(str, Enum):
    hybrid = "hybrid"
    dense = "dense"
    bm25 = "bm25"


@app.command()
def index(
    domain: DomainArg,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if nothing changed.")
    ] = False,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Read, chunk, embed and index the domain's documents (FAISS + BM25).

    Only chunks whose text changed are embedded again; an unchanged domain is not re-indexed.
    """
    from domainkit.retrieval import build_index, make_embedder

    loaded = load_domain(domain, build_dir)
    with build_lock(loaded.build_dir, "index"):
        report = build_index(
            loaded, make_embedder(loaded.config.retrieval), force=force, progress=not json_output
        )
    if json_output:
        print_json(_report_dict(report))
    else:
        _print_report(report)


def _report_dict(report) -> dict:
    return {
        "path": str(report.path),
        "up_to_date": report.up_to_date,
        "files_read": report.files_read,
        "documents": report.documents,
        "chunks": report.chunks,
        "embedded": report.embedded,
        "reused": report.reused,
        "index_type": report.index_type,
        "seconds": round(report.seconds, 2),
        "skipped": [{"source": s.source, "reason": s.reason} for s in report.skipped],
    }


def _print_report(report) -> None:
    if report.up_to_date:
        console.print(
            f"Index is up to date ({report.chunks} chunks, {report.index_type}): {report.path}"
        )
        return
    console.print(
        f"Indexed {report.files_read} files ({report.documents} documents) into "
        f"{report.chunks} chunks in {report.seconds:.1f}s: {report.embedded} embedded, "
        f"{report.reused} reused; FAISS {report.index_type} + BM25\n  {report.path}"
    )
    if report.skipped:
        table = Table("skipped file", "reason", title=f"Skipped {len(report.skipped)} files")
        for skipped in report.skipped:
            table.add_row(escape(skipped.source), escape(skipped.reason))
        console.print(table)


@app.command()
def search(
    domain: DomainArg,
    query: Annotated[str, typer.Argument(help="What to look for.", show_default=False)],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Number of results.")] = 5,
    mode: Annotated[
        SearchMode, typer.Option(help="hybrid (dense + BM25 fused by rank), dense or bm25.")
    ] = SearchMode.hybrid,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Search the domain's index and show the best chunks with source, headings and scores."""
    from domainkit.retrieval import open_retriever

    hits = open_retriever(load_domain(domain, build_dir)).search(query, k=k, mode=mode.value)
    if json_output:
        print_json({"query": query, "mode": mode.value, "hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        console.print("No matching chunks.")
    for hit in hits:
        page = f", page {hit.chunk.page}" if hit.chunk.page else ""
        bm25 = f" bm25 {hit.bm25_score:.2f}" if hit.bm25_score is not None else ""
        console.print(
            f"[bold]{hit.rank}. {escape(hit.chunk.source)}{page}[/]  "
            f"[dim]{escape(hit.chunk.breadcrumb)}[/]\n"
            f"   [cyan]score {hit.score:.4f}  cosine {hit.dense_score:.3f}{bm25}  "
            f"id {hit.chunk.id}[/]"
        )
        snippet = " ".join(hit.chunk.text.split())
        shown = f"   {snippet[:400]}{'…' if len(snippet) > 400 else ''}\n"
        console.print(shown, markup=False, highlight=False)
