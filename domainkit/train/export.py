"""``domainkit export``: the trained student in the forms other tools run.

- ``adapter``: the LoRA adapter, loadable with peft;
- ``merged``: the adapter merged into a full-precision base, a plain transformers model
  (what vLLM or TGI serve);
- ``gguf``: the merged model converted by llama.cpp's converter, with an Ollama Modelfile,
  loaded back through transformers to check it gives the merged model's greedy answers;
- ``dataset``: the synthetic training data as JSONL with a dataset card.

Every folder gets a Hugging Face card (README.md). Each output replaces its previous version
only once it is complete.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domainkit.config.evalset import load_eval_set
from domainkit.config.layout import ExportLayout, adapter_config, card_of
from domainkit.config.loading import EVAL_FILE, Domain
from domainkit.errors import DomainkitError
from domainkit.train import cards, gguf
from domainkit.utils.atomic import atomic_write_jsonl, atomic_write_text, read_jsonl, replace_dir

log = logging.getLogger(__name__)

FORMATS = ("adapter", "merged", "gguf", "dataset")
# Greedy answers compared in the GGUF round trip when the domain has no eval questions.
_FALLBACK_PROMPTS = (
    "What can you help me with?",
    "Summarize what the documents cover.",
    "Who should I contact with a question?",
)


@dataclass
class ExportReport:
    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)
    round_trip: gguf.RoundTrip | None = None
    notes: list[str] = field(default_factory=list)


def merge_adapter(
    base_path: str, adapter_dir: Path, target: Path, dtype: torch.dtype = torch.float32
) -> Path:
    """Merge LoRA weights into a full-precision reload of the base (never into 4-bit weights)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    def write(folder: Path) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(folder)

    return replace_dir(target, write)


def export_model(
    domain: Domain,
    adapter_dir: Path,
    base_path: str,
    out_dir: Path,
    formats: set[str],
    gguf_type: str = "q8_0",
    check: bool = True,
) -> ExportReport:
    """Write the requested formats under ``out_dir``; see the module docstring."""
    unknown = formats - set(FORMATS)
    if unknown:
        raise DomainkitError(f"unknown export format {', '.join(sorted(unknown))}")
    if formats - {"dataset"} and not adapter_config(adapter_dir).is_file():
        raise DomainkitError(f"{adapter_dir}: no trained adapter; run `domainkit train` first")
    if gguf_type not in gguf.GGUF_TYPES:
        raise DomainkitError(
            f"unknown GGUF type {gguf_type!r}; expected {', '.join(gguf.GGUF_TYPES)}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ExportLayout(out_dir)
    report = ExportReport(out_dir)
    summary = cards.read_train_summary(domain.layout)
    evaluation = cards.read_eval_report(domain.layout)

    def card(kind: str, path: Path) -> str:
        return cards.model_card(domain, kind, summary, evaluation, path=str(path))

    if "adapter" in formats:

        def write_adapter(folder: Path) -> None:
            shutil.copytree(adapter_dir, folder, dirs_exist_ok=True)
            card_of(folder).write_text(card("adapter", files.adapter), encoding="utf-8")

        report.paths["adapter"] = replace_dir(files.adapter, write_adapter)
    if formats & {"merged", "gguf"}:
        merged = merge_adapter(base_path, adapter_dir, files.merged)
        atomic_write_text(card_of(merged), card("merged", merged))
        report.paths["merged"] = merged
    if "gguf" in formats:
        _export_gguf(domain, report, gguf_type, check)
    if "dataset" in formats:
        report.paths["dataset"] = export_dataset(domain, files.dataset)
    return report


def _export_gguf(domain: Domain, report: ExportReport, gguf_type: str, check: bool) -> None:
    from transformers import AutoTokenizer

    converter = gguf.find_converter()
    if converter is None:
        report.notes.append(gguf.missing_converter_note())
        return
    merged, files = report.paths["merged"], ExportLayout(report.folder)
    target = gguf.convert(merged, files.gguf(gguf_type), gguf_type, converter)
    report.paths["gguf"] = target
    config = domain.config
    text, notes = gguf.modelfile(
        target.name,
        AutoTokenizer.from_pretrained(str(merged)),
        config.render_system_prompt(),
        config.runtime.temperature,
        config.train.max_seq_len,
    )
    report.notes += notes
    report.paths["modelfile"] = files.modelfile
    atomic_write_text(report.paths["modelfile"], text)
    if check:
        report.round_trip = gguf.round_trip(merged, target, gguf_type, _prompts(domain))


def _prompts(domain: Domain, count: int = 3) -> list[str]:
    questions = [q.question for q in load_eval_set(domain.root / EVAL_FILE).questions]
    return (questions or list(_FALLBACK_PROMPTS))[:count]


def export_dataset(domain: Domain, target: Path) -> Path:
    """The current synthetic dataset as messages JSONL per split, with a dataset card; the
    reviewed questions as samples of the same format (``reviewed.jsonl``) when there are any."""
    from domainkit.synth import dataset
    from domainkit.synth.card import dataset_card
    from domainkit.synth.sample import Sample

    root = domain.layout.synth
    summary = dataset.load_summary(root)
    splits = dataset.load_samples(root)
    if domain.layout.reviewed_samples.is_file():
        reviewed = [Sample.from_row(r) for r in read_jsonl(domain.layout.reviewed_samples)]
        if reviewed:
            splits["reviewed"] = reviewed
            summary = {
                **summary,
                "splits": {**summary.get("splits", {}), "reviewed": len(reviewed)},
                "kept": {**summary.get("kept", {}), "reviewed": len(reviewed)},
            }
    files = {name: f"{name}.jsonl" for name in splits if splits[name]}

    def write(folder: Path) -> None:
        for name, file in files.items():
            atomic_write_jsonl(folder / file, (_provenance_row(s) for s in splits[name]))
        card_of(folder).write_text(dataset_card(domain, summary, files), encoding="utf-8")

    return replace_dir(target, write)


def _provenance_row(sample) -> dict:
    """A chat sample with where it came from: generator, source document, chunk, teacher."""
    keys = ("generator", "source", "chunk_id", "teacher")
    return {"messages": sample.messages, **{k: getattr(sample, k) for k in keys}}
