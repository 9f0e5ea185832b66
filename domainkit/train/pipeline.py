"""``domainkit train``: (continued pre-training,) SFT on the synth dataset, metrics, plot."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from domainkit.config.layout import Layout, adapter_weights
from domainkit.config.loading import Domain
from domainkit.errors import DomainkitError
from domainkit.synth import dataset
from domainkit.train.data import (
    DataStats,
    Row,
    fit_length,
    pack,
    single_rows,
    tokenize_chat,
    tokenize_text,
)
from domainkit.train.loop import Phase, TrainingRun, TrainState
from domainkit.train.memory import MemoryPlan, plan_for
from domainkit.train.memory import check as check_memory
from domainkit.train.metrics import external_loggers, plot_loss, write_jsonl
from domainkit.train.model import Student, enable_checkpointing, load_student, make_accelerator
from domainkit.utils.atomic import atomic_write_json, replace_dir

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    out_dir: Path
    adapter: Path
    method: str
    device: str
    processes: int
    steps: int
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    tokens_per_s: float
    seconds: float
    data: dict
    plot: Path | None
    phases: list[str] = field(default_factory=list)
    preference: dict | None = None


def _memory_choices(layout: Layout, memory: MemoryPlan | None, settings, resume: bool) -> dict:
    """The run's checkpointing and optimizer choices: a resumed run keeps them (its
    checkpoint's optimizer state only loads into the optimizer that wrote it), whatever
    memory is free now."""
    path = layout.memory_choices
    if resume and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    choices = {
        "checkpointing": settings.gradient_checkpointing == "on"
        if memory is None
        else memory.checkpointing,
        "optimizer": settings.optimizer if memory is None else memory.optimizer,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, choices)
    return choices


def rows_for(
    student: Student,
    conversations: list[tuple[list[dict], bool]],
    max_len: int,
    packed: bool,
    stats: DataStats,
) -> list[Row]:
    """Training rows of (messages, last turn only) conversations."""
    tokenized = [tokenize_chat(student.tokenizer, c, last_only) for c, last_only in conversations]
    items = fit_length(tokenized, max_len, stats)
    return pack(items, max_len) if packed else single_rows(items)


def _conversations(samples, system_prompt: str) -> list[tuple[list[dict], bool]]:
    """Each sample's messages (with the system prompt) and whether only its last reply is
    trained on (``meta.train_on == "last"``: earlier replies lack the evidence they had)."""
    return [
        (
            s.messages
            if s.messages[0]["role"] == "system"
            else [{"role": "system", "content": system_prompt}, *s.messages],
            s.meta.get("train_on") == "last",
        )
        for s in samples
    ]


def run_train(
    domain: Domain,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    on_plan: Callable[[MemoryPlan], None] | None = None,
) -> TrainReport:
    """Fine-tune the student on the domain's synth dataset.

    Args:
        domain: A domain with a synth dataset.
        resume: Continue from the last checkpoint of an interrupted run.
        max_steps: Override the number of optimizer steps.
        on_step: Called with the run's state after each optimizer step (``Trainer``).
        on_plan: Called with the memory plan before the first step.

    Raises:
        DomainkitError: The run cannot fit in the device's free memory (before any weight
            is loaded), or the data has nothing to train on.
    """
    started = time.perf_counter()
    settings = domain.config.train
    if max_steps is not None:
        settings = settings.model_copy(update={"max_steps": max_steps})
    check_memory(plan_for(settings))  # before loading data or weights that might not fit
    splits = dataset.load_samples(domain.layout.synth)
    if not splits["train"]:
        raise DomainkitError("the synth dataset has no training samples")
    layout = domain.layout
    if not resume:
        _forget_earlier_run(domain.layout)
    accelerator = make_accelerator(settings)
    student = load_student(settings)
    stats = DataStats()
    phases = _phases(domain, student, splits, stats)
    settings = _within_memory(student, settings, stats, layout, resume, on_plan)
    histories, state = _run_phases(
        phases, student, settings, accelerator, resume, on_step, domain.config.name, domain.layout
    )
    final, preference = layout.phase("sft").best, None
    if settings.preference.method != "none" and accelerator.num_processes == 1:
        tuned = layout.phase("preference")
        preference = _preference(student, splits["train"], settings, tuned.root, final)
        final = tuned.best if preference else final
    adapter = domain.layout.adapter
    plot_path: Path | None = domain.layout.loss_plot
    sft_history = histories.get("sft", [])
    if accelerator.is_main_process:  # one writer per file under `accelerate launch`
        plot_path = _publish(domain, final, histories)
    rates = [r["tokens_per_s"] for r in sft_history if "tokens_per_s" in r]
    report = TrainReport(
        out_dir=layout.train,
        adapter=adapter,
        method=settings.method,
        device=student.device,
        processes=accelerator.num_processes,
        steps=state.step if state else 0,
        best_val_loss=state.best_val if state else None,
        best_step=state.best_step if state else None,
        stopped_early=state.stopped_early if state else False,
        tokens_per_s=rates[-1] if rates else 0.0,
        seconds=time.perf_counter() - started,
        data=asdict(stats),
        plot=plot_path,
        phases=[p.name for p in phases] + (["preference"] if preference else []),
        preference={k: v for k, v in preference.items() if k != "history"} if preference else None,
    )
    if accelerator.is_main_process:
        atomic_write_json(domain.layout.train_summary, summary_dict(report))
    return report


def _publish(domain: Domain, final: Path, histories: dict) -> Path | None:
    """The best adapter where the runtime reads it, the SFT loss plot, and every phase's
    metrics; returns the plot's path (None when there was nothing to plot)."""
    _publish_adapter(final, domain.layout.adapter)
    plot = plot_loss(
        histories.get("sft", []), domain.layout.loss_plot, f"{domain.config.name}: SFT loss"
    )
    write_jsonl(
        [{"phase": name, **row} for name, rows in histories.items() for row in rows],
        domain.layout.train_metrics,
    )
    return plot


def _forget_earlier_run(layout: Layout) -> None:
    """A fresh run: nothing of an earlier one may pass for this one's."""
    for phase in map(layout.phase, ("sft", "pretrain")):
        for stale in (phase.checkpoints, phase.best):
            shutil.rmtree(stale, ignore_errors=True)
        phase.done.unlink(missing_ok=True)
    layout.memory_choices.unlink(missing_ok=True)


def _phases(domain: Domain, student: Student, splits, stats: DataStats) -> list[Phase]:
    """Continued pre-training on the passages (when enabled), then SFT on the samples in
    the runtime's chat format; ``stats`` counts the SFT rows' tokens."""
    settings = domain.config.train
    system = domain.config.render_system_prompt()
    max_len, packed = settings.max_seq_len, settings.packing
    phases = []
    if settings.pretrain.enabled:
        phases.append(_pretrain_phase(domain, student, stats))
    train_rows = rows_for(student, _conversations(splits["train"], system), max_len, packed, stats)
    if not train_rows:
        raise DomainkitError(
            f"none of the {stats.samples} training samples keeps an answer token within "
            f"train.max_seq_len = {max_len}; raise it"
        )
    val_rows = rows_for(
        student, _conversations(splits["validation"], system), max_len, packed, DataStats()
    )
    rate, epochs = settings.learning_rate, settings.epochs_for(stats.samples)
    if epochs < settings.epochs:
        stats.notes.append(
            f"trained {epochs:.2g} epochs: at most {settings.max_samples} of the "
            f"{stats.samples} samples (train.max_samples)"
        )
    sft = domain.layout.phase("sft")
    phases.append(Phase("sft", train_rows, val_rows, rate, epochs, sft, packed))
    stats.tokens = sum(len(r.input_ids) for r in train_rows)
    stats.label_tokens = sum(sum(1 for x in r.labels if x != -100) for r in train_rows)
    return phases


def _within_memory(student, settings, stats: DataStats, layout: Layout, resume: bool, on_plan):
    """The memory plan for the real data (its share of labelled tokens sizes the loss
    head), checked; checkpointing and the optimizer it chose (or a resumed run kept)
    applied. Returns the settings with the chosen optimizer and pass length."""
    memory = plan_for(settings, stats.label_tokens / max(stats.tokens, 1))
    if memory is not None:
        (on_plan or (lambda plan: log.info("%s", plan.table())))(memory)
    check_memory(memory)
    choices = _memory_choices(layout, memory, settings, resume)
    if choices["checkpointing"]:
        enable_checkpointing(student.model)
    chosen = {"optimizer": choices["optimizer"]}
    if memory is not None and settings.forward_tokens == "auto":
        chosen["forward_tokens"] = memory.pass_tokens
    return settings.model_copy(update=chosen)


def _run_phases(phases, student, settings, accelerator, resume, on_step, name, layout: Layout):
    """Each phase in turn (a resumed run skips the finished ones); the adapter continues
    from where continued pre-training left it into SFT. Returns the histories by phase and
    the last phase's final state."""
    histories: dict[str, list[dict]] = {}
    state = None
    loggers = external_loggers(settings.report_to, layout.train, name)
    for phase in phases:
        done = layout.phase_done(phase.name)
        if resume and done.is_file():
            continue
        run = TrainingRun(
            student.model,
            student.tokenizer,
            settings,
            phase,
            accelerator,
            on_step=on_step,
            loggers=loggers,
        )
        state = run.run(resume=resume)
        histories[phase.name] = state.history
        if accelerator.is_main_process:
            atomic_write_json(done, {"steps": state.step, "best_val_loss": state.best_val})
    return histories, state


def _pretrain_phase(domain: Domain, student: Student, stats: DataStats) -> Phase:
    from domainkit.retrieval import load_index

    settings = domain.config.train
    chunks = load_index(domain.index_dir).chunks
    items = fit_length(
        [tokenize_text(student.tokenizer, c.embed_text) for c in chunks],
        settings.max_seq_len,
        DataStats(),
    )
    stats.notes.append(f"continued pre-training on {len(items)} chunks")
    return Phase(
        "pretrain",
        pack(items, settings.max_seq_len),
        [],
        settings.pretrain.learning_rate,
        settings.pretrain.epochs,
        domain.layout.phase("pretrain"),
        packed=True,
    )


def _preference(student: Student, samples, settings, out: Path, sft_best: Path) -> dict | None:
    """Preference tuning from the best SFT adapter; None when there are no usable pairs."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from domainkit.train.preference import preference_pairs, run_preference

    weights = load_file(str(adapter_weights(sft_best)))
    set_peft_model_state_dict(student.model, weights)
    pairs = preference_pairs(student, samples, settings.preference.max_pairs)
    if not pairs:
        log.warning("preference tuning skipped: no pair where the base model's answer differs")
        return None
    return run_preference(student, pairs, settings, out)


def _publish_adapter(source: Path, target: Path) -> None:
    """A copy of ``source`` takes ``target``'s place in one swap: a kill leaves the old
    adapter or the new one, never none."""

    def write(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)

    replace_dir(target, write)


def summary_dict(report: TrainReport) -> dict:
    row = asdict(report)
    for key in ("out_dir", "adapter", "plot"):
        row[key] = None if row[key] is None else str(row[key])
    return row
