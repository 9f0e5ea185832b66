"""Optional preference tuning after SFT with trl (DPO, or ORPO where trl provides it).

Chosen: the dataset's target (a quoted line, or the refusal). Rejected: what the base model
(the student with its adapter switched off) answers to the same prompt, so the tuned model
learns to prefer the domain's quote-or-refuse reply over the generic one.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from domainkit.backends import GenRequest
from domainkit.backends.local import LocalBackend
from domainkit.config.layout import PhaseLayout
from domainkit.config.schema import TrainConfig
from domainkit.models import LoadedLM
from domainkit.synth.sample import Sample
from domainkit.train.model import Student

log = logging.getLogger(__name__)

REJECTED_BATCH = 16  # prompts answered together for the rejected replies


def preference_pairs(student: Student, samples: list[Sample], max_pairs: int) -> list[dict]:
    """(prompt, chosen, rejected) in trl's conversational format."""
    usable = [s for s in samples if s.generator in ("raft", "near_miss", "user")][:max_pairs]
    prompts = [s.messages[:-1] for s in usable]
    backend = LocalBackend(LoadedLM(student.model, student.tokenizer, student.device))
    student.model.eval()
    rejected = []
    with student.model.disable_adapter():
        for start in range(0, len(prompts), REJECTED_BATCH):
            requests = [
                GenRequest(p, max_new_tokens=128) for p in prompts[start : start + REJECTED_BATCH]
            ]
            for result in backend.generate(requests):
                if isinstance(result, Exception):
                    raise result
                rejected.append(result.text)
    pairs = []
    for sample, prompt, answer in zip(usable, prompts, rejected, strict=True):
        chosen = sample.messages[-1]["content"]
        if answer.strip() and answer.strip() != chosen.strip():
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": answer}],
                }
            )
    return pairs


def _trainer_classes(method: str):
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    import importlib

    orpo = importlib.import_module("trl")
    if not hasattr(orpo, "ORPOTrainer"):  # trl 1.0 moved it to its experimental package
        orpo = importlib.import_module("trl.experimental.orpo")
    return orpo.ORPOConfig, orpo.ORPOTrainer


def run_preference(
    student: Student, pairs: list[dict], settings: TrainConfig, out_dir: Path
) -> dict:
    """Tune the adapter on the pairs; saves it as the phase's best (``PhaseLayout``)."""
    from datasets import Dataset

    prefs = settings.preference
    config_class, trainer_class = _trainer_classes(prefs.method)
    args = config_class(
        output_dir=tempfile.mkdtemp(prefix="domainkit-pref-"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=prefs.epochs,
        learning_rate=prefs.learning_rate,
        beta=prefs.beta,
        max_length=settings.max_seq_len,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=student.device == "cpu",
        bf16=student.dtype == torch.bfloat16,  # the SFT stage's precision
        seed=settings.seed,
    )
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # trl's trainer makes its own accelerator
    student.model.train()
    trainer = trainer_class(
        model=student.model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=student.tokenizer,
    )
    result = trainer.train()
    best = PhaseLayout(out_dir).best
    student.model.save_pretrained(best)
    student.tokenizer.save_pretrained(best)
    log.info("%s on %d pairs: loss %.4f", prefs.method, len(pairs), result.training_loss)
    return {
        "method": prefs.method,
        "pairs": len(pairs),
        "loss": result.training_loss,
        "steps": result.global_step,
        "history": trainer.state.log_history,
    }
