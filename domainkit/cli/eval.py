"""``domainkit eval``, and the eval tables ``build`` prints too."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt, LimitOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


def print_eval_tables(report: dict) -> None:
    from domainkit.eval.report import table

    for set_name, conditions in report["conditions"].items():
        rows = table(conditions)
        first = next(iter(conditions.values()))
        t = Table(
            title=f"{set_name}: {first['answerable']} answerable, "
            f"{first['unanswerable']} unanswerable",
            title_justify="left",
        )
        for i, header in enumerate(rows[0]):
            t.add_column(header, justify="left" if i == 0 else "right")
        for row in rows[1:]:
            t.add_row(*row)
        console.print(t)
    retrieval = report["retrieval"]
    if retrieval.get("questions"):
        console.print(
            "retrieval (source document): "
            + ", ".join(f"{k} {v}" for k, v in retrieval.items() if k != "questions")
            + f" over {retrieval['questions']} questions"
        )
    if report["general"]:
        console.print(
            "general knowledge, closed-book: "
            + ", ".join(f"{k} {v:.0%}" for k, v in report["general"].items())
        )
    calibration = report["calibration"]
    if calibration.get("gate"):
        gate = calibration["gate"]
        console.print(
            f"gate calibrated on {calibration['validation_questions']} validation questions "
            f"and {calibration.get('gold_absent_twins', 0)} gold-absent twins "
            f"({calibration['answerable']} answerable, {calibration['unanswerable']} "
            f"unanswerable): answers when P(answerable) >= "
            f"{gate['threshold']:.2f}; there {calibration['answered']:.0%} of answerable "
            f"answered, {calibration['refused']:.0%} of unanswerable refused; reader weight "
            f"{calibration.get('reader_weight')}"
        )
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"[bold]{report['headline']}[/]", soft_wrap=True)


@app.command(name="eval")
def evaluate(
    domain: DomainArg,
    limit: LimitOpt = None,
    last: Annotated[
        bool, typer.Option("--last", help="Print the last report again instead of evaluating.")
    ] = False,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also run the comparison: the base model closed-book and as naive RAG, the "
            "tuned model closed-book, the forgetting check (most of an eval's time; otherwise "
            "the base model's rows are reused from the last run that had them, when still valid).",
        ),
    ] = False,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Measure the runtime policy, the evidence alone and the tuned model's reading of it on
    eval.yaml and the validation split; with --compare, what tuning and retrieval each bring
    (base vs tuned, closed-book vs naive RAG).

    Calibrates the runtime thresholds on the validation split (written to
    BUILD/runtime/calibration.json) and writes BUILD/eval/report.{json,md}, answers.jsonl
    and accuracy.png.
    """
    from domainkit.errors import DomainkitError
    from domainkit.eval.report import report_dict
    from domainkit.eval.runner import load_report, run_eval

    loaded = load_domain(domain, build_dir)
    if last:
        report = load_report(loaded)
        if report is None:
            raise DomainkitError(f"no evaluation report in {loaded.build_dir}; run eval first")
    else:
        with build_lock(loaded.build_dir, "eval"):
            report = report_dict(
                run_eval(loaded, limit=limit, progress=not json_output, compare=compare)
            )
    if json_output:
        print_json(report)
        return
    print_eval_tables(report)
    console.print(f"report: {report['path']}/report.md")
