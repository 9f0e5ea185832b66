"""The build's stages: what each one reads, runs and leaves behind.

A ``Stage`` names the code and inputs its fingerprint covers (with the previous stage's
fingerprint, so a change anywhere upstream re-runs everything after it), how to tell its
outputs are on disk, how to run it, and how to estimate its size for ``--dry-run``.
``PIPELINE`` lists them in order; ``domainkit.builder`` plans and runs a build from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from domainkit import __version__
from domainkit.config.layout import BundleLayout, Layout, adapter_config, card_of
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.utils.atomic import atomic_write_json, replace_dir
from domainkit.utils.hashing import code_hash

log = logging.getLogger(__name__)

# Costs on a quiet 2-core CPU with the embedded models, for --dry-run's first estimate (full
# customer-support builds: 2026-12-06, 732 samples planned, synth 194 s, 724 answers planned,
# eval 162 s; training per sample from the four shipped corpora's builds of 2026-12-07);
# later estimates learn from the domain's own last run (builder._from_last_run).
SECONDS_PER = {"chunk": 0.015, "sample": 0.27, "train_sample": 1.45, "answer": 0.22}
TRAIN_SHARE = 0.6  # of the samples synth is asked for, those kept in the training split
MEASURED_CHUNK_TOKENS = 200  # customer-support's chunk size, the train_sample cost's
BACKWARD = 1.9  # a training step's backward pass through every layer, in forward passes


@dataclass(frozen=True)
class Limits:
    """A small run: about ``samples`` synth samples, at most ``questions`` per eval set;
    ``retrain``: train even where the last adapter still fits the data."""

    samples: int | None = None
    questions: int | None = None
    retrain: bool = False

    @classmethod
    def of(cls, limit: int | None, eval_limit: int | None = None, retrain: bool = False) -> Limits:
        return cls(limit, eval_limit if eval_limit is not None else limit, retrain)


def _hash(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def load_state(domain: Domain) -> dict:
    """``build.json``: each stage's last fingerprint, time and summary."""
    path = domain.layout.build_record
    if not path.is_file():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is unreadable; every stage will run", path)
        return {"stages": {}}


def fingerprints(domain: Domain, limits: Limits) -> dict[str, str]:
    """Every stage's fingerprint: the previous stage's, then its own inputs and code."""
    prints: dict[str, str] = {}
    previous: tuple[str, ...] = ()
    for stage in PIPELINE:
        prints[stage.name] = _hash(*previous, *stage.inputs(domain, limits), code_hash(*stage.code))
        previous = (prints[stage.name],)
    return prints


@dataclass(frozen=True)
class Counts:
    """Rough sizes of a build, from the documents and settings, for the stages' estimates."""

    files: int
    mb: float
    chunks: int
    samples: int
    epochs: float
    answers: int


def counts(domain: Domain, limits: Limits) -> Counts:
    from domainkit.config.evalset import load_eval_set
    from domainkit.ingest.corpus import list_files

    files = list_files(domain.docs_dir, domain.config.ingest) if domain.docs_dir.is_dir() else []
    chars = sum(p.stat().st_size for p in files)
    chunk_chars = domain.config.chunking.chunk_size * 4
    chunks = max(1, chars // max(1, chunk_chars - domain.config.chunking.chunk_overlap * 4))
    samples = limits.samples or round(chunks * domain.config.synth.samples_per_chunk)
    train = domain.config.train
    trained = samples * TRAIN_SHARE
    epochs = (
        train.max_steps * train.batch_size * train.grad_accum / max(1, trained)
        if (train.max_steps)
        else train.epochs_for(round(trained))
    )
    questions = len(load_eval_set(domain.eval_path).questions)
    if limits.questions:
        questions = min(questions, limits.questions)
    answers = (questions + max(1, samples // 10)) * 5 + 24
    return Counts(len(files), chars / 1e6, chunks, samples, epochs, answers)


def _ingest(domain: Domain, limits: Limits, progress) -> dict:
    """Read the documents once (loaders, normalization, the untrusted-file checks) and keep
    them for the index stage."""
    from domainkit.ingest import load_documents

    if not domain.docs_dir.is_dir():
        raise DomainkitError(f"{domain.docs_dir}: no documents folder")
    result = load_documents(domain.docs_dir, domain.config.ingest, progress=progress)
    result.save(domain.layout.ingested)
    return {
        "files": result.files_read,
        "documents": len(result.documents),
        "skipped_files": len(result.skipped),
    }


def _index(domain: Domain, limits: Limits, progress) -> dict:
    from domainkit.ingest import IngestResult
    from domainkit.retrieval import build_index
    from domainkit.retrieval.embedders import make_embedder

    ingested = IngestResult.load(domain.layout.ingested)
    embedder = make_embedder(domain.config.retrieval)
    r = build_index(domain, embedder, progress=progress, ingested=ingested)
    return {
        "documents": r.documents,
        "chunks": r.chunks,
        "embedded": r.embedded,
        "reused": r.reused,
        "skipped_files": len(r.skipped),
        "path": str(r.path),
    }


def _synth(domain: Domain, limits: Limits, progress) -> dict:
    from domainkit.synth import run_synth

    r = run_synth(domain, limit=limits.samples, progress=progress)
    return {
        "kept": sum(r.kept.values()),
        "rejected": sum(r.rejected.values()),
        "splits": r.splits,
        "teacher_calls": r.calls_made,
        "cached_calls": r.calls_cached,
        # Where synth's time went: generator -> "seconds s, calls, kept".
        "time_by_generator": {
            name: f"{t['seconds']:.0f}s {t['teacher_calls']} calls {t['kept']} kept"
            for name, t in r.generators.items()
        },
        "path": str(r.path),
    }


def _train(domain: Domain, limits: Limits, progress) -> dict:
    """Train, or continue a killed training of the same inputs from its last checkpoint, or
    keep the last adapter when the training data barely changed (``_kept_adapter``)."""
    from domainkit.synth.dataset import load_samples
    from domainkit.train import run_train

    layout = domain.layout
    trained_on = sorted({_taught(s) for s in load_samples(layout.synth)["train"]})
    run = {
        "fingerprint": fingerprints(domain, limits)["train"],
        "basis": _train_basis(domain),
        "trained_on": trained_on,
    }
    marker = layout.train_run
    last = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    finished = layout.phase_done("sft").is_file()
    # A finished run is re-run from scratch (--from train).
    resume = last.get("fingerprint") == run["fingerprint"] and not finished
    if not resume and not limits.retrain and finished:
        kept = _kept_adapter(domain, last, run)
        if kept is not None:
            return kept
    if not resume:  # before training: a kill from here on leaves checkpoints of this run
        atomic_write_json(marker, run)
    r = run_train(domain, resume=resume)
    return {
        "method": r.method,
        "steps": r.steps,
        "best_val_loss": r.best_val_loss,
        "tokens_per_s": round(r.tokens_per_s, 1),
        "adapter": str(r.adapter),
    }


def _taught(sample) -> str:
    """What a training sample teaches: its kind, passage and question. A sample whose
    distractor passages changed with an edit elsewhere teaches the same thing."""
    return _hash(sample.generator, sample.chunk_id, sample.question)


def _train_basis(domain: Domain) -> str:
    """What an adapter depends on besides its data: the student, the training settings and
    the training code."""
    settings = domain.config.train.model_dump(mode="json", exclude={"retrain_when_changed"})
    return _hash(settings, code_hash("train"))


def _kept_adapter(domain: Domain, last: dict, run: dict) -> dict | None:
    """The last adapter's summary when it was trained with the same settings and code on
    nearly the same samples (at most ``train.retrain_when_changed`` of what they teach new
    or gone, counted against what it was trained on, so small edits add up to a retrain);
    else None."""
    layout = domain.layout
    if last.get("basis") != run["basis"] or not adapter_config(layout.adapter).is_file():
        return None
    before, now = set(last.get("trained_on", [])), set(run["trained_on"])
    if not before or not now:
        return None
    changed, limit = len(before ^ now) / len(before | now), domain.config.train.retrain_when_changed
    if limit == 0 or changed > limit:
        return None
    log.info("keeping the adapter: %.1f%% of the training samples changed", 100 * changed)
    return {
        "method": domain.config.train.method,
        "steps": 0,
        "adapter": str(layout.adapter),
        "kept": (
            f"{len(now - before)} new and {len(before - now)} gone of {len(now)} samples' "
            "questions "
            f"({changed:.1%}, retrains above {limit:.0%}; "
            "--retrain to train now)"
        ),
    }


def _reviews(domain: Domain, limits: Limits, progress) -> dict:
    """The reviewed questions the runtime answers repeats of (``feedback.repeats``), and the
    same as training samples (``feedback.samples``)."""
    from domainkit.feedback.repeats import build_repeats
    from domainkit.retrieval import open_retriever

    return build_repeats(domain, open_retriever(domain)).to_dict()


def _reviews_inputs(domain: Domain, limits: Limits) -> tuple:
    path = domain.validation_path
    config = domain.config
    # The evidence, system prompt and refusal shape the reviewed samples.
    samples = (config.evidence, config.render_system_prompt(), config.refusal)
    return (_hash(path.read_bytes().hex() if path.is_file() else ""), *samples)


def _eval(domain: Domain, limits: Limits, progress) -> dict:
    from domainkit.eval import run_eval

    r = run_eval(domain, limit=limits.questions, progress=progress, keep_replies=True)
    return {
        "headline": r.headline,
        "report": str(domain.layout.eval_report),
        "calibration": {k: v for k, v in r.calibration.items() if k != "curve"},
    }


def _bundle(domain: Domain, limits: Limits, progress) -> dict:
    """What to ship, in one folder: the adapter, the live index, the calibrated runtime
    settings, the resolved configuration and the evaluation report."""
    import yaml

    from domainkit.retrieval.store import current_version
    from domainkit.train import cards

    layout, target = domain.layout, domain.layout.bundle_files

    def write(tmp: Path) -> None:
        files = BundleLayout(tmp)
        shutil.copytree(layout.adapter, files.adapter)
        index = current_version(domain.index_dir)
        if index is None:
            raise DomainkitError(f"{domain.index_dir}: no index to bundle; run the index stage")
        shutil.copytree(index, files.index)
        for source, copy in (
            (layout.calibration, files.calibration),
            (layout.eval_report, files.report),
        ):
            if source.is_file():
                shutil.copyfile(source, copy)
        config = domain.config.model_dump(mode="json")
        files.resolved_config.write_text(yaml.safe_dump(config, sort_keys=False))
        summary = cards.read_train_summary(layout)
        evaluation = cards.read_eval_report(layout)
        for kind, folder, written in (
            ("bundle", target.root, files.root),
            ("adapter", target.adapter, files.adapter),
        ):
            card = cards.model_card(domain, kind, summary, evaluation, path=str(folder))
            card_of(written).write_text(card, encoding="utf-8")
        atomic_write_json(
            files.manifest,
            {
                "name": domain.config.name,
                "domainkit": __version__,
                "student_model": domain.config.train.student_model,
                "embedder": domain.config.retrieval.embedder,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )

    replace_dir(target.root, write)
    return {"path": str(target.root)}


# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of the build, and all the build needs to know of it.

    Attributes:
        name: As ``--from`` and ``--until`` name it.
        code: The domainkit packages or modules that run it: its fingerprint hashes their
            import closure (``utils.hashing.code_hash``), so an edit to any module they use
            re-runs it.
        inputs: What it reads besides the previous stage's output (documents, question
            files, settings, limits); part of its fingerprint.
        outputs_ready: Whether its outputs are on disk: a cached stage needs them.
        run: Runs it and returns the summary kept in ``build.json``.
        estimate: Its size and rough time for ``--dry-run``.
    """

    name: str
    code: tuple[str, ...]
    inputs: Callable[[Domain, Limits], tuple]
    outputs_ready: Callable[[Layout], bool]
    run: Callable[[Domain, Limits, bool], dict]
    estimate: Callable[[Domain, Counts], tuple[str, float]]


def _source_files(domain: Domain, limits: Limits) -> tuple:
    from domainkit.retrieval.store import source_hashes

    return (source_hashes(domain), domain.config.ingest)


def _synth_inputs(domain: Domain, limits: Limits) -> tuple:
    config = domain.config
    persona = (config.render_system_prompt(), config.refusal, config.persona)
    # prompting.py, the format synth trains on and the runtime sends, is in the import
    # closure of synth, train and eval alike.
    return (config.synth, config.evidence, config.runtime.answer_words, persona, limits.samples)


def _eval_inputs(domain: Domain, limits: Limits) -> tuple:
    config = domain.config
    questions = [
        path.read_bytes().hex() if path.is_file() else ""
        for path in (domain.eval_path, domain.validation_path)
    ]
    return (_hash(questions), config.runtime, config.evidence, config.eval, limits.questions)


def _index_ready(layout: Layout) -> bool:
    from domainkit.retrieval.store import current_version

    return current_version(layout.index) is not None


def _train_estimate(domain: Domain, counts: Counts) -> tuple[str, float]:
    # A sample's length grows with its passages', so its cost with the chunk size.
    length = domain.config.chunking.chunk_size / MEASURED_CHUNK_TOKENS
    train = domain.config.train
    # A step is a forward pass through every layer and a backward pass down to the lowest
    # adapted one, which costs BACKWARD times a forward pass over all of them (measured).
    share = _adapted_share(train)
    cost = (1 + BACKWARD * share) / (1 + BACKWARD)
    trained = counts.samples * TRAIN_SHARE * counts.epochs
    seconds = trained * SECONDS_PER["train_sample"] * length * cost + 20
    return (f"{train.method}, {counts.epochs:.2g} epochs", seconds)


def _adapted_share(train) -> float:
    """The share of the student's layers that get adapters."""
    if train.lora_layers is None or train.method == "full":
        return 1.0
    if isinstance(train.lora_layers, float):
        return train.lora_layers
    try:
        from transformers import AutoConfig

        from domainkit.models import resolve_causal_lm

        config = AutoConfig.from_pretrained(resolve_causal_lm(train.student_model))
        layers = config.get_text_config().num_hidden_layers
        return train.adapted_layers(layers) / max(1, layers)
    except (OSError, ValueError, AttributeError):
        return 1.0


PIPELINE = (
    Stage(
        "ingest",
        ("ingest",),
        _source_files,
        lambda layout: layout.ingested.is_file(),
        _ingest,
        lambda domain, c: (f"{c.files} files, {c.mb:.1f} MB", 1.0),
    ),
    Stage(
        "index",
        ("retrieval",),
        lambda domain, limits: (domain.config.chunking, domain.config.retrieval),
        _index_ready,
        _index,
        lambda domain, c: (f"about {c.chunks} chunks", c.chunks * SECONDS_PER["chunk"] + 10),
    ),
    Stage(
        "synth",
        ("synth",),
        _synth_inputs,
        lambda layout: layout.synth_pointer.is_file(),
        _synth,
        lambda domain, c: (f"about {c.samples} samples", c.samples * SECONDS_PER["sample"]),
    ),
    Stage(
        "train",
        ("train",),
        lambda domain, limits: (domain.config.train,),
        lambda layout: adapter_config(layout.adapter).is_file(),
        _train,
        _train_estimate,
    ),
    Stage(
        "reviews",
        ("feedback.repeats",),
        _reviews_inputs,
        lambda layout: layout.reviewed.is_file(),
        _reviews,
        lambda domain, c: ("reviewed questions", 5.0),
    ),
    Stage(
        "eval",
        ("eval", "answer"),
        _eval_inputs,
        lambda layout: layout.eval_report_json.is_file(),
        _eval,
        lambda domain, c: (f"about {c.answers} answers", c.answers * SECONDS_PER["answer"]),
    ),
    Stage(
        "bundle",
        ("stages",),
        lambda domain, limits: (),
        lambda layout: layout.bundle_files.manifest.is_file(),
        _bundle,
        lambda domain, c: ("copies", 2.0),
    ),
)
BY_NAME = {stage.name: stage for stage in PIPELINE}
STAGES = tuple(BY_NAME)
