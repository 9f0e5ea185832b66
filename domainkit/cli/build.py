"""``domainkit build`` and ``domainkit eval``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock

LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=1,
        help="Small first run: about N synth samples and at most N questions per eval set.",
    ),
]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f}s"


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
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Measure what tuning and retrieval each bring: base vs tuned, closed-book vs retrieval,
    and the runtime policy, on eval.yaml and the validation split.

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
            report = report_dict(run_eval(loaded, limit=limit, progress=not json_output))
    if json_output:
        print_json(report)
        return
    print_eval_tables(report)
    console.print(f"report: {report['path']}/report.md")


@app.command()
def build(
    domain: DomainArg,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="Re-run from this stage on (ingest, index, synth, train, eval, bundle)."
        ),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Stop after this stage.")] = None,
    limit: LimitOpt = None,
    eval_limit: Annotated[
        int | None,
        typer.Option(
            "--eval-limit",
            min=1,
            help="At most N questions per eval set (default: --limit, or all).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show the plan, sizes and a time estimate; run nothing."),
    ] = False,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Build the assistant: ingest -> index -> synth -> train -> eval -> bundle.

    Stages whose inputs, settings and code have not changed since their last run are
    reused, so a second build with nothing changed takes seconds. Outputs go to the
    domain's build folder (.domainkit/ by default); the bundle is in BUILD/bundle/.
    """
    from domainkit.build import plan, run_build
    from domainkit.train.memory import plan_for

    loaded = load_domain(domain, build_dir)
    if dry_run:
        plans = plan(loaded, start=start, until=until, limit=limit, eval_limit=eval_limit)
        trains = any(p.name == "train" and p.action == "run" for p in plans)
        memory = plan_for(loaded.config.train) if trains else None
        if json_output:
            print_json(
                {
                    "stages": [p.__dict__ for p in plans],
                    "memory": None
                    if memory is None
                    else {
                        **memory.parts,
                        "total": memory.total,
                        "fits": memory.fits,
                        "checkpointing": memory.checkpointing,
                        "optimizer": memory.optimizer,
                        "available": memory.available,
                    },
                }
            )
            return
        t = Table(title=f"Build plan for {loaded.config.name}", title_justify="left")
        for column in ("stage", "action", "why", "size", "estimate"):
            t.add_column(column)
        for p in plans:
            estimate = _duration(p.estimate_s) if p.action == "run" else ""
            t.add_row(p.name, p.action, p.reason, p.size, estimate)
        console.print(t)
        total = sum(p.estimate_s for p in plans if p.action == "run")
        console.print(f"estimated time: {_duration(total)} (2-core CPU, embedded models)")
        if memory is not None:
            console.print(memory.table(), markup=False)
            if not memory.fits:
                console.print("the training stage would not fit: see `domainkit train`'s error")
        return

    def announce(stage) -> None:
        if not json_output and stage.action == "run":
            err_console.print(f"[bold]== {stage.name}[/] ({stage.reason})")

    with build_lock(loaded.build_dir, "build"):
        report = run_build(
            loaded,
            start=start,
            until=until,
            limit=limit,
            eval_limit=eval_limit,
            progress=not json_output,
            on_stage=announce,
        )
    if json_output:
        print_json(report.__dict__)
        return
    t = Table(
        title=f"Built {loaded.config.name} in {_duration(report.seconds)}", title_justify="left"
    )
    for column in ("stage", "", "time", "result"):
        t.add_column(column)
    for s in report.stages:
        summary = s["summary"]
        shown = ", ".join(
            f"{k} {v}" for k, v in summary.items() if k not in ("path", "headline", "calibration")
        )
        t.add_row(s["stage"], s["action"], _duration(s["seconds"]) if s["seconds"] else "", shown)
    console.print(t)
    console.print(f"outputs: {report.build_dir}")
    from domainkit.eval.runner import load_report

    evaluation = load_report(loaded)
    if evaluation is not None and any(
        s["stage"] == "eval" and s["action"] != "skip" for s in report.stages
    ):
        print_eval_tables(evaluation)
