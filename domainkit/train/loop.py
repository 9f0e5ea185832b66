"""A small, explicit training loop: gradient accumulation, warm-up + decay, periodic
validation with early stopping and best-adapter keeping, atomic checkpoints and exact
resume. It runs unchanged under ``accelerate launch`` (DDP; FSDP/DeepSpeed via its config).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from domainkit.config.layout import CheckpointLayout, PhaseLayout
from domainkit.config.schema import TrainConfig
from domainkit.train.data import IGNORE, Row, collate, make_batches
from domainkit.train.memory import pass_tokens, release_freed_memory
from domainkit.train.objective import AdaLoraSchedule, LabelledTokenLoss
from domainkit.utils.atomic import atomic_write_json, fsync_file, replace_dir

log = logging.getLogger(__name__)
CPU_PAD_MULTIPLE = 32
# eval_every: auto evaluates this many times a run (each costs ~3 steps), never closer than
# the gap (a short run: once).
EVALS_PER_RUN, EVAL_MIN_GAP = 2, 10


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches consumed in the current epoch
    epoch: int = 0
    best_val: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


@dataclass
class Phase:
    """One training phase (continued pre-training or SFT) and what it writes."""

    name: str
    train_rows: list[Row]
    val_rows: list[Row]
    learning_rate: float
    epochs: float
    files: PhaseLayout
    packed: bool


def lr_lambda(settings: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if settings.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if settings.lr_scheduler == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


class TrainingRun:
    """Trains ``model`` on one phase's rows.

    Args:
        model: The model (peft-wrapped or full).
        tokenizer: Its tokenizer (for the pad id and saving).
        settings: Training settings.
        phase: Data, learning rate, epochs and output folder.
        accelerator: An ``accelerate.Accelerator`` (one process or many).
        on_step: Called with the run's state after each optimizer step (and its checkpoint,
            when one is due): progress for an embedding program; an exception it raises
            stops the run there, as a kill would.
    """

    def __init__(
        self,
        model,
        tokenizer,
        settings: TrainConfig,
        phase: Phase,
        accelerator,
        on_step: Callable[[TrainState], None] | None = None,
        loggers: Sequence[Callable[[dict], object]] = (),
    ):
        self.settings, self.phase, self.accelerator = settings, phase, accelerator
        self.tokenizer = tokenizer
        self.unwrapped = model
        self.on_step = on_step
        self.loggers = loggers
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, settings, accelerator.device.type, phase.learning_rate)
        self.model, self.optimizer = accelerator.prepare(LabelledTokenLoss(model), optimizer)
        self.adalora = AdaLoraSchedule.of(model)
        self.params = params
        self._cached: tuple[int | None, list[list[Row]]] = (None, [])
        self.micro_per_epoch = self._micro_per_epoch()
        steps_per_epoch = math.ceil(self.micro_per_epoch / settings.grad_accum)
        self.total_steps = settings.max_steps or max(1, math.ceil(phase.epochs * steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(settings, self.total_steps)
        )
        self.state = TrainState()
        self.tokens_seen = 0
        auto = max(EVAL_MIN_GAP, math.ceil(self.total_steps / EVALS_PER_RUN))
        self.eval_every = auto if settings.eval_every == "auto" else settings.eval_every
        self.val_rows, size = phase.val_rows, settings.eval_rows
        if len(self.val_rows) > size:
            keep = sorted(random.Random(settings.seed).sample(range(len(self.val_rows)), size))
            self.val_rows = [self.val_rows[i] for i in keep]

    # -- data ---------------------------------------------------------------------------

    @property
    def _token_budget(self) -> int | None:
        return None if self.phase.packed else self.settings.batch_tokens

    @property
    def _pass_tokens(self) -> int:
        wanted = self.settings.forward_tokens
        if wanted == "auto":
            return pass_tokens(self.settings, self.accelerator.device.type)
        return wanted

    def _passes(self, batch: list[Row]) -> list[list[Row]]:
        """A micro-batch as forward and backward passes of at most ``forward_tokens`` tokens
        (one row at least); the step's gradient is the same however it is split."""
        return make_batches(batch, len(batch), 0, self._pass_tokens)

    def _epoch_batches(self, epoch: int) -> list[list[Row]]:
        """This process's micro-batches of an epoch, the same count on every process."""
        if self._cached[0] == epoch:
            return self._cached[1]
        batches = make_batches(
            self.phase.train_rows,
            self.settings.batch_size,
            self.settings.seed + epoch,
            self._token_budget,
        )
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        usable = len(batches) // world * world or len(batches)
        self._cached = (epoch, batches[rank:usable:world])
        return self._cached[1]

    def _micro_per_epoch(self) -> int:
        return max(1, len(self._epoch_batches(0)))

    def _tensors(self, batch: list[Row]) -> dict:
        pad = self.tokenizer.pad_token_id
        # On a CPU, oneDNN keeps memory for each distinct matrix shape it has run, so passes
        # of every possible length would grow the process a step at a time; lengths rounded
        # up to a multiple of 32 bound the shapes for a little padding (docs/decisions.md,
        # "CPU pass lengths rounded to 32").
        multiple = CPU_PAD_MULTIPLE if self.accelerator.device.type == "cpu" else 1
        return {
            k: v.to(self.accelerator.device)
            for k, v in collate(batch, pad, self.phase.packed, None, multiple).items()
        }

    # -- the loop -----------------------------------------------------------------------

    def run(self, resume: bool = False) -> TrainState:
        if resume:
            self._restore()
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            unit="step",
            desc=f"Training ({self.phase.name})",
            disable=not self.accelerator.is_main_process,
        )
        started, tokens_at_start = time.perf_counter(), self.tokens_seen
        with bar:
            while self.state.step < self.total_steps and not self.state.stopped_early:
                loss = self._optimizer_step()
                rate = (self.tokens_seen - tokens_at_start) / (time.perf_counter() - started)
                self._record(
                    {
                        "step": self.state.step,
                        "loss": loss,
                        "tokens_per_s": rate,
                        "lr": self.scheduler.get_last_lr()[0],
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}", refresh=False)
                self._maybe_evaluate_and_save()
                if self.on_step is not None:
                    self.on_step(self.state)
        if self.state.best_step is None:
            self._save_adapter(self.phase.files.best)
        return self.state

    def _step_batches(self) -> list[list[Row]]:
        """The next optimizer step's micro-batches; a step never reaches into the next
        epoch, so an epoch's last step may have fewer."""
        batches = self._epoch_batches(self.state.epoch)
        if self.state.micro >= len(batches):
            self.state.epoch += 1
            self.state.micro = 0
            batches = self._epoch_batches(self.state.epoch)
        start = self.state.micro
        self.state.micro = min(len(batches), start + self.settings.grad_accum)
        return batches[start : self.state.micro]

    def _optimizer_step(self) -> float:
        self.model.train()
        rows = self._step_batches()
        self.tokens_seen += sum(len(r.input_ids) for batch in rows for r in batch)
        micro = [self._tensors(part) for batch in rows for part in self._passes(batch)]
        total = max(1, sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro))
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            context = self.accelerator.no_sync(self.model) if not last else nullcontext()
            with context:
                loss = self.model(**batch) / total
                if last and self.adalora is not None:  # once a step, as peft adds it
                    loss = loss + self.adalora.penalty()
                self.accelerator.backward(loss)
            loss_sum += float(loss.detach())
            del loss
            if self.accelerator.device.type == "cpu":
                release_freed_memory()
        self.accelerator.clip_grad_norm_(self.params, self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.adalora is not None:
            self.adalora.after_step(self.state.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return loss_sum

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-weighted mean loss on the validation rows."""
        if not self.val_rows:
            return None
        self.model.eval()
        total_loss, total_tokens = 0.0, 0
        for batch in make_batches(self.val_rows, self.settings.batch_size, 0, self._token_budget):
            tensors = self._tensors(batch)
            count = int((tensors["labels"][:, 1:] != IGNORE).sum())
            if count:
                total_loss += float(self.model(**tensors))
                total_tokens += count
        return total_loss / max(1, total_tokens)

    def _maybe_evaluate_and_save(self) -> None:
        state, settings = self.state, self.settings
        at_end = state.step >= self.total_steps
        if state.step % self.eval_every == 0 or at_end:
            val = self.evaluate()
            if val is not None:
                self._record({"step": state.step, "val_loss": val})
                if state.best_val is None or val < state.best_val:
                    state.best_val, state.best_step = val, state.step
                    state.evals_without_improvement = 0
                    self._save_adapter(self.phase.files.best)
                else:
                    state.evals_without_improvement += 1
                    patience = settings.early_stopping_patience
                    if patience and state.evals_without_improvement >= patience:
                        log.info(
                            "early stop at step %d: no improvement for %d evaluations",
                            state.step,
                            patience,
                        )
                        state.stopped_early = True
        if state.step % settings.save_every == 0 or at_end or state.stopped_early:
            self._checkpoint()

    def _record(self, row: dict) -> None:
        self.state.history.append(row)
        for logger in self.loggers:
            logger(row)

    # -- saving and resuming ------------------------------------------------------------

    def _save_adapter(self, folder: Path) -> None:
        if not self.accelerator.is_main_process:
            return

        def write(tmp: Path) -> None:
            self.unwrapped.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

        replace_dir(folder, write)

    def _checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        files = self.phase.files.checkpoint(self.state.step)

        def write(tmp: Path) -> None:
            trainable = {
                n: p.detach().cpu() for n, p in self.unwrapped.named_parameters() if p.requires_grad
            }
            written = CheckpointLayout(tmp)
            torch.save(trainable, written.trainable)
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state(),
                    "tokens_seen": self.tokens_seen,
                },
                written.training,
            )
            for path in (written.trainable, written.training):  # on disk before the marker
                fsync_file(path)
            atomic_write_json(written.state, asdict(self.state))  # last: marks completeness

        replace_dir(files.root, write)
        for old in sorted(self.phase.files.checkpoints.glob("step-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def _restore(self) -> None:
        """Continue from the newest checkpoint that loads; a damaged one falls back to the
        one before (two are kept)."""
        for folder in self.phase.files.completed()[::-1]:
            try:
                trainable = torch.load(folder.trainable, map_location="cpu")
                training = torch.load(folder.training, map_location="cpu", weights_only=False)
                state = TrainState(**json.loads(folder.state.read_text()))
            except Exception as e:  # noqa: BLE001 - any damage means "use the previous one"
                log.warning(
                    "checkpoint %s cannot be read (%s); trying the one before", folder.root, e
                )
                continue
            params = dict(self.unwrapped.named_parameters())
            with torch.no_grad():
                for name, value in trainable.items():
                    params[name].copy_(value.to(params[name].device))
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
            _set_rng_state(training["rng"])
            self.tokens_seen = training["tokens_seen"]
            self.state = state
            log.info("resumed from %s (step %d)", folder.root, self.state.step)
            return
        log.info("no checkpoint to resume from; starting at step 0")


def optimizer_name(settings: TrainConfig, device: str) -> str:
    """The optimizer ``settings.optimizer`` names; ``auto`` picks by device."""
    name = settings.optimizer
    if name == "auto":
        return "paged_adamw_8bit" if device == "cuda" else "adamw"
    if name == "paged_adamw_8bit" and device != "cuda":
        log.warning("paged optimizers page to CPU memory from a GPU; on %s: adamw_8bit", device)
        return "adamw_8bit"
    return name


def make_optimizer(params: list, settings: TrainConfig, device: str, lr: float):
    """AdamW from torch, or bitsandbytes' 8-bit AdamW (its state in 8 bits)."""
    name = optimizer_name(settings, device)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)
    import bitsandbytes as bnb

    kind = {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}
    return kind[name](params, lr=lr, weight_decay=settings.weight_decay)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
