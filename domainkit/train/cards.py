"""Model cards: the README.md a hub shows for an adapter, a merged model or a bundle.

Front matter follows the Hugging Face model card spec (written by ``huggingface_hub``'s
``ModelCardData``); the body says what the model was made from, how it was trained, what
the evaluation measured and where it falls short.
"""

from __future__ import annotations

import json
import re

from domainkit.config.layout import Layout
from domainkit.config.loading import Domain
from domainkit.models import model_origin

# What each kind of folder holds and how to load it.
_KINDS = {
    "adapter": (
        "peft",
        "a LoRA adapter (peft) for {base}",
        "from peft import AutoPeftModelForCausalLM\n"
        'model = AutoPeftModelForCausalLM.from_pretrained("{path}")',
    ),
    "merged": (
        "transformers",
        "{base} with the adapter merged into its weights",
        "from transformers import AutoModelForCausalLM\n"
        'model = AutoModelForCausalLM.from_pretrained("{path}")',
    ),
    "bundle": (
        "peft",
        "a domainkit bundle: the adapter for {base}, the search index and the calibrated "
        "answer/refuse gate",
        "domainkit serve {domain}  # an OpenAI-compatible server with a chat page",
    ),
}


def model_card(
    domain: Domain,
    kind: str,
    train_summary: dict | None = None,
    eval_report: str | None = None,
    path: str = ".",
) -> str:
    """The README.md for an exported ``adapter``, ``merged`` model or ``bundle``."""
    from huggingface_hub import ModelCard, ModelCardData

    config = domain.config
    hub_id, license_id = model_origin(config.train.student_model)
    library, what, usage = _KINDS[kind]
    base = hub_id or config.train.student_model
    data = ModelCardData(
        base_model=hub_id,
        library_name=library,
        license=license_id or "other",
        pipeline_tag="text-generation",
        tags=sorted(
            {"domainkit", config.train.method, "retrieval-augmented-generation"} | _recipe(config)
        ),
        datasets=[f"{_slug(config.name)}-synthetic"],
    )
    sections = [
        f"# {config.name}: a domainkit assistant\n\n{config.description or ''}".rstrip(),
        f"This folder holds {what.format(base=base)}, trained by domainkit on the "
        f"documents of the `{config.name}` domain"
        + (f" (recipe `{config.recipe}`)" if config.recipe else "")
        + ".",
        "## Use\n\n```python\n"
        + usage.format(path=path, domain=domain.root)
        + "\n```\n\nThe student was trained to answer from an evidence block (sentences "
        "retrieved from the documents) by quoting the line it relies on, or to refuse with "
        f'"{config.refusal}". Asked without evidence it answers from memory, which the '
        "evaluation below measures as much weaker: serve it through `domainkit serve` (or "
        "point domainkit's `openai` backend at vLLM or llama.cpp serving the merged model) "
        "to keep retrieval, citations and the refusal gate.",
        _training_section(config, train_summary),
        _eval_section(eval_report),
        _caveats(config, license_id),
    ]
    return str(
        ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n")
    )


def _recipe(config) -> set[str]:
    return {config.recipe} if config.recipe and "/" not in config.recipe else set()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "domain"


def _training_section(config, summary: dict | None) -> str:
    train = config.train
    rows = [
        ("student", train.student_model),
        (
            "method",
            f"{train.method} base, peft {train.peft}"
            if train.peft
            else f"{train.method}, r={train.lora_r}, alpha={train.lora_alpha}",
        ),
        ("learning rate", f"{train.learning_rate:g} ({train.lr_scheduler})"),
        (
            "batch",
            f"{train.batch_size} x {train.grad_accum} accumulation, {train.max_seq_len} tokens",
        ),
    ]
    if summary:
        data = summary.get("data", {})
        rows += [
            ("samples", data.get("samples")),
            ("tokens", f"{data.get('tokens')} ({data.get('label_tokens')} trained on)"),
            ("steps", summary.get("steps")),
            ("best validation loss", _round(summary.get("best_val_loss"))),
            ("device", summary.get("device")),
        ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    return "## Training\n\n| setting | value |\n|---|---|\n" + table


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def _eval_section(report: str | None) -> str:
    """The eval report, its title turned into the lead sentence and its headings one level down."""
    if not report:
        return "## Evaluation\n\nNot evaluated: run `domainkit eval` on the domain."
    lines = [line for line in report.splitlines() if not line.startswith("![")]
    if lines and lines[0].startswith("# "):
        lines[0] = lines[0][2:].replace("Evaluation: ", "Measured by `domainkit eval`: ", 1)
    body = "\n".join(re.sub(r"^(#+) ", r"#\1 ", line) for line in lines).strip()
    return "## Evaluation\n\n" + body


def _caveats(config, license_id: str | None) -> str:
    points = [
        "A small student: it can copy a wrong line or refuse a question the documents "
        "answer; the evaluation's false-refusal and accuracy columns say how often.",
        "The training data is synthetic (generated from the documents and checked against "
        "them); questions real users ask are phrased differently.",
    ]
    if config.disclaimer:
        points.append(f"Answers carry this disclaimer in domainkit: {config.disclaimer}")
    if license_id is None:
        points.append(
            "The base model's license could not be read offline: check it before sharing."
        )
    return "## Limitations\n\n" + "\n".join(f"- {p}" for p in points)


def read_train_summary(layout: Layout) -> dict | None:
    path = layout.train_summary
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_eval_report(layout: Layout) -> str | None:
    path = layout.eval_report
    return path.read_text(encoding="utf-8") if path.is_file() else None
