"""``domainkit synth``: plan, generate, filter, split and save the instruction dataset."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from domainkit.config.evalset import load_eval_set
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.ingest import Chunk
from domainkit.retrieval import MemoEmbedder, Retriever, load_index, make_embedder
from domainkit.synth import dataset
from domainkit.synth.context import SynthContext
from domainkit.synth.facts import facts_of
from domainkit.synth.filters import decontaminate, drop_near_duplicates, scrub_samples
from domainkit.synth.generators import GENERATORS
from domainkit.synth.prompts import Prompts
from domainkit.synth.sample import Sample
from domainkit.synth.teachers import CachedTeacher, CallCache, Teacher, make_teacher

log = logging.getLogger(__name__)

# Below this many training samples a fine-tune learns little; say so plainly.
MIN_USEFUL_TRAIN = 50


@dataclass
class Plan:
    """A generator's goal and its seed chunks, in the order they will be used."""

    generator: str
    target: int
    pool: list[Chunk]


@dataclass
class SynthReport:
    path: Path
    target: int
    kept: Counter
    rejected: Counter
    splits: dict[str, int]
    pii_masked: int
    user_samples: int
    calls_made: int
    calls_cached: int
    seconds: float
    # Per generator: seconds, teacher calls made (not cached) and samples kept before the
    # final filters: where synth's minutes go.
    generators: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def plan(ctx: SynthContext, target: int) -> list[Plan]:
    """How many samples each generator aims for, and its shuffled pool of seed chunks."""
    mix = {name: share for name, share in ctx.synth.mix.items() if share > 0}
    for name in mix:  # an unknown name (a typo, a plug-in not installed) fails before any call
        GENERATORS.get(name)
    eligible = [c for c in ctx.chunks if facts_of(c, 1)]
    if not eligible:
        raise DomainkitError("no chunk has a full sentence to generate questions from")
    return [
        Plan(
            name,
            max(1, round(target * share / sum(mix.values()))),
            ctx.rng(f"seeds:{name}").sample(eligible, len(eligible)),
        )
        for name, share in mix.items()
    ]


# A generator runs in rounds until it reaches its target, each round sized by the yield seen
# so far: a small teacher's output fails the checks often, a large one's rarely.
MAX_ROUNDS = 4
MIN_YIELD = 0.15


def run_generator(ctx: SynthContext, step: Plan, bar: tqdm, kept_before: int = 0) -> list[Sample]:
    spec = GENERATORS.get(step.generator)
    per_seed = spec.samples_per_seed(ctx.synth)
    samples: list[Sample] = []
    used, yield_rate = 0, 1.0
    for _ in range(MAX_ROUNDS):
        missing = step.target - len(samples)
        if missing <= 0 or used >= len(step.pool):
            break
        n_seeds = min(len(step.pool) - used, math.ceil(missing / (per_seed * yield_rate)))
        seeds = step.pool[used : used + n_seeds]
        used += n_seeds
        planned, done_before = math.ceil(n_seeds * spec.calls_per_seed(ctx.synth)), bar.n
        bar.total += planned
        new = spec.run(ctx, seeds, missing)
        # Calls are planned for the best case; drop those that rejections made unnecessary.
        bar.total -= max(0, planned - (bar.n - done_before))
        samples += new
        yield_rate = max(MIN_YIELD, len(new) / (n_seeds * per_seed))
        bar.set_postfix(
            kept=kept_before + len(samples), rejected=len(ctx.log.rejections), refresh=False
        )
    return samples


def run_synth(
    domain: Domain,
    *,
    limit: int | None = None,
    progress: bool = True,
    teacher: Teacher | None = None,
) -> SynthReport:
    """Generate, check and save the domain's instruction dataset.

    Args:
        domain: A domain with an index (``domainkit index``).
        limit: Aim for about this many samples (default: ``samples_per_chunk`` per chunk).
        progress: Show a progress bar of teacher calls with kept and rejected counts.
        teacher: Use this teacher instead of the one the settings name (tests, benchmarks).
    """
    started = time.perf_counter()
    settings = domain.config.synth
    index = load_index(domain.index_dir)
    embedder = MemoEmbedder(make_embedder(domain.config.retrieval))
    retriever = Retriever(index, embedder, domain.config.retrieval)
    cache = CallCache(domain.layout.synth_calls)
    cached = CachedTeacher(teacher or make_teacher(settings.teacher), cache)
    ctx = SynthContext(domain.config, cached, retriever, Prompts(settings.prompts))
    target = limit or max(1, round(len(index.chunks) * settings.samples_per_chunk))
    plans = plan(ctx, target)

    bar = tqdm(total=0, desc="Teacher calls", unit="call", disable=not progress)
    cached.on_progress = bar.update
    samples: list[Sample] = []
    timing: dict[str, dict] = {}
    try:
        for step in plans:
            bar.set_description(f"Teacher calls ({step.generator})")
            t0, calls_before = time.perf_counter(), cached.calls_made
            new = run_generator(ctx, step, bar, kept_before=len(samples))
            timing[step.generator] = {
                "seconds": round(time.perf_counter() - t0, 1),
                "teacher_calls": cached.calls_made - calls_before,
                "kept": len(new),
            }
            samples += new
        bar.total = bar.n
    finally:
        bar.close()
        cache.close()

    samples = _final_filters(ctx, domain, samples)
    samples = samples[:limit] if limit else samples
    user = dataset.read_user_data(domain.root / settings.user_data, ctx.system_prompt)
    splits = dataset.split_by_chunk(samples + user, ctx.is_validation)
    report = SynthReport(
        path=domain.layout.synth,
        target=target,
        kept=Counter(s.generator for s in samples + user),
        rejected=ctx.log.counts,
        splits={name: len(rows) for name, rows in splits.items()},
        pii_masked=ctx.log.pii_masked,
        user_samples=len(user),
        calls_made=cached.calls_made,
        calls_cached=cached.calls_cached,
        seconds=time.perf_counter() - started,
        generators=timing,
    )
    _check_enough(report)
    report.path = dataset.save(
        domain.layout.synth, splits, [r.to_row() for r in ctx.log.rejections], summary(report)
    )
    return report


def _final_filters(ctx: SynthContext, domain: Domain, samples: list[Sample]) -> list[Sample]:
    filters = ctx.synth.filters
    samples = drop_near_duplicates(samples, ctx.embedder, filters.duplicate_similarity, ctx.log)
    eval_questions = [q.question for q in load_eval_set(domain.eval_path).questions]
    samples = decontaminate(samples, eval_questions, ctx.embedder, filters.eval_similarity, ctx.log)
    if filters.scrub_pii:
        scrub_samples(samples, ctx.log)
    return samples


def _check_enough(report: SynthReport) -> None:
    rejected = ", ".join(f"{name} {n}" for name, n in report.rejected.most_common()) or "none"
    counts = f"kept {sum(report.kept.values())} of target {report.target}; rejected: {rejected}"
    if not report.splits["train"]:
        raise DomainkitError(
            f"no training samples survived the filters ({counts}). The documents may have too "
            "few complete sentences, or a stronger teacher (synth.teacher) may help"
        )
    if report.splits["train"] < MIN_USEFUL_TRAIN:
        report.warnings.append(
            f"only {report.splits['train']} training samples ({counts}); a fine-tune learns "
            "little from so few. A stronger teacher or a larger --limit gives more."
        )


def summary(report: SynthReport) -> dict:
    return {
        "target": report.target,
        "kept": dict(report.kept),
        "rejected": dict(report.rejected),
        "splits": report.splits,
        "pii_masked": report.pii_masked,
        "user_samples": report.user_samples,
        "teacher_calls": {"made": report.calls_made, "cached": report.calls_cached},
        "seconds": round(report.seconds, 1),
        "warnings": report.warnings,
    }
