"""Export: GGUF through llama.cpp's converter and back through transformers, the Ollama
Modelfile checked against the tokenizer, and Hugging Face cards parsed by huggingface_hub."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domainkit.errors import DomainkitError
from domainkit.train import gguf

from .tiny_lm import CHATML, CONVERSATION, embedded_tokenizer, save_tiny_model_with, tiny_tokenizer

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PROMPT = CONVERSATION[:4]  # system, user, assistant, user


def parse_modelfile(text: str) -> dict:
    """Ollama's Modelfile: FROM, TEMPLATE and SYSTEM (triple-quoted), PARAMETER lines."""
    parsed: dict = {"parameters": []}
    block = re.compile(r'^(TEMPLATE|SYSTEM) """(.*?)"""', re.S | re.M)
    for key, value in block.findall(text):
        parsed[key.lower()] = value
    for line in block.sub("", text).splitlines():
        if line.startswith("FROM "):
            parsed["from"] = line[5:]
        if line.startswith("PARAMETER "):
            name, value = line[10:].split(" ", 1)
            parsed["parameters"].append((name, value.strip('"')))
    return parsed


def render_go(template: str, messages: list[dict]) -> str:
    """Ollama's rendering of what the Modelfile uses: ``range .Messages`` (Ollama puts the
    SYSTEM prompt first among the messages)."""
    match = re.fullmatch(r"\{\{ range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template, re.S)
    assert match, template
    turn, opening = match.groups()
    rendered = (
        turn.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
        for m in messages
    )
    return "".join(rendered) + opening


@pytest.mark.parametrize(
    ("template", "bos"), [(CHATML, None), (LLAMA3, "<unk>")], ids=["chatml", "llama3"]
)
def test_modelfile_template_renders_like_the_tokenizer(template, bos):
    tokenizer = tiny_tokenizer(template)
    if bos:  # Llama 3's own special tokens, its end of turn being the end of sequence
        specials = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tokenizer.add_special_tokens({"additional_special_tokens": specials})
        tokenizer.bos_token, tokenizer.eos_token = bos, "<|eot_id|>"
    text, notes = gguf.modelfile("model.q8_0.gguf", tokenizer, 'Say "hi"', 0.2, 1024)
    parsed = parse_modelfile(text)
    assert not notes and parsed["from"] == "./model.q8_0.gguf"
    expected = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    # llama.cpp adds the BOS token itself, so the template leaves it out.
    assert render_go(parsed["template"], PROMPT) == expected.removeprefix(bos or "")
    assert parsed["system"].rstrip() == 'Say "hi"'
    params = dict(parsed["parameters"])
    assert params["temperature"] == "0.2" and params["num_ctx"] == "1024"
    stops = [v for k, v in parsed["parameters"] if k == "stop"]
    assert stops, "an assistant turn must end somewhere"
    for stop in stops:
        assert len(tokenizer.encode(stop, add_special_tokens=False)) == 1, stop
        assert stop in expected.split(PROMPT[2]["content"])[1], "closes the assistant turn"


def test_modelfile_without_a_simple_template_falls_back_to_the_gguf_template():
    odd = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    text, notes = gguf.modelfile("m.gguf", tiny_tokenizer(odd), "Be brief.", 0.0, 512)
    assert "TEMPLATE" not in text and "GGUF" in notes[0]
    assert parse_modelfile(text)["system"] == "Be brief."


def test_modelfile_system_prompt_cannot_close_its_quotes():
    text, _ = gguf.modelfile("m.gguf", tiny_tokenizer(), 'x"""\nFROM ./evil', 0.2, 512)
    assert text.count('"""') == 4 and parse_modelfile(text)["from"] == "./m.gguf"


@pytest.fixture(scope="module")
def convertible(tmp_path_factory):
    """A tiny random Llama with SmolLM2's tokenizer (one llama.cpp's converter recognises)."""
    return save_tiny_model_with(embedded_tokenizer(), tmp_path_factory.mktemp("convertible"))


def test_converter_is_installed_apart_from_site_packages():
    converter = gguf.find_converter()
    assert converter is not None, gguf.missing_converter_note()
    import gguf as gguf_package

    assert Path(gguf_package.__file__).parent.parent != converter.parent, (
        "the converter's bundled gguf module must not replace the gguf package"
    )


@pytest.mark.integration  # llama.cpp's converter runs as a subprocess
def test_f16_gguf_round_trip_gives_the_same_greedy_answers(convertible, tmp_path):
    target = gguf.convert(convertible, tmp_path / "m.f16.gguf", "f16", gguf.find_converter())
    trip = gguf.round_trip(convertible, target, "f16", ["How long is the warranty?", "Hi"])
    assert trip.tokenizer_same and all(a["merged"] for a in trip.answers)
    assert trip.same == 2, trip.answers


def _file_type(path: Path) -> int:
    from gguf import GGUFReader

    field = GGUFReader(path).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


@pytest.mark.integration  # llama.cpp's converter runs as a subprocess
def test_gguf_types_are_written_as_asked(convertible, exported, tmp_path):
    from gguf import LlamaFileType

    bf16 = gguf.convert(convertible, tmp_path / "m.bf16.gguf", "bf16", gguf.find_converter())
    q8 = exported[1].paths["gguf"]
    assert _file_type(bf16) == LlamaFileType.MOSTLY_BF16
    assert _file_type(q8) == LlamaFileType.MOSTLY_Q8_0
    assert q8.stat().st_size < 0.7 * bf16.stat().st_size
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


@pytest.mark.integration  # llama.cpp's converter runs as a subprocess
def test_conversion_failure_is_a_clear_error_and_leaves_nothing(tmp_path):
    from .tiny_lm import save_tiny_chat_model

    model = save_tiny_chat_model(tmp_path / "unknown-tokenizer")
    with pytest.raises(DomainkitError, match="GGUF conversion failed"):
        gguf.convert(model, tmp_path / "m.gguf", "f16", gguf.find_converter())
    assert not (tmp_path / "m.gguf").exists() and not list(tmp_path.glob(".m.gguf*"))
    with pytest.raises(DomainkitError, match="expected q8_0, f16, bf16"):
        gguf.convert(model, tmp_path / "m.gguf", "q4_k", gguf.find_converter())


@pytest.fixture(scope="module")
def exported(convertible, tmp_path_factory):
    """export_model on a domain whose student is the convertible model, with a LoRA adapter
    whose B matrices are random (so merging changes the weights)."""
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from domainkit.config import load_domain
    from domainkit.train.export import export_model

    root = tmp_path_factory.mktemp("domain")
    (root / "docs").mkdir()
    config = {
        "name": "Tiny Shop",
        "recipe": "customer-support",
        "train": {"student_model": str(convertible)},
    }
    (root / "domain.yaml").write_text(yaml.safe_dump(config))
    domain = load_domain(root)
    adapter = domain.build_dir / "train" / "adapter"
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(convertible), lora).save_pretrained(adapter)
    embedded_tokenizer().save_pretrained(adapter)
    report = export_model(
        domain,
        adapter,
        str(convertible),
        domain.build_dir / "export",
        {"adapter", "merged", "gguf"},
    )
    return domain, report


@pytest.mark.integration  # llama.cpp's converter runs as a subprocess
def test_export_writes_gguf_modelfile_and_cards(exported):
    from huggingface_hub import ModelCard

    domain, report = exported
    assert set(report.paths) == {"adapter", "merged", "gguf", "modelfile"} and not report.notes
    assert report.paths["gguf"].name == "model.q8_0.gguf"
    trip = report.round_trip
    assert trip.tokenizer_same and len(trip.answers) == 3
    assert all(a["agree_tokens"] >= 1 for a in trip.answers), trip.answers
    modelfile = parse_modelfile(report.paths["modelfile"].read_text())
    assert modelfile["from"] == "./model.q8_0.gguf"
    assert modelfile["system"] == domain.config.render_system_prompt()
    for kind in ("adapter", "merged"):
        card = ModelCard.load(report.paths[kind] / "README.md")
        assert card.data.datasets == ["tiny-shop-synthetic"]
        assert "customer-support" in card.data.tags and "Not evaluated" in card.text
    assert (report.paths["adapter"] / "adapter_model.safetensors").is_file()


@pytest.mark.integration  # llama.cpp's converter runs as a subprocess
def test_export_again_replaces_outputs_without_leftovers(exported):
    from domainkit.train.export import export_model

    domain, report = exported
    before = (report.paths["adapter"] / "README.md").stat().st_mtime_ns
    export_model(
        domain, domain.build_dir / "train" / "adapter", "unused", report.folder, {"adapter"}
    )
    assert (report.paths["adapter"] / "README.md").stat().st_mtime_ns > before
    assert sorted(p.name for p in report.folder.iterdir() if p.name.startswith(".")) == []
    from domainkit.utils.atomic import umask

    mode = report.paths["adapter"].stat().st_mode & 0o777
    assert mode == 0o777 & ~umask(), "a plain folder's mode, not a temporary folder's 0700"


def test_replace_dir_recovers_a_folder_left_aside_by_a_kill(tmp_path):
    from domainkit.utils.atomic import replace_dir

    aside = tmp_path / ".adapter.4242.old"  # killed between its two renames
    aside.mkdir()
    (aside / "weights").write_text("old")

    def failing(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_dir(tmp_path / "adapter", failing)
    assert (tmp_path / "adapter" / "weights").read_text() == "old", "the old folder is back"
    replace_dir(tmp_path / "adapter", lambda f: (f / "weights").write_text("new"))
    assert (tmp_path / "adapter" / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
