"""``domainkit build``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt, LimitOpt
from domainkit.config import load_domain
from domainkit.utils.lock import build_lock


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f}s"


@app.command()
def build(
    domain: DomainArg,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Re-run from this stage on (ingest, index, synth, train, reviews, eval, bundle).",
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
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Train even if the last adapter still fits the data (by default a build keeps "
            "it while at most train.retrain_when_changed of the training samples changed).",
        ),
    ] = False,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Build the assistant: ingest -> index -> synth -> train -> reviews -> eval -> bundle.

    Stages whose inputs, settings and code have not changed since their last run are
    reused, so a second build with nothing changed takes seconds. Outputs go to the
    domain's build folder (.domainkit/ by default); the bundle is in BUILD/bundle/.
    """
    from domainkit.builder import plan, run_build
    from domainkit.train.memory import plan_for

    loaded = load_domain(domain, build_dir)
    if dry_run:
        plans = plan(
            loaded, start=start, until=until, limit=limit, eval_limit=eval_limit, retrain=retrain
        )
        trains = any(p.name == "train" and p.action == "run" for p in plans)
        _show_plan(loaded, plans, plan_for(loaded.config.train) if trains else None, json_output)
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
            retrain=retrain,
        )
    _show_report(loaded, report, json_output)


def _show_plan(loaded, plans, memory, json_output: bool) -> None:
    """``build --dry-run``: each stage's action, reason, size and time, and the training
    memory plan when training would run."""
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
    learnt = [p.name for p in plans if p.action == "run" and p.basis == "last run"]
    basis = (
        f"{', '.join(learnt)} from this domain's last run on this machine, the rest from "
        "defaults for a 2-core CPU and the embedded models"
        if learnt
        else "defaults for a 2-core CPU and the embedded models"
    )
    console.print(f"estimated time: {_duration(total)} ({basis})")
    if memory is not None:
        console.print(memory.table(), markup=False)
        if not memory.fits:
            console.print("the training stage would not fit: see `domainkit train`'s error")


def _show_report(loaded, report, json_output: bool) -> None:
    """What a build did, stage by stage, then the eval tables when eval ran."""
    if json_output:
        print_json(report.__dict__)
        return
    t = Table(
        title=f"Built {loaded.config.name} in {_duration(report.seconds)}", title_justify="left"
    )
    for column in ("stage", "", "time", "estimated", "result"):
        t.add_column(column)
    for s in report.stages:
        summary = s["summary"]
        shown = ", ".join(
            f"{k} {v}" for k, v in summary.items() if k not in ("path", "headline", "calibration")
        )
        ran = s["action"] == "run"
        t.add_row(
            s["stage"],
            s["action"],
            _duration(s["seconds"]) if s["seconds"] else "",
            _duration(s.get("estimate_s", 0.0)) if ran else "",
            shown,
        )
    console.print(t)
    console.print(f"outputs: {report.build_dir}")
    from domainkit.cli.eval import print_eval_tables
    from domainkit.eval.runner import load_report

    evaluation = load_report(loaded)
    if evaluation is not None and any(
        s["stage"] == "eval" and s["action"] != "skip" for s in report.stages
    ):
        print_eval_tables(evaluation)
