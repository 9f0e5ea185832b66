"""``domainkit build``: every stage from ingest to bundle, each cached.

Each stage has a fingerprint: the fingerprint of what it reads (the previous stage's
output, documents, eval.yaml), the settings it uses, and the code that runs it. A stage
whose fingerprint matches its last successful run, and whose outputs are still there, is
skipped; a changed document therefore re-runs the index (re-embedding only the changed
chunks), synth (where unchanged chunks' teacher calls come from the call cache), train,
eval and bundle. ``BUILD/build.json`` records each stage's fingerprint, time and summary,
and is written after every stage, so an interrupted build resumes at the stage that broke.

What each stage is lives in ``domainkit.stages`` (one ``Stage`` each: the code and inputs
its fingerprint covers, how to tell its outputs are there, how to run and estimate it);
this module plans a build from that table and runs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.stages import BY_NAME, SECONDS_PER, STAGES, Limits, fingerprints, load_state
from domainkit.stages import counts as stage_counts
from domainkit.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    name: str
    action: str  # run, cached, skip
    reason: str
    fingerprint: str
    size: str = ""
    estimate_s: float = 0.0
    # Where the estimate comes from: "defaults", or "last run" (this domain's last run of
    # the stage on this machine, scaled by the size of the work).
    basis: str = "defaults"
    default_s: float = 0.0  # the estimate before that correction


@dataclass
class BuildReport:
    stages: list[dict] = field(default_factory=list)
    headline: str | None = None
    seconds: float = 0.0
    build_dir: Path | None = None


def plan(
    domain: Domain,
    *,
    start: str | None = None,
    until: str | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    retrain: bool = False,
) -> list[StagePlan]:
    """What a build would do: each stage to run, reuse or skip, and why. ``retrain`` runs
    train and what follows it, as ``--from train`` does."""
    for name, value in (("--from", start), ("--until", until)):
        if value is not None and value not in STAGES:
            raise DomainkitError(f"{name} {value!r}: stages are {', '.join(STAGES)}")
    if retrain:
        if start is not None and STAGES.index(start) > STAGES.index("train"):
            raise DomainkitError(f"--retrain with --from {start}: train comes before {start}")
        forced, start = ("--retrain", "train") if start is None else (f"--from {start}", start)
    else:
        forced = f"--from {start}"
    first = STAGES.index(start) if start else 0
    last = STAGES.index(until) if until else len(STAGES) - 1
    if first > last:
        raise DomainkitError(f"--from {start} comes after --until {until}")
    limits = Limits.of(limit, eval_limit)
    prints = fingerprints(domain, limits)
    state = load_state(domain)["stages"]
    counts = stage_counts(domain, limits)
    plans, upstream_runs = [], False
    for i, stage in enumerate(STAGES):
        previous = state.get(stage, {})
        if i > last:
            action, reason = "skip", f"after --until {until}"
        elif i < first:
            action, reason = "cached", f"before --from {start}"
        elif start:
            action, reason = "run", forced
        elif not previous:
            action, reason = "run", "never built"
        elif previous.get("fingerprint") != prints[stage]:
            action = "run"
            reason = "an earlier stage changed" if upstream_runs else "inputs or settings changed"
        elif not BY_NAME[stage].outputs_ready(domain.layout):
            action, reason = "run", "outputs missing"
        else:
            action, reason = "cached", "unchanged"
        upstream_runs |= action == "run"
        size, estimate = BY_NAME[stage].estimate(domain, counts)
        scaled, basis = _from_last_run(estimate, previous)
        plans.append(StagePlan(stage, action, reason, prints[stage], size, scaled, basis, estimate))
    return plans


# A stage's last run corrects its default estimate by at most this factor either way.
MAX_CORRECTION = 8.0
# The default costs a recorded estimate was made with: other defaults, other estimates.
RATES = hashlib.sha256(json.dumps(SECONDS_PER, sort_keys=True).encode()).hexdigest()[:12]


def _from_last_run(estimate: float, previous: dict) -> tuple[float, str]:
    """``estimate`` corrected by how the stage's last run compared with its own estimate:
    the machine's speed and the domain's quirks (e.g. a teacher whose output is mostly
    rejected) carry over from one build to the next; the size of the work does not."""
    seconds, estimated = previous.get("seconds", 0.0), previous.get("estimate_s", 0.0)
    if seconds < 5 or estimated <= 0 or previous.get("estimate_rates") != RATES:
        return estimate, "defaults"
    factor = min(max(seconds / estimated, 1 / MAX_CORRECTION), MAX_CORRECTION)
    return round(estimate * factor, 1), "last run"


# -- running ------------------------------------------------------------------------------


def run_build(
    domain: Domain,
    *,
    start: str | None = None,
    until: str | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    progress: bool = True,
    on_stage: Callable[[StagePlan], None] | None = None,
    retrain: bool = False,
) -> BuildReport:
    """Run the stages the plan says to run, recording each as it finishes.

    ``limit`` makes a small first run (about that many synth samples, and as many eval
    questions per set unless ``eval_limit`` says otherwise). ``retrain`` (or ``--from`` at
    or before train) trains even where the last adapter still fits the data.
    """
    started = time.perf_counter()
    plans = plan(
        domain, start=start, until=until, limit=limit, eval_limit=eval_limit, retrain=retrain
    )
    forced = start is not None and STAGES.index(start) <= STAGES.index("train")
    limits = Limits.of(limit, eval_limit, retrain or forced)
    state = load_state(domain)
    report = BuildReport(build_dir=domain.build_dir)
    for stage in plans:
        if on_stage is not None:
            on_stage(stage)
        if stage.action != "run":
            previous = state["stages"].get(stage.name, {})
            report.stages.append(
                {
                    "stage": stage.name,
                    "action": stage.action,
                    "reason": stage.reason,
                    "seconds": 0.0,
                    "summary": previous.get("summary", {}) if stage.action == "cached" else {},
                }
            )
            continue
        t0 = time.perf_counter()
        summary = BY_NAME[stage.name].run(domain, limits, progress)
        seconds = round(time.perf_counter() - t0, 1)
        state["stages"][stage.name] = {
            "fingerprint": stage.fingerprint,
            "seconds": seconds,
            # The default estimate (before correction) the next plan compares this run with.
            "estimate_s": stage.default_s,
            "estimate_rates": RATES,
            "summary": summary,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        domain.build_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(domain.layout.build_record, state)
        report.stages.append(
            {
                "stage": stage.name,
                "action": "run",
                "reason": stage.reason,
                "seconds": seconds,
                "estimate_s": stage.estimate_s,
                "summary": summary,
            }
        )
    eval_summary = state["stages"].get("eval", {}).get("summary", {})
    report.headline = eval_summary.get("headline")
    report.seconds = round(time.perf_counter() - started, 1)
    return report


__all__ = ["STAGES", "BuildReport", "Limits", "StagePlan", "fingerprints", "plan", "run_build"]
