"""``domainkit export``: the adapter alone, a merged safetensors model, and GGUF + an Ollama
Modelfile where llama.cpp's converter is available."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domainkit.errors import DomainkitError

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    adapter: Path
    merged: Path | None = None
    gguf: Path | None = None
    modelfile: Path | None = None
    notes: list[str] = field(default_factory=list)


def merge_adapter(
    base_path: str, adapter_dir: Path, target: Path, dtype: torch.dtype = torch.float32
) -> Path:
    """Merge LoRA weights into a full-precision reload of the base (never into 4-bit weights)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def find_gguf_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: ``$LLAMA_CPP_DIR`` or on ``PATH``."""
    candidates = []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py")
    on_path = shutil.which("convert_hf_to_gguf.py")
    if on_path:
        candidates.append(Path(on_path))
    return next((c for c in candidates if c.is_file()), None)


def to_gguf(merged: Path, target: Path, converter: Path) -> Path:
    command = [
        sys.executable,
        str(converter),
        str(merged),
        "--outfile",
        str(target),
        "--outtype",
        "q8_0",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DomainkitError(f"GGUF conversion failed: {result.stderr.strip()[-500:]}")
    return target


def modelfile(gguf_name: str, system_prompt: str, tokenizer_dir: Path) -> str:
    """An Ollama Modelfile that uses the student's own chat template via its GGUF metadata."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    stops = {t for t in (tokenizer.eos_token, "<|im_end|>") if t and t in tokenizer.get_vocab()}
    lines = [f"FROM ./{gguf_name}", f'SYSTEM """{system_prompt}"""', "PARAMETER temperature 0.2"]
    lines += [f'PARAMETER stop "{s}"' for s in sorted(stops)]
    return "\n".join(lines) + "\n"


def export_model(
    adapter_dir: Path, base_path: str, out_dir: Path, system_prompt: str, formats: set[str]
) -> ExportReport:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise DomainkitError(f"{adapter_dir}: no trained adapter; run `domainkit train` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(adapter=out_dir / "adapter")
    if "adapter" in formats:
        shutil.rmtree(report.adapter, ignore_errors=True)
        shutil.copytree(adapter_dir, report.adapter)
    if formats & {"merged", "gguf"}:
        report.merged = merge_adapter(base_path, adapter_dir, out_dir / "merged")
    if "gguf" in formats:
        converter = find_gguf_converter()
        if converter is None:
            report.notes.append(
                "GGUF skipped: llama.cpp's convert_hf_to_gguf.py was not found (set "
                "LLAMA_CPP_DIR to a llama.cpp checkout); the merged model can be converted later"
            )
        else:
            report.gguf = to_gguf(report.merged, out_dir / "model.gguf", converter)
            report.modelfile = out_dir / "Modelfile"
            report.modelfile.write_text(modelfile("model.gguf", system_prompt, report.merged))
    return report
